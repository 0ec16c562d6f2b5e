"""The dashboard's JSON shapes and the pure rules that fill them (``service/dashboard.py``
serves them): limit rows worst first, exposures by venue and asset, alert rows, the
compliance timeline, and the status the page shows (never better than the data allows)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from risk_monitor.adapters.sql.compliance_store import ComplianceInterval
from risk_monitor.adapters.sql.outbox import OutboxRow
from risk_monitor.adapters.sql.risk_state import StoredMetric
from risk_monitor.domain.figures import (
    DAILY_PNL_METRIC,
    DRAWDOWN_METRIC,
    EQUITY_METRIC,
    EXPOSURE_GROSS_METRIC,
    EXPOSURE_NET_METRIC,
    GROSS_METRIC,
    NET_METRIC,
    UNREALIZED_PNL_METRIC,
    finite,
)
from risk_monitor.domain.limits import KIND_SPECS, LimitKind
from risk_monitor.domain.model import WORST_FIRST, LimitResult, Notification
from risk_monitor.service.state import (
    NO_EVALUATION,
    RiskView,
    SourceFreshness,
)

#: evaluation_source when the provider could not be read
UNAVAILABLE = "unavailable"
_EXPOSURE_LEVELS = ("venue", "asset")


# -- JSON shapes ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeaderView:
    status: str  # what the evaluation says: COMPLIANT | WARNING | BREACH | UNKNOWN
    display_status: str  # what the page shows (fail closed, see the module docstring)
    as_of: datetime | None
    data_age_s: float | None
    limit_config_version: str  # the limits the evaluation used
    limits_version_in_force: str | None  # the limits this service applies now
    config_document_version: str | None
    config_source: str | None
    evaluation_source: str  # in-memory | database | no-evaluation-yet | unavailable
    counts: Mapping[str, int]


@dataclass(frozen=True)
class StaleView:
    stale: bool
    reasons: list[str]


@dataclass(frozen=True)
class LimitRow:
    limit_id: str
    kind: str
    unit: str
    scope: str
    status: str
    value: float | None
    warn: float | None
    breach: float
    utilisation: float | None  # value / breach (1.0 = at the breach level)
    reason: str
    as_of: datetime
    source_event_time: datetime | None


@dataclass(frozen=True)
class ExposureRow:
    key: str
    gross_usd: float | None
    net_usd: float | None


@dataclass(frozen=True)
class ExposuresView:
    available: bool  # False: no figures stored (yet) or the store could not be read
    as_of: datetime | None
    equity_usd: float | None
    gross_usd: float | None
    net_usd: float | None
    daily_pnl_usd: float | None
    unrealized_pnl_usd: float | None
    drawdown_pct: float | None
    venues: list[ExposureRow]
    assets: list[ExposureRow]


@dataclass(frozen=True)
class AlertRow:
    id: int
    detected_at: datetime
    kind: str  # firing | escalated | deescalated | repeat | resolved
    status: str  # the limit status the alert reports
    severity: str
    limit_id: str
    scope: str
    reason: str
    delivery: str  # pending | sending | sent | failed | in-process (feed without delivery state)
    attempts: int | None
    notified_at: datetime | None
    notify_latency_s: float | None  # detection -> delivered
    end_to_end_latency_s: float | None  # source event -> delivered
    last_error_code: str | None
    correlation_id: str
    held_by: str | None = None  # delivery "suppressed": "silence:<id>" or "ack:<who>"


@dataclass(frozen=True)
class AlertsView:
    available: bool
    pending: int  # undelivered among the rows shown (pending + sending)
    failed: int
    items: list[AlertRow]
    suppressed: int = 0  # held back by a silence or an acknowledgement (recorded, not sent)


@dataclass(frozen=True)
class DashboardState:
    """``GET /v1/dashboard/state``."""

    generated_at: datetime
    freshness_budget_s: float
    refresh_interval_s: float
    header: HeaderView
    stale: StaleView
    limits: list[LimitRow]
    exposures: ExposuresView
    sources: list[SourceFreshness]  # the provider's freshness view, unchanged
    alerts: AlertsView


@dataclass(frozen=True)
class TimelineSegment:
    status: str
    start: datetime
    end: datetime  # for the open interval: its last sighting (nothing is known after it)
    open: bool


@dataclass(frozen=True)
class TimelineSeries:
    limit_id: str
    scope: str
    segments: list[TimelineSegment]


@dataclass(frozen=True)
class TimelineView:
    """``GET /v1/dashboard/timeline?hours=24``."""

    available: bool
    start: datetime
    end: datetime
    series: list[TimelineSeries]
    error: str | None = None


# -- the rules ------------------------------------------------------------------------------------
def _rank(status: str) -> int:
    """Position in the domain's one order of statuses (``model.WORST_FIRST``)."""
    return next((i for i, s in enumerate(WORST_FIRST) if s.value == status), len(WORST_FIRST))


