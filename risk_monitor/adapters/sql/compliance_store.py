"""The compliance timeline: one interval per (limit, scope) and status, open until it changes.

Answers "what is in breach now", "since when" and "how long was each limit in each status over
the last 24 h" without replaying every evaluation. A partial unique index keeps at most one open
interval per (limit, scope); writers serialise per key (advisory lock / ``BEGIN IMMEDIATE``), and
a result older than the open interval's last sighting is ignored, so a slow writer cannot reopen
the past.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from risk_monitor.adapters.sql.audit_hooks import seal_compliance
from risk_monitor.adapters.sql.engine import lock_names, read_only, write_tx
from risk_monitor.adapters.sql.schema import compliance_intervals
from risk_monitor.domain.model import LimitResult, LimitStatus

SOURCE = "compliance_store"
_SEVERITY_ORDER = (LimitStatus.BREACH, LimitStatus.UNKNOWN, LimitStatus.WARN, LimitStatus.OK)


@dataclass(frozen=True)
class ComplianceInterval:
    limit_id: str
    scope: str
    status: LimitStatus
    since: datetime
    until: datetime | None
    last_seen_at: datetime
    worst_utilisation: float | None
    config_version: str


@dataclass(frozen=True)
class ComplianceSummary:
    """The desk's status now: the worst open status, and how many limits are in each."""

    status: LimitStatus
    counts: dict[LimitStatus, int]
    in_breach: list[ComplianceInterval]


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


class ComplianceStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, results: Sequence[LimitResult], *, conn: Connection | None = None) -> int:
        """Extend or switch each (limit, scope) interval; returns intervals opened."""
        if conn is None:
            with write_tx(self.engine, source=SOURCE) as own:
                return self.record(results, conn=own)
        t = compliance_intervals
        lock_names(conn, [f"compliance:{r.limit_id}\x1f{r.scope}" for r in results])
        opened = 0
        sealed: list[int] = []  # intervals whose audited columns change (audit hook)
        for r in sorted(results, key=lambda x: x.as_of):
            current = conn.execute(
                sa.select(t).where(t.c.limit_id == r.limit_id, t.c.scope == r.scope,
                                   t.c.until.is_(None))
            ).first()
            if current is not None and r.as_of < current.last_seen_at:
                continue  # older than what we know: never rewrite the past
            if current is not None and current.status == r.status.value:
                conn.execute(t.update().where(t.c.id == current.id).values(
                    last_seen_at=r.as_of,
                    worst_utilisation=_max(current.worst_utilisation, r.utilisation),
                    config_version=r.config_version,
                ))
                if current.config_version != r.config_version:
                    sealed.append(current.id)
                continue
            if current is not None:
                conn.execute(t.update().where(t.c.id == current.id).values(until=r.as_of))
                sealed.append(current.id)
            sealed.append(conn.execute(t.insert().values(
                limit_id=r.limit_id, scope=r.scope, status=r.status.value, since=r.as_of,
                until=None, last_seen_at=r.as_of, worst_utilisation=r.utilisation,
                config_version=r.config_version,
            ).returning(t.c.id)).scalar_one())
            opened += 1
        if sealed:
            seal_compliance(conn, sealed, at=max(r.as_of for r in results))
        return opened

    def open_intervals(self) -> list[ComplianceInterval]:
        t = compliance_intervals
        return self._query(sa.select(t).where(t.c.until.is_(None))
                           .order_by(t.c.limit_id, t.c.scope))

    def intervals(self, start: datetime, end: datetime, *, limit_id: str | None = None,
                  scope: str | None = None) -> list[ComplianceInterval]:
        """Intervals overlapping [start, end), oldest first."""
        t = compliance_intervals
        query = sa.select(t).where(t.c.since < end,
                                   sa.or_(t.c.until.is_(None), t.c.until > start))
        if limit_id is not None:
            query = query.where(t.c.limit_id == limit_id)
        if scope is not None:
            query = query.where(t.c.scope == scope)
        return self._query(query.order_by(t.c.limit_id, t.c.scope, t.c.since))

    def time_in_status(self, start: datetime, end: datetime, *, limit_id: str | None = None,
                       scope: str | None = None) -> dict[tuple[str, str], dict[LimitStatus, float]]:
        """Seconds spent in each status per (limit, scope) within [start, end).

        An open interval counts up to ``end``; time before a limit's first evaluation is not
        counted at all (it was not monitored, which is not the same as OK).
        """
        totals: dict[tuple[str, str], dict[LimitStatus, float]] = defaultdict(
            lambda: dict.fromkeys(LimitStatus, 0.0))
        for interval in self.intervals(start, end, limit_id=limit_id, scope=scope):
            lo = max(interval.since, start)
            hi = min(interval.until or end, end)
            if hi > lo:
                totals[(interval.limit_id, interval.scope)][interval.status] += (
                    hi - lo).total_seconds()
        return dict(totals)

    def summary(self) -> ComplianceSummary:
        """Worst open status (no limit evaluated yet reads UNKNOWN: fail closed)."""
        current = self.open_intervals()
        counts = dict.fromkeys(LimitStatus, 0)
        for interval in current:
            counts[interval.status] += 1
        worst = next((s for s in _SEVERITY_ORDER if counts[s]), LimitStatus.UNKNOWN)
        in_breach = [i for i in current if i.status is LimitStatus.BREACH]
        return ComplianceSummary(status=worst, counts=counts, in_breach=in_breach)

    def _query(self, query: sa.Select[tuple[object, ...]]) -> list[ComplianceInterval]:
        with read_only(self.engine, source=SOURCE) as conn:
            return [
                ComplianceInterval(
                    limit_id=r.limit_id, scope=r.scope, status=LimitStatus(r.status),
                    since=r.since, until=r.until, last_seen_at=r.last_seen_at,
                    worst_utilisation=r.worst_utilisation, config_version=r.config_version,
                )
                for r in conn.execute(query)
            ]
