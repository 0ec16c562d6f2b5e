"""The latest risk picture: limit results, named risk metrics and source coverage.

The service's API and the Prometheus collector read these tables, so both processes that
evaluate risk (Dagster runs and the service's hot path) publish to one place. Limit results
only move forward in time: a slower writer with an older evaluation never overwrites a newer
one. A metrics snapshot replaces the previous one atomically (per metric name), so a scrape
never sees half of one evaluation and half of the next.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from risk_monitor.adapters.sql import codec
from risk_monitor.adapters.sql.engine import dialect_insert, read_only, write_tx
from risk_monitor.adapters.sql.schema import (
    limit_status_latest,
    risk_metrics_latest,
    source_status_latest,
)
from risk_monitor.domain.figures import MetricValue
from risk_monitor.domain.model import LimitResult, SourceStatus

SOURCE = "risk_state"


@dataclass(frozen=True)
class StoredMetric:
    name: str
    labels: dict[str, str]
    value: float | None
    as_of: datetime


@dataclass(frozen=True)
class StoredSource:
    key: str
    kind: str
    venue: str
    account: str
    ok: bool
    as_of: datetime
    last_ok_at: datetime | None
    rows: int
    error_code: str | None
    error: str | None


class LatestEvaluationStore:
    """Latest limit results, metrics snapshot and source status (see module docstring)."""

    def __init__(self, engine: Engine, *, clock: codec.Clock = codec.utc_now) -> None:
        self.engine = engine
        self._clock = clock

    # -- limit results --------------------------------------------------------------------------
    def upsert_limit_results(self, results: Sequence[LimitResult], *,
                             prune_before: datetime | None = None) -> int:
        """Store results newer than what is stored; returns rows written.

        ``prune_before``: a full evaluation passes its ``as_of`` so results of limits that are no
        longer configured (not re-evaluated since) disappear.
        """
        now = self._clock()
        written = 0
        table = limit_status_latest
        rows = [{**codec.limit_result_values(result), "updated_at": now} for result in results]
        with write_tx(self.engine, source=SOURCE) as conn:
            if rows:
                # one statement for every row (executemany): built and compiled once, then
                # cached; a statement per result cost ~1 ms of CPU each in the hot path's
                # periodic write
                statement = dialect_insert(conn, table)
                update = {k: statement.excluded[k] for k in rows[0]
                          if k not in ("limit_id", "scope")}
                statement = statement.on_conflict_do_update(
                    index_elements=["limit_id", "scope"], set_=update,
                    where=table.c.as_of <= statement.excluded.as_of,
                )
                written = conn.execute(statement, rows).rowcount
            if prune_before is not None:
                keep = {(r.limit_id, r.scope) for r in results}
                stale = conn.execute(sa.select(table.c.limit_id, table.c.scope)
                                     .where(table.c.as_of < prune_before)).all()
                for limit_id, scope in stale:
                    if (limit_id, scope) not in keep:
                        conn.execute(table.delete().where(table.c.limit_id == limit_id,
                                                          table.c.scope == scope))
        return written

    def limit_results(self) -> list[LimitResult]:
        with read_only(self.engine, source=SOURCE) as conn:
            rows = conn.execute(sa.select(limit_status_latest)
                                .order_by(limit_status_latest.c.limit_id,
                                          limit_status_latest.c.scope))
            return [codec.limit_result_from_row(r._mapping) for r in rows]

    # -- metrics snapshot -----------------------------------------------------------------------
    def replace_metrics(self, metrics: Iterable[MetricValue], as_of: datetime, *,
                        names: Iterable[str] | None = None) -> int:
        """Replace the stored values of ``names`` (default: every name) with ``metrics``."""
        items = list(metrics)
        delete = risk_metrics_latest.delete()
        if names is not None:
            replaced = set(names)
            outside = {m.name for m in items} - replaced
            if outside:
                raise ValueError(f"metrics {sorted(outside)} are not among the replaced names")
            delete = delete.where(risk_metrics_latest.c.name.in_(sorted(replaced)))
        unique = {(m.name, m.labels_key): m for m in items}  # the last value of a key wins
        with write_tx(self.engine, source=SOURCE) as conn:
            conn.execute(delete)
            if unique:
                conn.execute(risk_metrics_latest.insert(), [
                    {"name": m.name, "labels_key": m.labels_key,
                     "labels": {k: str(v) for k, v in m.labels.items()},
                     "value": m.value if m.value is not None and math.isfinite(m.value) else None,
                     "as_of": as_of}
                    for m in unique.values()
                ])
        return len(unique)

    def metrics(self) -> list[StoredMetric]:
        with read_only(self.engine, source=SOURCE) as conn:
            rows = conn.execute(sa.select(risk_metrics_latest).order_by(
                risk_metrics_latest.c.name, risk_metrics_latest.c.labels_key))
            return [StoredMetric(name=r.name, labels=dict(r.labels), value=r.value,
                                 as_of=r.as_of) for r in rows]

    # -- source coverage ------------------------------------------------------------------------
    def record_sources(self, statuses: Sequence[SourceStatus]) -> None:
        """Keep the last attempt per source and when it last succeeded (data age)."""
        table = source_status_latest
        with write_tx(self.engine, source=SOURCE) as conn:
            for status in statuses:
                values = {
                    "key": status.key, "kind": status.kind.value, "venue": status.venue,
                    "account": status.account, "ok": status.ok, "as_of": status.as_of,
                    "last_ok_at": status.as_of if status.ok else None, "rows": status.rows,
                    "error_code": status.error_code,
                    "error": codec.safe_document(status.error) if status.error else None,
                }
                statement = dialect_insert(conn, table).values(**values)
                update = {k: statement.excluded[k] for k in values if k != "key"}
                # a failure keeps the last success time: that is what the data age counts from
                update["last_ok_at"] = sa.func.coalesce(statement.excluded.last_ok_at,
                                                        table.c.last_ok_at)
                conn.execute(statement.on_conflict_do_update(
                    index_elements=["key"], set_=update,
                    where=table.c.as_of <= statement.excluded.as_of))

    def sources(self) -> list[StoredSource]:
        with read_only(self.engine, source=SOURCE) as conn:
            rows = conn.execute(sa.select(source_status_latest)
                                .order_by(source_status_latest.c.key))
            return [StoredSource(**dict(r._mapping)) for r in rows]
