"""The compliance timeline's storage: one interval per (limit, scope) and status.

The domain computes the timeline (``domain/compliance.py``); this store locks the series,
reads their open intervals, and saves what the domain says.

Answers "what is in breach now", "since when" and "how long was each limit in each status over
the last 24 h" without replaying every evaluation. A partial unique index keeps at most one open
interval per (limit, scope); writers serialise per key (advisory lock / ``BEGIN IMMEDIATE``), and
a result older than the open interval's last sighting is ignored, so a slow writer cannot reopen
the past.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from risk_monitor.adapters.sql import json_rows
from risk_monitor.adapters.sql.audit_hooks import compliance_seal
from risk_monitor.adapters.sql.audit_log import seal_batch
from risk_monitor.adapters.sql.engine import is_postgres, lock_names, read_only, write_tx
from risk_monitor.adapters.sql.schema import compliance_intervals
from risk_monitor.domain.compliance import (
    StatusInterval,
    end_removed_limits,
    seconds_in_status,
    update_intervals,
)
from risk_monitor.domain.model import LimitResult, LimitStatus

SOURCE = "compliance_store"

#: the store's rows are the domain's intervals (one type for both)
ComplianceInterval = StatusInterval


class ComplianceStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, results: Sequence[LimitResult], *, conn: Connection | None = None) -> int:
        """Save the timeline step the domain computes (``update_intervals``) for ``results``
        against the stored open intervals, sealed; returns intervals opened."""
        if conn is None:
            with write_tx(self.engine, source=SOURCE) as own:
                return self.record(results, conn=own)
        lock_names(conn, lock_names_of(results))
        opened, written = write_step(conn, results)
        if written:
            seal_batch(conn, [compliance_seal(row) for row in written],
                       at=max(r.as_of for r in results))
        return opened

    def end_removed_limits(self, results: Sequence[LimitResult], *, at: datetime,
                           config_version: str) -> int:
        """Close, sealed, the open intervals of limits the full evaluation ``results`` of
        document ``config_version`` no longer evaluates (``domain.compliance``): read to find
        their series, then again under the series' locks. Returns intervals closed."""
        t = compliance_intervals
        with write_tx(self.engine, source=SOURCE) as conn:
            found = conn.execute(sa.select(t).where(t.c.until.is_(None), t.c.limit_id.not_in(
                sorted({r.limit_id for r in results}))))
            ended = end_removed_limits([_interval(r) for r in found], results, at=at,
                                       config_version=config_version)
            if not ended:
                return 0
            lock_names(conn, lock_names_of(ended))
            locked = {(i.limit_id, i.scope) for i in ended}
            stored = {(r.limit_id, r.scope): (r.id, _interval(r)) for r in conn.execute(
                sa.select(t).where(t.c.until.is_(None), t.c.limit_id.in_(
                    sorted({i.limit_id for i in ended})))) if (r.limit_id, r.scope) in locked}
            rows = [{"id": stored[(i.limit_id, i.scope)][0], "limit_id": i.limit_id,
                     "scope": i.scope, "status": i.status.value, "since": i.since,
                     "until": i.until, "config_version": i.config_version}
                    for i in end_removed_limits([i for _, i in stored.values()], results,
                                                at=at, config_version=config_version)]
            if rows:
                conn.execute(t.update().where(t.c.id == sa.bindparam("interval_id")).values(
                    until=sa.bindparam("new_until"), config_version=sa.bindparam("new_version")),
                    [{"interval_id": r["id"], "new_until": r["until"],
                      "new_version": r["config_version"]} for r in rows])
                seal_batch(conn, [compliance_seal(row) for row in rows], at=at)
            return len(rows)

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
        """Seconds spent in each status per (limit, scope) within [start, end)."""
        return seconds_in_status(self.intervals(start, end, limit_id=limit_id, scope=scope),
                                 start, end)

    def _query(self, query: sa.Select[tuple[object, ...]]) -> list[ComplianceInterval]:
        with read_only(self.engine, source=SOURCE) as conn:
            return [_interval(r) for r in conn.execute(query)]


def lock_names_of(results: Sequence[LimitResult | StatusInterval]) -> list[str]:
    """The lock names of the results' series (a writer takes them with its other locks)."""
    keys = sorted({(r.limit_id, r.scope) for r in results})
    return [f"compliance:{limit_id}\x1f{scope}" for limit_id, scope in keys]


def write_step(conn: Connection, results: Sequence[LimitResult]
               ) -> tuple[int, list[dict[str, Any]]]:
    """One timeline step in ``conn``'s transaction, under the series' locks (the caller's):
    returns intervals opened and the rows whose audited columns changed, as written (the
    caller seals them, last in its transaction)."""
    keys = sorted({(r.limit_id, r.scope) for r in results})
    stored: dict[tuple[str, str], tuple[int, StatusInterval]] = {}
    reads: list[tuple[Any, dict[str, Any]]]
    if is_postgres(conn):  # one read for all the series' open intervals
        reads = [(_OPEN_INTERVALS_PG, {"keys": json_rows.records(
            [{"limit_id": k[0], "scope": k[1]} for k in keys], ("limit_id", "scope"))})]
    else:
        reads = [(_OPEN_INTERVALS, {"keys": keys[start:start + 500]})
                 for start in range(0, len(keys), 500)]
    for statement, values in reads:
        for row in conn.execute(statement, values):
            stored[(row.limit_id, row.scope)] = (row.id, _interval(row))
    step = timeline_step(stored, results)
    if step.updates:
        _update_intervals(conn, step.updates)
    written = step.written
    if step.new:  # one multi-row INSERT; ids come back in the rows' order
        t = compliance_intervals
        ids = conn.execute(t.insert().returning(t.c.id, sort_by_parameter_order=True),
                           step.new).scalars().all()
        written += [{"id": i, **row} for i, row in zip(ids, step.new, strict=True)]
    return len(step.new), written


