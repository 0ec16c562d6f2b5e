"""pandera schemas of the collected datasets (POSITION_COLUMNS, BALANCE_COLUMNS, PRICE_COLUMNS).

The schemas are the gate between the outside world and risk: a source whose rows break them is
reported missing (fail closed) rather than passed on half-right. Structural rules (types,
ranges, keys, uniqueness, internal consistency) are fixed; time rules are functions of ``now``
and the freshness budget, never of a clock read at import, so the same data validates the same
way in a test, a Dagster run and a replay.

Dtypes: numbers float64, ids ``str`` (object; collected positions carry theirs as
Categoricals of str, see ``POSITION_KEYS``), timestamps ``datetime64[ns, UTC]``. Build frames
with :func:`positions_frame` / :func:`balances_frame` / :func:`prices_frame` so the dtypes are
right even when a source has no rows.

Freshness: prices are judged on ``timestamp`` (the exchange's event time: a quote is only as
fresh as the trade or book update behind it). Positions and balances are judged on
``received_at``: venues stamp them with the time the position or wallet last *changed*, which
for a position held for a week is a week ago while its marks and P&L are current.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from risk_monitor.domain.frame_rules import (
    UTC_TIMESTAMP,
    ColumnRule,
    FrameCheck,
    FrameRules,
    categorize,
    key_codes,
    passes,
    plain_strings,
    row_chunks,
)
from risk_monitor.domain.model import BALANCE_COLUMNS, POSITION_COLUMNS, PRICE_COLUMNS
from risk_monitor.domain.valuation import NAT, asi8, frame_of, ns_of, utc_times
from risk_monitor.platform.errors import DataValidationError, StaleDataError

if TYPE_CHECKING:  # pandera costs ~1 s to import: loaded only to build a schema or a report
    import pandera.pandas as pa
    from pandera.errors import SchemaError, SchemaErrors

#: relative tolerance of the arithmetic identities (total = free + used, quantity = contracts x size)
REL_TOLERANCE = 1e-9
ABS_TOLERANCE = 1e-12

#: names of the time-based checks; a failure of these alone is a StaleDataError
TIME_CHECKS = frozenset({"timestamp_not_in_future", "received_at_not_in_future",
                         "timestamp_is_fresh", "received_at_is_fresh"})

#: the id columns collection hands on as Categoricals (:func:`frame_rules.categorize`): the
#: positions are the dataset that grows with the desk (1M rows: 8 bytes a row and column as
#: object pointers, 1-2 as codes); consumers read a key column as str values either way
POSITION_KEYS: tuple[str, ...] = ("venue", "account", "instrument", "base", "quote", "settle",
                                  "position_side", "margin_mode")


def _finite(series: pd.Series) -> pd.Series:
    return pd.Series(np.isfinite(series.to_numpy(dtype="float64")), index=series.index)


def _close(a: Callable[[slice], np.ndarray], b: Callable[[slice], np.ndarray],
           index: pd.Index) -> pd.Series:
    """``|a - b| <= tolerance`` row by row; ``a`` and ``b`` give a slice of rows each, so a
    1M-row frame costs temporaries of one chunk, not five 8 MB columns."""
    out = np.empty(len(index), dtype=bool)
    for rows in row_chunks(len(index)):
        x, y = a(rows), b(rows)
        scale = np.maximum(np.maximum(np.abs(x), np.abs(y)), 1.0)
        out[rows] = np.abs(x - y) <= REL_TOLERANCE * scale + ABS_TOLERANCE
    return pd.Series(out, index=index)


def _f(df: pd.DataFrame, column: str) -> np.ndarray:
    return np.asarray(df[column].to_numpy(), dtype=np.float64)


_ID = ColumnRule("str", pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")  # venue and account ids
_CODE = ColumnRule("str", pattern=r"^[A-Z0-9][A-Z0-9._-]*$")  # currency codes
_SYMBOL = ColumnRule("str", pattern=r"^\S+/\S+$")  # ccxt unified symbols
_TIME = ColumnRule("time")


def _number(*, ge: float | None = None, gt: float | None = None,
            nullable: bool = False) -> ColumnRule:
    return ColumnRule("number", nullable=nullable, ge=ge, gt=gt)


def _time_checks(now: datetime | None, max_age_s: float | None, max_future_skew_s: float,
                 fresh_column: str) -> list[tuple[str, FrameCheck]]:
    if now is None:
        return []
    current = pd.Timestamp(now)
    if current.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    horizon = current + timedelta(seconds=max_future_skew_s)
    checks: list[tuple[str, FrameCheck]] = [
        ("timestamp_not_in_future", lambda df: df["timestamp"] <= horizon),
        ("received_at_not_in_future", lambda df: df["received_at"] <= horizon),
    ]
    if max_age_s is not None:
        oldest = current - timedelta(seconds=max_age_s)
        checks.append((f"{fresh_column}_is_fresh", lambda df: df[fresh_column] >= oldest))
    return checks


@cache
def _pandera_column(name: str, rule: ColumnRule) -> pa.Column:
    """The pandera column of a rule (the same rule :func:`frame_rules.passes` checks); built
    once per (name, rule): constructing pandera objects costs more than checking 10k rows."""
    import pandera.pandas as pa
    if rule.kind == "str":
        checks = []
        if rule.pattern is not None:
            checks.append(pa.Check.str_matches(rule.pattern))
        if rule.allowed is not None:
            checks.append(pa.Check.isin(list(rule.allowed)))
        if rule.length is not None:
            checks.append(pa.Check.str_length(*rule.length))
        return pa.Column(str, checks, nullable=rule.nullable)
    if rule.kind == "time":
        return pa.Column(UTC_TIMESTAMP, nullable=rule.nullable)
    numeric = [pa.Check(_finite, name="is_finite")]
    if rule.ge is not None:
        numeric.append(pa.Check.ge(rule.ge))
    if rule.gt is not None:
        numeric.append(pa.Check.gt(rule.gt))
    return pa.Column("float64", numeric, nullable=rule.nullable, coerce=True)


def schema_of(rules: FrameRules) -> pa.DataFrameSchema:
    """The pandera schema of a rule set (built only when pandera must run: a failure to
    report)."""
    import pandera.pandas as pa

    return pa.DataFrameSchema(
        {name: _pandera_column(name, rule) for name, rule in rules.columns.items()},
        checks=[pa.Check(check, name=name) for name, check in rules.checks],
        unique=list(rules.unique) or None,
        strict=True,
        name=rules.name,
    )


# --- positions -----------------------------------------------------------------------------------
def _side_matches_sign(df: pd.DataFrame) -> pd.Series:
    quantity = _f(df, "quantity")
    if df["position_side"].dtype == object or isinstance(df["position_side"].dtype,
                                                           pd.CategoricalDtype):
        # on the codes validation already computed (or the Categorical's own)
        codes, uniques = key_codes(df, "position_side")
        is_long = np.append(uniques == "long", False)[codes]
        is_short = np.append(uniques == "short", False)[codes]
    else:
        side = df["position_side"].to_numpy()
        is_long, is_short = side == "long", side == "short"
    ok = (~is_long | (quantity >= 0)) & (~is_short | (quantity <= 0))
    return pd.Series(ok, index=df.index)


def _quantity_matches_contracts(df: pd.DataFrame) -> pd.Series:
    quantity, contracts, size = _f(df, "quantity"), _f(df, "contracts"), _f(df, "contract_size")
    return _close(lambda rows: np.abs(quantity[rows]),
                  lambda rows: contracts[rows] * size[rows], df.index)


def _notional_matches_mark(df: pd.DataFrame) -> pd.Series:
    notional, quantity, mark = _f(df, "notional"), _f(df, "quantity"), _f(df, "mark_price")
    return _close(lambda rows: notional[rows],
                  lambda rows: np.abs(quantity[rows]) * mark[rows], df.index)


def position_rules(*, now: datetime | None = None, max_age_s: float | None = None,
                   max_future_skew_s: float = 5.0) -> FrameRules:
    """Rules of POSITION_COLUMNS; with ``now`` they also reject future and stale rows."""
    return FrameRules(
        name="positions",
        columns={
            "venue": _ID,
            "account": _ID,
            "instrument": _SYMBOL,
            "base": _CODE,
            "quote": _CODE,
            "settle": _CODE,
            "position_side": ColumnRule("str", allowed=("long", "short")),
            "contracts": _number(ge=0),
            "contract_size": _number(gt=0),
            "quantity": _number(),
            "entry_price": _number(gt=0),
            "mark_price": _number(gt=0),
            "notional": _number(ge=0),
            "unrealized_pnl": _number(),
            "realized_pnl": _number(nullable=True),
            "leverage": _number(gt=0, nullable=True),
            "liquidation_price": _number(ge=0, nullable=True),
            "margin_mode": ColumnRule("str", allowed=("cross", "isolated", "")),
            "timestamp": _TIME,
            "received_at": _TIME,
        },
        checks=(
            ("side_matches_quantity_sign", _side_matches_sign),
            ("quantity_matches_contracts", _quantity_matches_contracts),
            ("notional_matches_mark", _notional_matches_mark),
            *_time_checks(now, max_age_s, max_future_skew_s, "received_at"),
        ),
        unique=("venue", "account", "instrument", "position_side"),
    )


# --- balances ------------------------------------------------------------------------------------
def _total_is_free_plus_used(df: pd.DataFrame) -> pd.Series:
    total, free, used = _f(df, "total"), _f(df, "free"), _f(df, "used")
    return _close(lambda rows: total[rows], lambda rows: free[rows] + used[rows], df.index)


def balance_rules(*, now: datetime | None = None, max_age_s: float | None = None,
                  max_future_skew_s: float = 5.0) -> FrameRules:
    """Rules of BALANCE_COLUMNS; with ``now`` they also reject future and stale rows."""
    return FrameRules(
        name="balances",
        columns={
            "source_type": ColumnRule("str", allowed=("exchange", "custodian")),
            "venue": _ID,
            "account": ColumnRule("str", length=(1, 128)),
            "asset": _CODE,
            "free": _number(ge=0),
            "used": _number(ge=0),
            "total": _number(ge=0),
            "timestamp": _TIME,
            "received_at": _TIME,
        },
        checks=(
            ("total_is_free_plus_used", _total_is_free_plus_used),
            *_time_checks(now, max_age_s, max_future_skew_s, "received_at"),
        ),
        unique=("source_type", "venue", "account", "asset"),
    )


# --- prices --------------------------------------------------------------------------------------
def _bid_not_above_ask(df: pd.DataFrame) -> pd.Series:
    both = df["bid"].notna() & df["ask"].notna()
    return ~both | (df["bid"] <= df["ask"])


def price_rules(*, now: datetime | None = None, max_age_s: float | None = None,
                max_future_skew_s: float = 5.0) -> FrameRules:
    """Rules of PRICE_COLUMNS; with ``now`` they also reject future and stale quotes."""
    return FrameRules(
        name="prices",
        columns={
            "venue": _ID,
            "instrument": _SYMBOL,
            "base": _CODE,
            "quote": _CODE,
            "bid": _number(gt=0, nullable=True),
            "ask": _number(gt=0, nullable=True),
            "last": _number(gt=0),
            "mark": _number(gt=0),
            "timestamp": _TIME,
            "received_at": _TIME,
        },
        checks=(
            ("bid_not_above_ask", _bid_not_above_ask),
            *_time_checks(now, max_age_s, max_future_skew_s, "timestamp"),
        ),
        unique=("venue", "instrument"),
    )


# --- typed frames --------------------------------------------------------------------------------
#: each dataset column's kind, as its rules give it ("str", "number", "time")
_KINDS = {name: rule.kind for rules in (position_rules(), balance_rules(), price_rules())
          for name, rule in rules.columns.items()}


def typed_frame(records: Iterable[Mapping[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
    """A frame with exactly ``columns`` and the dataset dtypes, even with no rows.

    Columns are built as arrays and the frame adopts them (:func:`valuation.frame_of`): the
    hot path builds its quote frame from its book on every full evaluation, and a Series per
    column plus ``pd.to_datetime`` over plain datetimes cost ~3 ms of the interpreter lock
    for 200 quotes. Values of any other type take pandas' conversions, as before."""
    rows = list(records)
    data: dict[str, Any] = {}
    for column in columns:
        values = [row.get(column) for row in rows]
        kind = _KINDS[column]
        if kind == "time":
            ns = _datetimes_ns(values)
            data[column] = (utc_times(np.array(ns, dtype=np.int64)) if ns is not None else
                            pd.Series(pd.to_datetime(pd.Series(values, dtype="object"),
                                                     utc=True), dtype=UTC_TIMESTAMP))
        elif kind == "str":
            texts = np.empty(len(values), dtype=object)
            texts[:] = values
            data[column] = texts
        else:
            numbers = [np.nan if v is None else v for v in values]
            data[column] = (np.array(numbers, dtype=np.float64)
                            if all(type(v) is float for v in numbers)
                            else pd.Series(numbers, dtype="float64"))
    return frame_of(data, columns)


