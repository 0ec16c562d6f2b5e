"""Gather one dataset from many sources, each isolated: one failing never hides the others.

Every source (exchange account, custodian) is fetched, its frame validated against the dataset
schema at ``now`` (so a NaN, a negative size or a stale row fails *that* source), and the
outcome recorded as a :class:`SourceStatus`. A failed source contributes no rows and an
``ok=False`` status with the error code: downstream it reads as UNKNOWN, never as zero. Failures
are logged with their code and counted in ``risk_monitor_errors_total``; the age of each
source's data goes to ``risk_monitor_source_data_age_seconds``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

import numpy as np
import pandas as pd
from prometheus_client import Gauge

from risk_monitor.adapters.errors import map_exception
from risk_monitor.adapters.row_validation import RejectedRow, log_rejected, split_valid_rows
from risk_monitor.domain.frame_rules import FrameRules, categorize, key_codes
from risk_monitor.domain.model import (
    BALANCE_COLUMNS,
    POSITION_COLUMNS,
    Collected,
    SourceKind,
    SourceStatus,
)
from risk_monitor.domain.schemas import (
    POSITION_KEYS,
    balance_rules,
    concat_frames,
    position_rules,
    validate_frame,
)
from risk_monitor.platform.clock import Clock, utc_now
from risk_monitor.platform.errors import RiskMonitorError
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.metrics import record_error
from risk_monitor.platform.settings import MarketDataSettings
from risk_monitor.ports import Custodian, ExchangeAccount

log = get_logger(__name__)

DATA_AGE = Gauge(
    "risk_monitor_source_data_age_seconds",
    "Age of the oldest row a source delivered at its last successful collection.",
    ["kind", "source"],
)
SOURCE_UP = Gauge(
    "risk_monitor_source_up",
    "1 when the last collection from a source succeeded and validated, else 0.",
    ["kind", "source"],
)

@dataclass(frozen=True)
class Source:
    """One thing to fetch: who it is and how to get its frame."""

    kind: SourceKind
    venue: str
    account: str
    fetch: Callable[[], pd.DataFrame]
    endpoint_override: str | None = None


def failed_status(source: Source, error: RiskMonitorError, at: datetime) -> SourceStatus:
    """Record, count and log a failed source; the status carries the code and a redacted message."""
    record_error(error)
    SOURCE_UP.labels(kind=source.kind.value, source=f"{source.venue}:{source.account}").set(0)
    log.error("source failed; its data is missing", kind=source.kind.value, venue=source.venue,
              account=source.account, error_code=error.code, error=error.message,
              retryable=error.retryable)
    return SourceStatus(kind=source.kind, venue=source.venue, account=source.account, ok=False,
                        as_of=at, rows=0, error_code=error.code, error=error.message,
                        endpoint_override=source.endpoint_override)


def rejected_status(source: Source, row: RejectedRow, at: datetime, dataset: str | None
                    ) -> SourceStatus:
    """One bad row: its instrument / asset is missing (logged, counted), nothing else."""
    error = log_rejected(row, kind=source.kind.value)
    return SourceStatus(kind=source.kind, venue=source.venue, account=row.account, ok=False,
                        as_of=at, rows=0, error_code=error.code, error=row.message,
                        endpoint_override=source.endpoint_override, dataset=dataset,
                        instrument=row.instrument, asset=row.asset)


def data_age_s(frame: pd.DataFrame, now: datetime, column: str) -> float | None:
    """Seconds between ``now`` and the oldest ``column`` value (None for no rows)."""
    if not len(frame):
        return None
    oldest = frame[column].min()
    return max(0.0, (pd.Timestamp(now) - oldest).total_seconds())


def collect(sources: Sequence[Source], *, columns: tuple[str, ...],
            schema_at: Callable[[datetime | None], FrameRules], clock: Clock = utc_now,
            age_column: str = "received_at", dataset: str | None = None,
            keys: tuple[str, ...] = ()) -> Collected:
    """Fetch and validate every source; return the valid rows and every source's status.

    A row that breaks the schema costs that row only (:func:`split_valid_rows`): its instrument
    or asset gets a failed status of its own naming the field and the value; a source whose
    every row is bad, or whose frame is broken as a whole, fails as a whole. The combined
    frame carries its ``keys`` columns as Categoricals (``frame_rules.categorize``).
    """
    frames: list[pd.DataFrame] = []  # per source: its rows, key columns apart (``coded``)
    statuses: list[SourceStatus] = []
    coded = _KeyCodes([k for k in keys if k in columns])
    for source in sources:
        label = f"{source.venue}:{source.account}"
        try:
            frame = source.fetch()
            now = clock()
            frame, rejected = split_valid_rows(frame, schema_at(now), source=source.venue,
                                               account=source.account)
        except RiskMonitorError as exc:
            statuses.append(replace(failed_status(source, exc, clock()), dataset=dataset))
            continue
        except Exception as exc:  # an adapter bug must still read as missing, not as zero
            mapped = map_exception(exc, source=source.venue)
            statuses.append(replace(failed_status(source, mapped, clock()), dataset=dataset))
            continue
        if len(frame):
            frames.append(coded.take(frame) if coded.keys else frame)
        age = data_age_s(frame, now, age_column)
        if age is not None:
            DATA_AGE.labels(kind=source.kind.value, source=label).set(age)
        SOURCE_UP.labels(kind=source.kind.value, source=label).set(1)
        statuses.append(SourceStatus(kind=source.kind, venue=source.venue,
                                     account=source.account, ok=True, as_of=now, rows=len(frame),
                                     endpoint_override=source.endpoint_override,
                                     dataset=dataset))
        statuses += [rejected_status(source, row, now, dataset) for row in rejected]
    if frames and coded.keys:
        combined = coded.combine(pd.concat(frames, ignore_index=True), columns)
    else:
        combined = categorize(concat_frames(frames, columns), keys)
    del frames, coded
    # every part passed alone (time rules included); the whole must too: keys unique across
    # sources. No time rules here: a part valid a moment ago stays valid for this run.
    combined = validate_frame(combined, schema_at(None), source="all")
    return Collected(frame=combined, sources=tuple(statuses))


class _KeyCodes:
    """The key columns of the sources read so far, as codes into one list of distinct values
    per column (first seen first): each source's object key columns are freed once it is read
    (its factorisation is validation's, cached), and :meth:`combine` gives what
    ``categorize(concat_frames(...))`` of the object frames gives, codes and categories alike."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = list(keys)
        self._ids: dict[str, dict[str, int]] = {k: {} for k in keys}
        self._parts: dict[str, list[Any]] = {k: [] for k in keys}  # codes, or the column
        self._plain: set[str] = set()  # a source could not be coded: the column as it came

    def take(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Keep ``frame``'s key columns (coded); returns its other columns."""
        for name in self.keys:
            series = frame[name]
            if name not in self._plain and series.dtype == object:
                codes, uniques = key_codes(frame, name)
                if not (len(codes) and int(codes.min()) < 0) \
                        and all(type(u) is str for u in uniques):
                    ids = self._ids[name]
                    mapped = np.fromiter((ids.setdefault(u, len(ids)) for u in uniques),
                                         dtype=np.int64, count=len(uniques))
                    self._parts[name].append(  # the narrowest type for now: 1-2 bytes a row
                        mapped.astype(np.min_scalar_type(len(ids)))[codes])
                    continue
            if name not in self._plain:  # the sources coded so far go back to their values
                self._plain.add(name)
                values = np.array(list(self._ids[name]), dtype=object)
                self._parts[name] = [pd.Series(values[c], dtype=object)
                                     for c in self._parts[name]]
            self._parts[name].append(series)
        return frame.drop(columns=self.keys)

    def combine(self, rest: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
        """The other columns' frame with the key columns back in their places."""
        plain = [n for n in self.keys if n in self._plain]
        others = [c for c in columns if c not in self.keys]
        out = rest if list(rest.columns) == others else rest[others]
        for name in sorted(self.keys, key=columns.index):
            parts = self._parts[name]
            if name in self._plain:
                column: Any = pd.concat(parts, ignore_index=True)
            else:
                values = np.array(list(self._ids[name]), dtype=object)
                order = np.argsort(values.astype(str), kind="stable")
                rank = np.empty(len(order), dtype=np.min_scalar_type(len(order)))
                rank[order] = np.arange(len(order))
                column = pd.Categorical.from_codes(  # codes narrowed as ``categorize`` does
                    cast(Any, rank[np.concatenate(parts)]),
                    categories=pd.Index(values[order], dtype=object))
            out.insert(columns.index(name), name, column)
        return categorize(out, plain) if plain else out


# --- the three collections ----------------------------------------------------------------------
def collect_positions(accounts: Sequence[ExchangeAccount], settings: MarketDataSettings,
                      clock: Clock = utc_now) -> Collected:
    """Open positions of every exchange account."""
    sources = [Source(SourceKind.EXCHANGE, a.venue, a.account, a.fetch_positions,
                      a.endpoint_override) for a in accounts]
    return collect(sources, columns=POSITION_COLUMNS, clock=clock, dataset="positions",
                   keys=POSITION_KEYS, schema_at=position_rules_at(settings))


def position_rules_at(settings: MarketDataSettings) -> Callable[[datetime | None], FrameRules]:
    """The positions' rules at a time (None: no time rules), with the exchange budget: the one
    path of collection and of the Dagster schema checks."""
    return lambda now: position_rules(now=now, max_age_s=settings.exchange_max_age_s,
                                      max_future_skew_s=settings.max_future_skew_s)


def balance_rules_at(settings: MarketDataSettings, max_age_s: float
                     ) -> Callable[[datetime | None], FrameRules]:
    """The balances' rules at a time with ``max_age_s`` (exchange or custody budget)."""
    return lambda now: balance_rules(now=now, max_age_s=max_age_s,
                                     max_future_skew_s=settings.max_future_skew_s)


def collect_exchange_balances(accounts: Sequence[ExchangeAccount], settings: MarketDataSettings,
                              clock: Clock = utc_now) -> Collected:
    """Wallet balances of every exchange account (source_type 'exchange')."""
    sources = [Source(SourceKind.EXCHANGE, a.venue, a.account, a.fetch_balances,
                      a.endpoint_override) for a in accounts]
    return collect(sources, columns=BALANCE_COLUMNS, clock=clock, dataset="balances",
                   schema_at=balance_rules_at(settings, settings.exchange_max_age_s))


def collect_custodian_balances(custodians: Sequence[Custodian], settings: MarketDataSettings,
                               clock: Clock = utc_now) -> Collected:
    """Vault balances of every custodian (source_type 'custodian'; one source per custodian,
    account ``*`` meaning all its vaults)."""
    sources = [Source(SourceKind.CUSTODIAN, c.venue, "*", c.fetch_balances,
                      c.endpoint_override) for c in custodians]
    return collect(sources, columns=BALANCE_COLUMNS, clock=clock, dataset="balances",
                   schema_at=balance_rules_at(settings, settings.custody_max_age_s))
