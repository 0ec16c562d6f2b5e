"""Compliance status: per (limit, scope) status intervals, the current summary, time in breach.

A status interval is the stretch of time a (limit, scope) spent in one status. The timeline is
computed here, once, for both evaluation paths: :func:`update_intervals` says which intervals to
close and which to open or extend, given the open ones and the new results, and
:func:`end_removed_limits` which series a new limit document ended; the store
(``adapters/sql/compliance_store.py``) only saves what it is told.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from risk_monitor.domain.model import LimitResult, LimitStatus, alert_fingerprint, worst_status


class ComplianceStatus(StrEnum):
    """Overall state of the desk against its limits."""

    COMPLIANT = "COMPLIANT"
    WARNING = "WARNING"
    BREACH = "BREACH"
    UNKNOWN = "UNKNOWN"


_DESK_STATUS = {LimitStatus.BREACH: ComplianceStatus.BREACH,
                LimitStatus.UNKNOWN: ComplianceStatus.UNKNOWN,
                LimitStatus.WARN: ComplianceStatus.WARNING,
                LimitStatus.OK: ComplianceStatus.COMPLIANT}


def desk_status(statuses: Iterable[LimitStatus]) -> ComplianceStatus:
    """The desk's status: its worst limit's (``model.WORST_FIRST``); none evaluated → UNKNOWN."""
    return _DESK_STATUS[worst_status(statuses)]


@dataclass(frozen=True)
class StatusInterval:
    """How long one (limit, scope) stayed in one status; ``until`` None = still open."""

    limit_id: str
    scope: str
    status: LimitStatus
    since: datetime
    until: datetime | None
    worst_utilisation: float | None
    last_seen_at: datetime  # the latest result seen in this status
    config_version: str = ""

    @property
    def fingerprint(self) -> str:
        return alert_fingerprint(self.limit_id, self.scope)

    def seconds_within(self, start: datetime, end: datetime) -> float:
        """Overlap of this interval with [start, end) in seconds (open intervals run to end)."""
        until = self.until if self.until is not None else end
        lo, hi = max(self.since, start), min(until, end)
        return max(0.0, (hi - lo).total_seconds())


@dataclass(frozen=True)
class IntervalUpdate:
    """What to persist: intervals to close (with ``until`` set) and to insert or update."""

    close: list[StatusInterval] = field(default_factory=list)
    open: list[StatusInterval] = field(default_factory=list)


def _worse(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def update_intervals(open_intervals: Iterable[StatusInterval],
                     results: Sequence[LimitResult]) -> IntervalUpdate:
    """Advance the status timeline with new results (in time order).

    Same status → the open interval is extended (last sighting, worst utilisation, config
    version); a new status → the open interval closes at the result's ``as_of`` and a new one
    opens there; a result older than the open interval's last sighting is ignored (a slow writer
    never rewrites the past). ``open`` holds the final open interval of every series that
    changed; ``close`` every interval that ended. The series absent from ``results`` stay open.
    """
    current = {i.fingerprint: i for i in open_intervals}
    update = IntervalUpdate()
    touched: dict[str, StatusInterval] = {}
    for result in sorted(results, key=lambda r: r.as_of):
        fp = result.fingerprint
        existing = current.get(fp)
        if existing is not None and result.as_of < existing.last_seen_at:
            continue
        if existing is not None and existing.status is result.status:
            nxt = replace(existing, last_seen_at=result.as_of,
                          worst_utilisation=_worse(existing.worst_utilisation,
                                                   result.utilisation),
                          config_version=result.config_version)
        else:
            if existing is not None:
                update.close.append(replace(existing, until=result.as_of))
            nxt = StatusInterval(result.limit_id, result.scope, result.status, result.as_of,
                                 None, result.utilisation, result.as_of, result.config_version)
        current[fp] = touched[fp] = nxt
    update.open.extend(touched.values())
    return update


def end_removed_limits(open_intervals: Iterable[StatusInterval], results: Sequence[LimitResult],
                       *, at: datetime, config_version: str) -> list[StatusInterval]:
    """The open intervals of limits a full evaluation (``results``, every limit of document
    ``config_version``) no longer evaluates, ended at ``at``, when that document applies.

    A limit dropped from the document (or left with no scope) is no longer monitored: without
    this its last status would count forever in time-in-status reports, although its alert
    resolved (``AlertPolicy.resolve_missing``). The closed interval names the version that
    removed it (its audit entry then does), and never ends before its last sighting.
    """
    evaluated = {r.limit_id for r in results}
    return [replace(i, until=max(at, i.last_seen_at), config_version=config_version)
            for i in open_intervals if i.until is None and i.limit_id not in evaluated]


@dataclass(frozen=True)
class ComplianceSummary:
    """Current compliance across all evaluated (limit, scope) series."""

    status: ComplianceStatus
    counts: dict[str, int]  # per LimitStatus value, all four keys present
    total: int
    as_of: datetime | None
    worst: LimitResult | None  # highest utilisation among known results

    def as_dict(self) -> dict[str, object]:
        return {
            "status": self.status.value,
            "total": self.total,
            **{f"count_{k.lower()}": v for k, v in self.counts.items()},
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "worst_limit": self.worst.limit_id if self.worst else None,
            "worst_scope": self.worst.scope if self.worst else None,
            "worst_utilisation": self.worst.utilisation if self.worst else None,
        }


def compliance_summary(results: Sequence[LimitResult]) -> ComplianceSummary:
    """BREACH if anything breaches; else UNKNOWN if anything is unknown (we cannot claim
    compliance blind); else WARNING if anything warns; else COMPLIANT. No results → UNKNOWN."""
    # counted by identity (list.count, in C): an enum member hashes in Python, and there are
    # thousands of results per evaluation
    statuses = [r.status for r in results]
    found = {s: statuses.count(s) for s in LimitStatus}
    counts = {s.value: n for s, n in found.items()}
    status = desk_status(s for s, n in found.items() if n)
    known = [r for r in results if r.utilisation is not None]
    worst = max(known, key=lambda r: r.utilisation or 0.0) if known else None
    as_of = max((r.as_of for r in results), default=None)
    return ComplianceSummary(status, counts, len(results), as_of, worst)


def seconds_in_status(intervals: Iterable[StatusInterval], start: datetime,
                      end: datetime) -> dict[tuple[str, str], dict[LimitStatus, float]]:
    """Seconds each (limit, scope) spent in each status within [start, end).

    An open interval counts up to ``end``; time before a limit's first evaluation is not
    counted at all (it was not monitored, which is not the same as OK).
    """
    if end <= start:
        raise ValueError("end must be after start")
    totals: dict[tuple[str, str], dict[LimitStatus, float]] = {}
    for interval in intervals:
        seconds = interval.seconds_within(start, end)
        if seconds > 0:
            spent = totals.setdefault((interval.limit_id, interval.scope),
                                      dict.fromkeys(LimitStatus, 0.0))
            spent[interval.status] += seconds
    return totals