def _datetimes_ns(values: list[Any]) -> list[int] | None:
    """Epoch ns of timezone-aware ``datetime`` values (None → NaT), by ``valuation.ns_of``'s
    integer arithmetic; None when any value is something else (pandas parses those)."""
    out: list[int] = []
    for value in values:
        if value is None:
            out.append(NAT)
        elif type(value) is datetime and value.tzinfo is not None:
            out.append(ns_of(value))
        else:
            return None
    return out


def positions_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    return typed_frame(records, POSITION_COLUMNS)


def balances_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    return typed_frame(records, BALANCE_COLUMNS)


def prices_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    return typed_frame(records, PRICE_COLUMNS)


def concat_frames(frames: Iterable[pd.DataFrame], columns: tuple[str, ...]) -> pd.DataFrame:
    """Concatenate per-source frames keeping the dataset dtypes (empty inputs are skipped).

    Column by column with numpy when every part has every column in one plain dtype (float,
    object strings) or as UTC times: ``pd.concat`` spends ~2.5 ms on two small frames with
    tz-aware columns (its join-unit checks box timestamps), paid on every evaluation. Any other
    shape (a missing column, mixed dtypes, categoricals) goes through ``pd.concat``."""
    parts = [f for f in frames if len(f)]
    if not parts:
        return typed_frame([], columns)
    joined = _concat_columns(parts, columns)
    if joined is not None:
        return joined
    return pd.concat(parts, ignore_index=True)[list(columns)]