def _unit(kind: str) -> str:
    try:
        return KIND_SPECS[LimitKind(kind)].unit
    except (ValueError, KeyError):
        return ""


def limit_rows(results: Iterable[LimitResult]) -> list[LimitRow]:
    """Worst first: BREACH, UNKNOWN, WARN, OK, then by utilisation (highest first)."""
    rows = [
        LimitRow(limit_id=r.limit_id, kind=r.limit_kind, unit=_unit(r.limit_kind),
                 scope=r.scope, status=r.status.value, value=finite(r.value),
                 warn=finite(r.warn_level), breach=r.breach_level,
                 utilisation=finite(r.utilisation), reason=r.reason, as_of=r.as_of,
                 source_event_time=r.source_event_time)
        for r in results
    ]
    rows.sort(key=lambda r: (_rank(r.status),
                             -(r.utilisation if r.utilisation is not None else -math.inf),
                             r.limit_id, r.scope))
    return rows


def display_status(status: str, stale: bool) -> str:
    """Fail closed: stale data never shows as COMPLIANT or WARNING."""
    if stale and status != "BREACH":
        return "UNKNOWN"
    return status


def exposures_view(metrics: Sequence[StoredMetric], view: RiskView | None) -> ExposuresView:
    """Headline figures from the provider's view (the header's truth); P&L and the per-venue
    and per-asset split from the stored metrics."""
    plain = {m.name: m for m in metrics if not m.labels}

    def figure(name: str) -> float | None:
        metric = plain.get(name)
        return finite(metric.value) if metric is not None else None

    split: dict[str, dict[str, dict[str, float | None]]] = {lvl: {} for lvl in _EXPOSURE_LEVELS}
    for m in metrics:
        if m.name not in (EXPOSURE_GROSS_METRIC, EXPOSURE_NET_METRIC):
            continue
        level = m.labels.get("level", "")
        key = m.labels.get(level, "") if level in split else ""
        if not key:
            continue
        measure = "gross" if m.name == EXPOSURE_GROSS_METRIC else "net"
        split[level].setdefault(key, {})[measure] = finite(m.value)

    def rows(level: str) -> list[ExposureRow]:
        """Unknown first (a blind venue must not hide at the bottom), then largest gross."""
        found = [ExposureRow(k, v.get("gross"), v.get("net")) for k, v in split[level].items()]
        return sorted(found, key=lambda r: (r.gross_usd is not None, -(r.gross_usd or 0.0),
                                            r.key))

    as_of = max((m.as_of for m in metrics), default=None)
    if view is not None and view.evaluation_source not in (NO_EVALUATION, UNAVAILABLE):
        equity, gross, net = view.equity, view.gross_exposure, view.net_exposure
    else:
        equity, gross, net = figure(EQUITY_METRIC), figure(GROSS_METRIC), figure(NET_METRIC)
    return ExposuresView(
        available=bool(metrics), as_of=as_of, equity_usd=equity, gross_usd=gross, net_usd=net,
        daily_pnl_usd=figure(DAILY_PNL_METRIC), unrealized_pnl_usd=figure(UNREALIZED_PNL_METRIC),
        drawdown_pct=figure(DRAWDOWN_METRIC), venues=rows("venue"), assets=rows("asset"))


def alert_row_from_outbox(row: OutboxRow, n: Notification) -> AlertRow:
    notify = end_to_end = None
    if row.notified_at is not None:
        notify = max(0.0, (row.notified_at - row.detected_at).total_seconds())
        if row.source_event_time is not None:
            end_to_end = max(0.0, (row.notified_at - row.source_event_time).total_seconds())
    return AlertRow(
        id=row.id, detected_at=row.detected_at, kind=row.kind, status=row.alert_status,
        severity=row.severity, limit_id=n.limit_id, scope=n.scope, reason=n.reason,
        delivery=row.status, attempts=row.attempts, notified_at=row.notified_at,
        notify_latency_s=notify, end_to_end_latency_s=end_to_end,
        last_error_code=row.last_error_code, correlation_id=row.correlation_id,
        held_by=row.suppressed_by)


def timeline_series(intervals: Iterable[ComplianceInterval], start: datetime,
                    end: datetime) -> list[TimelineSeries]:
    """Segments clamped to [start, end); an open interval ends at its last sighting."""
    grouped: dict[tuple[str, str], list[TimelineSegment]] = {}
    for i in intervals:
        until = i.until if i.until is not None else i.last_seen_at
        lo, hi = max(i.since, start), min(until, end)
        segments = grouped.setdefault((i.limit_id, i.scope), [])
        if hi > lo or (i.until is None and lo == hi and start <= lo < end):
            segments.append(TimelineSegment(i.status.value, lo, hi, i.until is None))
    return [TimelineSeries(limit_id, scope, sorted(segs, key=lambda s: s.start))
            for (limit_id, scope), segs in sorted(grouped.items())]


def age_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
