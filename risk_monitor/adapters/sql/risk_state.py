"""The latest risk picture: limit results, named risk metrics and source coverage.

The service's API and the Prometheus collector read these tables, so both processes that
evaluate risk (Dagster runs and the service's hot path) publish to one place. Limit results
only move forward in time: a slower writer with an older evaluation never overwrites a newer
one. A metrics snapshot replaces the previous one atomically (per metric name), so a scrape
never sees half of one evaluation and half of the next.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from risk_monitor.adapters.sql import codec
from risk_monitor.adapters.sql.engine import dialect_insert, read_only, write_tx
from risk_monitor.adapters.sql.schema import (
    limit_status_latest,
    risk_metrics_latest,
    source_status_latest,
)
from risk_monitor.domain.model import LimitResult, SourceStatus

SOURCE = "risk_state"
_METRIC_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@dataclass(frozen=True)
class MetricValue:
    """One named risk figure, e.g. ``exposure_usd{venue="binance",asset="BTC"}``.

    ``name`` has no prefix (the collector adds ``risk_monitor_``); ``value`` None means unknown.
    """

    name: str
    value: float | None
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _METRIC_NAME.match(self.name):
            raise ValueError(f"metric name {self.name!r} is not a Prometheus name")
        bad = [k for k in self.labels if not _LABEL_NAME.match(k) or k.startswith("__")]
        if bad:
            raise ValueError(f"label names {bad} of {self.name!r} are not Prometheus names")

    @property
    def labels_key(self) -> str:
        return json.dumps({k: str(v) for k, v in self.labels.items()}, sort_keys=True,
                          separators=(",", ":"))


# -- the figures an evaluation stores in ``risk_metrics_latest`` (writers' and readers' contract) -
#: unlabelled portfolio figures
EQUITY_METRIC = "portfolio_equity_usd"
GROSS_METRIC = "portfolio_gross_usd"
NET_METRIC = "portfolio_net_usd"
DAILY_PNL_METRIC = "portfolio_daily_pnl_usd"
UNREALIZED_PNL_METRIC = "portfolio_unrealized_pnl_usd"
DRAWDOWN_METRIC = "portfolio_drawdown_pct"
LEVERAGE_METRIC = "portfolio_leverage"
#: per level: labels ``{level="venue", venue=...}`` or ``{level="asset", asset=...}``
EXPOSURE_GROSS_METRIC = "exposure_gross_usd"
EXPOSURE_NET_METRIC = "exposure_net_usd"
#: labels ``{venue=...}``: balances + unrealized P&L at the venue (counterparty exposure)
VENUE_EQUITY_METRIC = "venue_equity_usd"
#: every name an evaluation writes (pass as ``names`` to :meth:`RiskStateStore.replace_metrics`)
EVALUATION_METRIC_NAMES: tuple[str, ...] = (
    EQUITY_METRIC, GROSS_METRIC, NET_METRIC, DAILY_PNL_METRIC, UNREALIZED_PNL_METRIC,
    DRAWDOWN_METRIC, LEVERAGE_METRIC, EXPOSURE_GROSS_METRIC, EXPOSURE_NET_METRIC,
    VENUE_EQUITY_METRIC,
)


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


class RiskStateStore:
    """Latest limit results, metrics snapshot and source status (see module docstring)."""

    def __init__(self, engine: Engine, *, clock: codec.Clock = codec.utc_now) -> None:
        self.engine = engine
        self._clock = clock

    # -- limit results --------------------------------------------------------------------------
    def upsert_limit_results(self, results: Sequence[LimitResult], *,
                             prune_before: datetime | None = None,
                             conn: Connection | None = None) -> int:
        """Store results newer than what is stored; returns rows written.

        ``prune_before``: a full evaluation passes its ``as_of`` so results of limits that are no
        longer configured (not re-evaluated since) disappear.
        """
        if conn is None:
            with write_tx(self.engine, source=SOURCE) as own:
                return self.upsert_limit_results(results, prune_before=prune_before, conn=own)
        now = self._clock()
        written = 0
        table = limit_status_latest
        for result in results:
            values = {**codec.limit_result_values(result), "updated_at": now}
            statement = dialect_insert(conn, table).values(**values)
            update = {k: statement.excluded[k] for k in values if k not in ("limit_id", "scope")}
            statement = statement.on_conflict_do_update(
                index_elements=["limit_id", "scope"], set_=update,
                where=table.c.as_of <= statement.excluded.as_of,
            )
            written += conn.execute(statement).rowcount
        if prune_before is not None:
            keep = {(r.limit_id, r.scope) for r in results}
            stale = conn.execute(
                sa.select(table.c.limit_id, table.c.scope).where(table.c.as_of < prune_before)
            ).all()
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
                        names: Iterable[str] | None = None,
                        conn: Connection | None = None) -> int:
        """Replace the stored values of ``names`` (default: every name) with ``metrics``."""
        items = list(metrics)
        if conn is None:
            with write_tx(self.engine, source=SOURCE) as own:
                return self.replace_metrics(items, as_of, names=names, conn=own)
        replaced = set(names) if names is not None else None
        if replaced is not None:
            outside = {m.name for m in items} - replaced
            if outside:
                raise ValueError(f"metrics {sorted(outside)} are not among the replaced names")
        delete = risk_metrics_latest.delete()
        if replaced is not None:
            delete = delete.where(risk_metrics_latest.c.name.in_(sorted(replaced)))
        conn.execute(delete)
        unique = {(m.name, m.labels_key): m for m in items}  # the last value of a key wins
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
    def record_sources(self, statuses: Sequence[SourceStatus], *,
                       conn: Connection | None = None) -> None:
        """Keep the last attempt per source and when it last succeeded (data age)."""
        if conn is None:
            with write_tx(self.engine, source=SOURCE) as own:
                self.record_sources(statuses, conn=own)
            return
        table = source_status_latest
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
                index_elements=["key"], set_=update, where=table.c.as_of <= statement.excluded.as_of,
            ))

    def sources(self) -> list[StoredSource]:
        with read_only(self.engine, source=SOURCE) as conn:
            rows = conn.execute(sa.select(source_status_latest)
                                .order_by(source_status_latest.c.key))
            return [StoredSource(**dict(r._mapping)) for r in rows]