def _concat_columns(parts: list[pd.DataFrame], columns: tuple[str, ...]) -> pd.DataFrame | None:
    data: dict[str, Any] = {}
    for column in columns:
        if any(column not in part.columns for part in parts):
            return None
        series = [part[column] for part in parts]
        dtype = series[0].dtype
        if any(s.dtype != dtype for s in series):
            return None
        if dtype == UTC_TIMESTAMP:
            data[column] = utc_times(np.concatenate([asi8(s) for s in series]))
        elif isinstance(dtype, np.dtype) and dtype.kind in "fObiu":
            data[column] = np.concatenate([s.to_numpy() for s in series])
        else:
            return None
    return frame_of(data, columns)


# --- validation ----------------------------------------------------------------------------------
def failure_summary(exc: SchemaErrors | SchemaError, limit: int = 5) -> list[dict[str, Any]]:
    """One entry per failed check: its name, the columns involved, how many rows, one example."""
    cases = exc.failure_cases
    if not isinstance(cases, pd.DataFrame) or len(cases) == 0:
        return [{"check": str(exc), "columns": [], "rows": 0, "example": None}]
    out: list[dict[str, Any]] = []
    for check, group in cases.groupby("check", sort=False):
        column_level = group["schema_context"] == "Column"
        columns = sorted({str(c) for c in group.loc[column_level, "column"].dropna()})
        rows = group["index"].dropna().nunique()
        sample = group.loc[column_level, "failure_case"] if column_level.any() else \
            group["index"]
        example = sample.iloc[0] if len(sample) else None
        out.append({"check": str(check), "columns": columns, "rows": int(rows),
                    "example": None if example is None or pd.isna(example) else str(example)})
        if len(out) >= limit:
            break
    return out


