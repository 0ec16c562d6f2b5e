"""The latest risk picture: limit results, named risk metrics and source coverage.

The service's API and the Prometheus collector read these tables, so both processes that
evaluate risk (Dagster runs and the service's hot path) publish to one place. Limit results
only move forward in time: a slower writer with an older evaluation never overwrites a newer
one. A metrics snapshot replaces the previous one atomically (per metric name), so a scrape
never sees half of one evaluation and half of the next.

The service writes all of it every ``persist_interval_s``, on the tick loop's interpreter lock:
on PostgreSQL the results and the metrics of a call travel as one JSON document each
(``json_rows``), expanded by the server in one statement (the results' upsert and prune
together); SQLAlchemy's multi-row statements cost ~50 ms of CPU a round for 200 results and
400 metrics. Elsewhere (SQLite) the rows are bound as before; the rules (forward only, stale
rows pruned) are the same expressions on both.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine

from risk_monitor.adapters.sql import codec, json_rows
from risk_monitor.adapters.sql.engine import dialect_insert, is_postgres, read_only, write_tx
from risk_monitor.adapters.sql.schema import (
    UtcDateTime,
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
        latest: dict[tuple[str, str], LimitResult] = {}  # one row per key: the newest, else last
        for result in results:
            key = (result.limit_id, result.scope)
            known = latest.get(key)
            if known is None or known.as_of <= result.as_of:
                latest[key] = result
        rows = [codec.limit_result_values(result) for result in latest.values()]
        with write_tx(self.engine, source=SOURCE) as conn:
            if is_postgres(conn):  # every row in one JSON document, expanded by the server
                values = {"rows": json_rows.document(rows, source=SOURCE, times=_RESULT_TIMES),
                          "updated_at": now, "prune_before": prune_before}
                if prune_before is None:
                    return int(conn.execute(_UPSERT_PG, values).rowcount)
                return int(conn.execute(_UPSERT_PRUNE_PG, values).scalar_one())
            written = 0
            if rows:
                # one statement for every row (executemany): built and compiled once, then
                # cached; a statement per result cost ~1 ms of CPU each in the hot path's
                # periodic write
                written = conn.execute(_forward_only(dialect_insert(conn, limit_status_latest)),
                                       [{**row, "updated_at": now} for row in rows]).rowcount
            if prune_before is not None:
                table = limit_status_latest
                stale = conn.execute(sa.select(table.c.limit_id, table.c.scope)
                                     .where(_stale(prune_before))).all()
                for limit_id, scope in stale:
                    if (limit_id, scope) not in latest:
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
        rows = [{"name": name, "labels_key": labels_key,
                 "labels": {k: str(v) for k, v in m.labels.items()},
                 "value": m.value if m.value is not None and math.isfinite(m.value) else None}
                for (name, labels_key), m in unique.items()]
        with write_tx(self.engine, source=SOURCE) as conn:
            conn.execute(delete)
            if rows and is_postgres(conn):  # every row in one JSON document, server-expanded
                conn.execute(_METRICS_PG, {"rows": json_rows.document(rows, source=SOURCE),
                                          "as_of": as_of})
            elif rows:
                conn.execute(risk_metrics_latest.insert(),
                             [{**row, "as_of": as_of} for row in rows])
        return len(rows)

    def metrics(self) -> list[StoredMetric]:
        with read_only(self.engine, source=SOURCE) as conn:
            rows = conn.execute(sa.select(risk_metrics_latest).order_by(
                risk_metrics_latest.c.name, risk_metrics_latest.c.labels_key))
            return [StoredMetric(name=r.name, labels=dict(r.labels), value=r.value,
                                 as_of=r.as_of) for r in rows]

    # -- source coverage ------------------------------------------------------------------------
    def record_sources(self, statuses: Sequence[SourceStatus]) -> None:
        """Keep the last attempt per source and when it last succeeded (data age)."""
        if not statuses:
            return
        rows = [{"key": status.key, "kind": status.kind.value, "venue": status.venue,
                 "account": status.account, "ok": status.ok, "as_of": status.as_of,
                 "last_ok_at": status.as_of if status.ok else None, "rows": status.rows,
                 "error_code": status.error_code,
                 "error": codec.safe_document(status.error) if status.error else None}
                for status in statuses]
        with write_tx(self.engine, source=SOURCE) as conn:
            conn.execute(_source_upsert(conn), rows)  # one statement, each row in turn

    def sources(self) -> list[StoredSource]:
        with read_only(self.engine, source=SOURCE) as conn:
            rows = conn.execute(sa.select(source_status_latest)
                                .order_by(source_status_latest.c.key))
            return [StoredSource(**dict(r._mapping)) for r in rows]


#: the columns a result writes (``codec.limit_result_values``), the key first
_RESULT_COLUMNS = [c for c in limit_status_latest.c if c.name != "updated_at"]
_RESULT_TIMES = [c.name for c in _RESULT_COLUMNS if isinstance(c.type, UtcDateTime)]


def _forward_only(statement: Any) -> Any:
    """The upsert of results: a stored row is replaced only by a result at least as new
    (limit results only move forward in time; one rule for both backends)."""
    table = limit_status_latest
    return statement.on_conflict_do_update(
        index_elements=["limit_id", "scope"],
        set_={c.name: statement.excluded[c.name] for c in table.c
              if c.name not in ("limit_id", "scope")},
        where=table.c.as_of <= statement.excluded.as_of)


def _stale(prune_before: datetime | sa.BindParameter[datetime]) -> sa.ColumnElement[bool]:
    """Stored results older than ``prune_before`` (pruned unless among the results)."""
    return limit_status_latest.c.as_of < prune_before


def _source_upsert(conn: Connection) -> Any:
    """The upsert of a source's status, built once per backend (building it cost more CPU
    than running it)."""
    built = _SOURCE_UPSERTS.get(conn.dialect.name)
    if built is None:
        table = source_status_latest
        statement = dialect_insert(conn, table)
        update = {c.name: statement.excluded[c.name] for c in table.c if c.name != "key"}
        # a failure keeps the last success time: that is what the data age counts from
        update["last_ok_at"] = sa.func.coalesce(statement.excluded.last_ok_at,
                                                table.c.last_ok_at)
        built = _SOURCE_UPSERTS[conn.dialect.name] = statement.on_conflict_do_update(
            index_elements=["key"], set_=update,
            where=table.c.as_of <= statement.excluded.as_of)
    return built


_SOURCE_UPSERTS: dict[str, Any] = {}
#: PostgreSQL: the results of one JSON document (``rows``)
_RESULTS_PG = sa.select(json_rows.recordset("rows", _RESULT_COLUMNS)).cte("results")
#: PostgreSQL: every result in one statement
_UPSERT_PG = _forward_only(postgresql.insert(limit_status_latest).from_select(
    [*(c.name for c in _RESULT_COLUMNS), "updated_at"],
    sa.select(*(_RESULTS_PG.c[c.name] for c in _RESULT_COLUMNS),
              sa.bindparam("updated_at", type_=UtcDateTime()))))
#: PostgreSQL: the same, and the stale results not among them deleted (the document is sent
#: and expanded once); answers the rows written
_UPSERT_PRUNE_PG = sa.select(sa.func.count()).select_from(
    _UPSERT_PG.returning(limit_status_latest.c.limit_id).cte("written")
).add_cte(limit_status_latest.delete().where(
    _stale(sa.bindparam("prune_before", type_=UtcDateTime())),
    ~sa.exists().where(_RESULTS_PG.c.limit_id == limit_status_latest.c.limit_id,
                       _RESULTS_PG.c.scope == limit_status_latest.c.scope)).cte("pruned"))
_METRIC_COLUMNS = [c for c in risk_metrics_latest.c if c.name != "as_of"]
_METRIC_ROWS = json_rows.recordset("rows", _METRIC_COLUMNS)
#: PostgreSQL: every metric in one statement, from one JSON document
_METRICS_PG = risk_metrics_latest.insert().from_select(
    [*(c.name for c in _METRIC_COLUMNS), "as_of"],
    sa.select(*(_METRIC_ROWS.c[c.name] for c in _METRIC_COLUMNS),
              sa.bindparam("as_of", type_=UtcDateTime())))
