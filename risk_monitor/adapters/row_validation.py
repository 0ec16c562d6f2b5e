"""Split a source's frame into its valid rows and its bad ones, so one bad value costs one row.

A NaN mark, an empty asset code, a negative balance, a future timestamp or an unknown symbol is
a fact about one instrument or one asset, not about the whole account: the row is dropped, and
the caller marks that instrument / asset missing (fail closed) while the other rows go on to
risk. A frame broken as a whole (a missing column, no row index) or with every row bad fails
as before, with the typed error of :func:`risk_monitor.domain.schemas.validate_frame`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from risk_monitor.domain.frame_rules import FrameRules, passes
from risk_monitor.domain.schemas import schema_of, validate_frame
from risk_monitor.platform.errors import DataValidationError
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.metrics import record_error

log = get_logger(__name__)

MAX_VALUE_CHARS = 64


@dataclass(frozen=True)
class RejectedRow:
    """One row that broke the schema: where it belongs, which field, which value, which rule
    (the first failing field in column order; ``also`` lists the others, e.g. derived ones)."""

    venue: str
    account: str
    instrument: str | None
    asset: str | None
    field: str
    value: str
    check: str
    also: str = ""

    @property
    def message(self) -> str:
        what = self.instrument or self.asset or "a row"
        more = f", {self.also}" if self.also else ""
        return (f"{self.venue}:{self.account} {what}: {self.field}={self.value} "
                f"({self.check}){more}; this {'instrument' if self.instrument else 'asset'} "
                "is missing")

    def details(self) -> dict[str, Any]:
        return asdict(self)


def log_rejected(row: RejectedRow, *, kind: str | None = None) -> DataValidationError:
    """Log and count one rejected row; returns its error (for the source status)."""
    error = DataValidationError(row.message, source=row.venue, details=row.details())
    record_error(error)
    log.error("row failed validation; its instrument / asset is missing", kind=kind,
              venue=row.venue, account=row.account, instrument=row.instrument, asset=row.asset,
              field=row.field, value=row.value, check=row.check, error_code=error.code)
    return error


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan" if value is not None else "None"
    return str(value)[:MAX_VALUE_CHARS]


def _cell(frame: pd.DataFrame, index: Any, column: str) -> str | None:
    if column not in frame.columns:
        return None
    value = frame.at[index, column]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)[:MAX_VALUE_CHARS] or None


def _field_of(check: str, columns: list[str]) -> str:
    """The column a frame-wide check is about (``timestamp_not_in_future`` -> ``timestamp``)."""
    for column in sorted(columns, key=len, reverse=True):
        if check.startswith(column):
            return column
    return check


def _rejection(frame: pd.DataFrame, index: Any, cases: pd.DataFrame, venue: str,
               account: str) -> RejectedRow:
    columns = [str(c) for c in frame.columns]
    failures: list[tuple[str, str, Any]] = []  # (field, check, value)
    for case in cases.to_dict("records"):
        column = case.get("column")
        if case.get("schema_context") == "Column" and isinstance(column, str):
            failures.append((column, str(case["check"]), case["failure_case"]))
        else:  # a frame-wide rule (time, identities, uniqueness): name the column it is about
            check = str(case["check"])
            field = _field_of(check, columns)
            failures.append((field, check, frame.at[index, field] if field in columns
                             else None))
    order = {name: i for i, name in enumerate(columns)}
    failures.sort(key=lambda f: order.get(f[0], len(order)))
    unique = list(dict.fromkeys((f, c, _text(v)) for f, c, v in failures))
    (field, check, value), rest = unique[0], unique[1:]
    instrument = _cell(frame, index, "instrument")
    asset = _cell(frame, index, "base") if instrument is not None else _cell(frame, index,
                                                                              "asset")
    account = _cell(frame, index, "account") or account  # a custodian source spans vaults
    return RejectedRow(venue=venue, account=account, instrument=instrument, asset=asset,
                       field=field, value=value, check=check,
                       also=", ".join(f"{f}={v} ({c})" for f, c, v in rest[:5]))


def split_valid_rows(frame: pd.DataFrame, rules: FrameRules, *, source: str,
                     account: str) -> tuple[pd.DataFrame, list[RejectedRow]]:
    """The validated good rows and one :class:`RejectedRow` per bad row (see module doc)."""
    if passes(frame, rules):  # the common case: every row good, no pandera pass
        return frame, []
    from pandera.errors import SchemaError, SchemaErrors  # ~1 s: only when a row is bad

    try:
        return schema_of(rules).validate(frame, lazy=True), []
    except (SchemaErrors, SchemaError) as exc:
        cases = exc.failure_cases
    if not isinstance(cases, pd.DataFrame) or not len(cases) or "index" not in cases \
            or cases["index"].isna().any():
        return validate_frame(frame, rules, source=source), []  # raises: broken as a whole
    bad = [i for i in dict.fromkeys(cases["index"].tolist()) if i in frame.index]
    if not bad or len(bad) >= len(frame):
        return validate_frame(frame, rules, source=source), []  # raises: nothing to keep
    rejected = [_rejection(frame, i, cases[cases["index"] == i], source, account) for i in bad]
    good = validate_frame(frame.drop(index=bad), rules, source=source)
    return good, rejected