def failed_checks(exc: SchemaErrors | SchemaError) -> set[str]:
    cases = exc.failure_cases
    if not isinstance(cases, pd.DataFrame) or len(cases) == 0:
        return {"unknown"}
    return {str(c) for c in cases["check"].unique()}


def _describe(case: Mapping[str, Any]) -> str:
    where = ",".join(case["columns"]) or "rows"
    example = f" e.g. {case['example']}" if case["example"] is not None else ""
    return f"{case['check']} on {where} ({case['rows']} row(s){example})"


def validate_frame(frame: pd.DataFrame, rules: FrameRules, *, source: str) -> pd.DataFrame:
    """Validate lazily (every failure at once); raise StaleDataError when only time rules failed,
    DataValidationError otherwise, with the first failure cases in the details. A valid frame
    takes the vectorised path (:func:`frame_rules.passes`) and comes back as is."""
    if passes(frame, rules):
        return frame
    schema = schema_of(rules)
    from pandera.errors import SchemaError, SchemaErrors

    try:  # pandera checks ids as ``str`` columns: Categorical keys go in as their strings
        validated = schema.validate(plain_strings(frame), lazy=True)
    except (SchemaErrors, SchemaError) as exc:
        checks = failed_checks(exc)
        summary = failure_summary(exc)
        described = "; ".join(_describe(c) for c in summary)
        error_cls = StaleDataError if checks <= TIME_CHECKS else DataValidationError
        raise error_cls(
            f"{schema.name} from {source} failed validation: {described}",
            source=source,
            details={"failed_checks": sorted(checks), "failures": summary},
        ) from None
    keys = [str(name) for name, dtype in frame.dtypes.items()
            if isinstance(dtype, pd.CategoricalDtype)]
    return categorize(validated, keys) if keys else validated
