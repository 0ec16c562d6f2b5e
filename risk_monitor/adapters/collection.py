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

import pandas as pd
from prometheus_client import Gauge

from risk_monitor.adapters.errors import map_exception
from risk_monitor.adapters.row_validation import RejectedRow, split_valid_rows
from risk_monitor.domain.frame_rules import FrameRules, categorize
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
from risk_monitor.platform.errors import DataValidationError, RiskMonitorError
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
    error = DataValidationError(row.message, source=source.venue, details=row.details())
    record_error(error)
    log.error("row failed validation; its instrument / asset is missing", kind=source.kind.value,
              venue=source.venue, account=row.account, instrument=row.instrument,
              asset=row.asset, field=row.field, value=row.value, check=row.check,
              error_code=error.code)
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
    frames: list[pd.DataFrame] = []
    statuses: list[SourceStatus] = []
    for source in sources:
        label = f"{source.venue}:{source.account}"
        try:
            frame = source.fetch()
            now = clock()
            parsed_out = list(frame.attrs.get("rejected_rows") or [])  # dropped while parsing
            frame, rejected = split_valid_rows(frame, schema_at(now), source=source.venue,
                                               account=source.account)
            rejected = parsed_out + rejected
        except RiskMonitorError as exc:
            statuses.append(replace(failed_status(source, exc, clock()), dataset=dataset))
            continue
        except Exception as exc:  # an adapter bug must still read as missing, not as zero
            mapped = map_exception(exc, source=source.venue)
            statuses.append(replace(failed_status(source, mapped, clock()), dataset=dataset))
            continue
        frames.append(frame)
        age = data_age_s(frame, now, age_column)
        if age is not None:
            DATA_AGE.labels(kind=source.kind.value, source=label).set(age)
        SOURCE_UP.labels(kind=source.kind.value, source=label).set(1)
        statuses.append(SourceStatus(kind=source.kind, venue=source.venue,
                                     account=source.account, ok=True, as_of=now, rows=len(frame),
                                     endpoint_override=source.endpoint_override,
                                     dataset=dataset))
        statuses += [rejected_status(source, row, now, dataset) for row in rejected]
    combined = categorize(concat_frames(frames, columns), keys)
    del frames  # the per-source frames' object key columns: not held beside the combined one
    # every part passed alone (time rules included); the whole must too: keys unique across
    # sources. No time rules here: a part valid a moment ago stays valid for this run.
    combined = validate_frame(combined, schema_at(None), source="all")
    return Collected(frame=combined, sources=tuple(statuses))


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