@dataclass(frozen=True)
class TimelineStep:
    """What one timeline step writes: ``updates`` of stored intervals (``interval_id`` and
    ``new_*`` values), ``new`` intervals (no id yet) and the ``written`` updated rows whose
    audited columns changed (to seal; the new rows are sealed too, once they have ids)."""

    updates: list[dict[str, Any]]
    new: list[dict[str, Any]]
    written: list[dict[str, Any]]


def timeline_step(stored: Mapping[tuple[str, str], tuple[int, StatusInterval]],
                  results: Sequence[LimitResult]) -> TimelineStep:
    """The rows of one step of the domain's timeline (``update_intervals``) against the
    stored open intervals (``(limit_id, scope) -> (id, interval)``); no I/O, so a writer that
    read the intervals already (``alert_change.py``) plans its steps in memory."""
    keys = {(r.limit_id, r.scope) for r in results}
    update = update_intervals([i for k, (_, i) in stored.items() if k in keys], results)
    step = TimelineStep([], [], [])
    for interval in [*update.close, *update.open]:
        known = stored.get((interval.limit_id, interval.scope))
        values = {"status": interval.status.value, "until": interval.until,
                  "last_seen_at": interval.last_seen_at,
                  "worst_utilisation": interval.worst_utilisation,
                  "config_version": interval.config_version}
        if known is not None and known[1].since == interval.since:
            step.updates.append({"interval_id": known[0],
                                 **{f"new_{k}": v for k, v in values.items()}})
            if (known[1].until != interval.until
                    or known[1].config_version != interval.config_version):
                step.written.append({"id": known[0], "limit_id": interval.limit_id,
                                     "scope": interval.scope, "since": interval.since, **values})
        else:
            step.new.append({"limit_id": interval.limit_id, "scope": interval.scope,
                             "since": interval.since, **values})
    return step


#: the step's statements, built once (bind parameters): the compiled cache serves them
#: the open intervals of exactly the step's series: a periodic chunk of 25 series of one limit
#: read that limit's every open interval (200 rows) by its id alone
_OPEN_INTERVALS = sa.select(compliance_intervals).where(
    sa.tuple_(compliance_intervals.c.limit_id, compliance_intervals.c.scope).in_(
        sa.bindparam("keys", expanding=True)),
    compliance_intervals.c.until.is_(None))
#: PostgreSQL: the keys as one JSON document (``json_rows.records``), not 2 x 25 binds
_KEYS_PG = sa.func.json_to_recordset(sa.bindparam("keys", type_=sa.Text)).table_valued(
    sa.column("limit_id", sa.Text), sa.column("scope", sa.Text)).render_derived(
    name="k", with_types=True)
_OPEN_INTERVALS_PG = sa.select(compliance_intervals).where(
    sa.tuple_(compliance_intervals.c.limit_id, compliance_intervals.c.scope).in_(
        sa.select(_KEYS_PG.c.limit_id, _KEYS_PG.c.scope)),
    compliance_intervals.c.until.is_(None))
_UPDATE_INTERVAL = compliance_intervals.update().where(
    compliance_intervals.c.id == sa.bindparam("interval_id")).values(
    {name: sa.bindparam(f"new_{name}") for name in (
        "status", "until", "last_seen_at", "worst_utilisation", "config_version")})


#: PostgreSQL: every interval's update in one statement (one JSON document of the rows,
#: ``json_rows.records``); a periodic step touches every open interval (its last sighting), a
#: round trip each with executemany
_UPDATE_INTERVALS_PG = sa.text(
    "UPDATE compliance_intervals AS t SET status = v.status, until = v.until, "
    "last_seen_at = v.last_seen_at, worst_utilisation = v.worst_utilisation, "
    "config_version = v.config_version "
    "FROM json_to_recordset(CAST(:rows AS json)) AS v(id bigint, status text, "
    "until timestamptz, last_seen_at timestamptz, worst_utilisation double precision, "
    "config_version text) "
    "WHERE t.id = v.id")
_UPDATE_COLUMNS = ("id", "status", "until", "last_seen_at", "worst_utilisation",
                   "config_version")


def _update_intervals(conn: Connection, updates: list[dict[str, Any]]) -> None:
    """The intervals' new values: one statement on PostgreSQL when there are several, else
    the cached UPDATE (an executemany)."""
    if len(updates) == 1 or not is_postgres(conn):
        conn.execute(_UPDATE_INTERVAL, updates)
        return
    rows = [{"id": u["interval_id"], "status": u["new_status"], "until": u["new_until"],
             "last_seen_at": u["new_last_seen_at"],
             "worst_utilisation": u["new_worst_utilisation"],
             "config_version": u["new_config_version"]} for u in updates]
    conn.execute(_UPDATE_INTERVALS_PG, {"rows": json_rows.records(  # naive times refused
        rows, _UPDATE_COLUMNS, times=("until", "last_seen_at"), floats=("worst_utilisation",))})


def _interval(row: sa.Row[Any]) -> StatusInterval:
    return interval_from(row._mapping)


def interval_from(row: Mapping[str, Any] | sa.RowMapping) -> StatusInterval:
    """The domain interval of a stored row's values."""
    return StatusInterval(limit_id=row["limit_id"], scope=row["scope"],
                          status=LimitStatus(row["status"]), since=row["since"],
                          until=row["until"], worst_utilisation=row["worst_utilisation"],
                          last_seen_at=row["last_seen_at"], config_version=row["config_version"])
