"""Prometheus metrics read from the database at scrape time (a custom Collector).

Dagster runs are separate, short-lived processes: counters they kept in memory would die with
them, and the service would disagree with them. So limit utilisation, status, exposures, P&L,
compliance, alert counts and alert latency all come from the shared store, one cheap query per
family, and every process that serves ``/metrics`` shows the same numbers. The alert counters
are counts of outbox rows (raised = enqueued, notified = sent, failed = failed for good); they
only grow as long as outbox rows are kept, which is why the outbox is never purged.

If the database cannot be read, the scrape still succeeds with
``risk_monitor_state_store_up 0`` so the outage is itself visible (and alertable).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from risk_monitor.adapters.sql.audit_log import read_head
from risk_monitor.adapters.sql.codec import Clock, utc_now
from risk_monitor.adapters.sql.engine import read_only
from risk_monitor.adapters.sql.schema import (
    compliance_intervals,
    limit_status_latest,
    outbox,
    risk_metrics_latest,
    source_status_latest,
)
from risk_monitor.domain.model import LimitStatus, worst_status
from risk_monitor.platform.logging import get_logger

log = get_logger(__name__)

PREFIX = "risk_monitor"
#: alert latency buckets, seconds: the target is seconds, an outage shows up in the long tail
LATENCY_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                                      120.0, 300.0, 900.0, 3600.0)
#: families this collector always yields (without the prefix): stored metrics may not reuse them
RESERVED_NAMES = frozenset({
    "limit_utilisation", "limit_value", "limit_breach_level", "limit_status",
    "last_evaluation_timestamp_seconds", "compliance_status", "limits_in_status", "alerts",
    "alerts_total", "outbox_pending", "outbox_oldest_pending_age_seconds",
    "alert_latency_seconds", "source_last_fetch_ok", "data_age_seconds", "state_store_up",
    "state_scrape_duration_seconds", "audit_chain_head",
})
_STATUSES = tuple(s.value for s in LimitStatus)


class SecondsBetween(FunctionElement[float]):
    """``end - start`` in seconds, for PostgreSQL and SQLite."""

    type = sa.Float()
    name = "seconds_between"
    inherit_cache = True


@compiles(SecondsBetween, "postgresql")
def _seconds_between_pg(element: SecondsBetween, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = list(element.clauses)
    return (f"EXTRACT(EPOCH FROM ({compiler.process(end, **kw)} - "
            f"{compiler.process(start, **kw)}))")


@compiles(SecondsBetween, "sqlite")
def _seconds_between_sqlite(element: SecondsBetween, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = list(element.clauses)
    return (f"((julianday({compiler.process(end, **kw)}) - "
            f"julianday({compiler.process(start, **kw)})) * 86400.0)")


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


class StoredMetricsCollector(Collector):
    """Yields the risk and alerting metric families from the store at each scrape."""

    def __init__(self, engine: Engine, *, clock: Clock = utc_now) -> None:
        self.engine = engine
        self.clock = clock

    def describe(self) -> Iterable[Metric]:
        return []  # names vary with the stored metrics; never query the database to register

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        families: list[Metric] = []
        up = 1.0
        try:
            with read_only(self.engine, source="prometheus") as conn:
                families.extend(self._limits(conn))
                families.extend(self._risk_metrics(conn))
                families.extend(self._compliance(conn))
                families.extend(self._alerts(conn))
                families.append(self._latency(conn))
                families.extend(self._sources(conn))
                families.append(self._audit_head(conn))
        except Exception as exc:  # a scrape must show the outage, not fail
            up = 0.0
            families = []
            log.error("metrics scrape could not read the store", error=str(exc),
                      error_class=type(exc).__name__)
        yield from families
        yield GaugeMetricFamily(f"{PREFIX}_state_store_up",
                                "1 when the risk state store answered this scrape.", value=up)
        yield GaugeMetricFamily(f"{PREFIX}_state_scrape_duration_seconds",
                                "Time spent reading the store for this scrape.",
                                value=time.perf_counter() - started)

    # -- families -------------------------------------------------------------------------------
    def _limits(self, conn: Connection) -> list[Metric]:
        t = limit_status_latest
        rows = conn.execute(sa.select(t.c.limit_id, t.c.limit_kind, t.c.scope, t.c.status,
                                      t.c.value, t.c.breach_level, t.c.utilisation, t.c.as_of)
                            .order_by(t.c.limit_id, t.c.scope)).all()
        labels = ["limit_id", "limit_kind", "scope"]
        utilisation = GaugeMetricFamily(f"{PREFIX}_limit_utilisation",
                                        "Measured value / breach level (NaN when UNKNOWN).",
                                        labels=labels)
        value = GaugeMetricFamily(f"{PREFIX}_limit_value",
                                  "Measured value of the limit (NaN when UNKNOWN).", labels=labels)
        breach = GaugeMetricFamily(f"{PREFIX}_limit_breach_level", "Breach level of the limit.",
                                   labels=labels)
        status = GaugeMetricFamily(f"{PREFIX}_limit_status",
                                   "1 for the current status of each limit and scope.",
                                   labels=["limit_id", "scope", "status"])
        latest = 0.0
        for r in rows:
            key = [r.limit_id, r.limit_kind, r.scope]
            utilisation.add_metric(key, _float(r.utilisation))
            value.add_metric(key, _float(r.value))
            breach.add_metric(key, _float(r.breach_level))
            for name in _STATUSES:
                status.add_metric([r.limit_id, r.scope, name], 1.0 if r.status == name else 0.0)
            latest = max(latest, r.as_of.timestamp())
        evaluated = GaugeMetricFamily(f"{PREFIX}_last_evaluation_timestamp_seconds",
                                      "Time of the newest stored limit evaluation.",
                                      value=latest if rows else math.nan)
        return [utilisation, value, breach, status, evaluated]

    def _risk_metrics(self, conn: Connection) -> list[Metric]:
        t = risk_metrics_latest
        rows = conn.execute(sa.select(t.c.name, t.c.labels, t.c.value)
                            .order_by(t.c.name, t.c.labels_key)).all()
        by_name: dict[str, list[Any]] = defaultdict(list)
        for r in rows:
            by_name[r.name].append(r)
        families: list[Metric] = []
        for name, items in by_name.items():
            if name in RESERVED_NAMES:
                log.warning("stored risk metric shadows a built-in family; skipped", name=name)
                continue
            label_names = sorted({k for r in items for k in (r.labels or {})})
            family = GaugeMetricFamily(f"{PREFIX}_{name}",
                                       f"Risk figure '{name}' from the latest evaluation.",
                                       labels=label_names)
            for r in items:
                labels = r.labels or {}
                family.add_metric([str(labels.get(k, "")) for k in label_names], _float(r.value))
            families.append(family)
        return families

    def _compliance(self, conn: Connection) -> list[Metric]:
        t = compliance_intervals
        counts = dict.fromkeys(LimitStatus, 0)
        for status_value, count in conn.execute(
            sa.select(t.c.status, sa.func.count()).where(t.c.until.is_(None))
            .group_by(t.c.status)
        ):
            counts[LimitStatus(status_value)] = int(count)
        worst = worst_status(s for s in counts if counts[s])
        overall = GaugeMetricFamily(
            f"{PREFIX}_compliance_status",
            "1 for the desk's overall compliance status (worst limit; UNKNOWN if none).",
            labels=["status"])
        in_status = GaugeMetricFamily(f"{PREFIX}_limits_in_status",
                                      "Number of (limit, scope) pairs currently in each status.",
                                      labels=["status"])
        for status in LimitStatus:
            overall.add_metric([status.value], 1.0 if status is worst else 0.0)
            in_status.add_metric([status.value], float(counts[status]))
        return [overall, in_status]

    def _alerts(self, conn: Connection) -> list[Metric]:
        t = outbox
        totals: dict[tuple[str, str], float] = defaultdict(float)
        severities: set[str] = {"info", "warning", "critical"}
        for severity, status, count in conn.execute(
            sa.select(t.c.severity, t.c.status, sa.func.count()).group_by(t.c.severity,
                                                                          t.c.status)
        ):
            severities.add(severity)
            totals[(severity, "raised")] += count
            if status == "sent":
                totals[(severity, "notified")] += count
            elif status in ("failed", "suppressed"):
                totals[(severity, status)] += count
        alerts = CounterMetricFamily(f"{PREFIX}_alerts",
                                     "Alert notifications by outcome: raised (enqueued), "
                                     "notified (delivered), failed (given up), suppressed "
                                     "(held back by a silence or an acknowledgement).",
                                     labels=["severity", "outcome"])
        for severity in sorted(severities):
            for outcome in ("raised", "notified", "failed", "suppressed"):
                alerts.add_metric([severity, outcome], totals[(severity, outcome)])
        backlog = conn.execute(
            sa.select(sa.func.count(), sa.func.min(t.c.created_at))
            .where(t.c.status.in_(("pending", "sending")))
        ).one()
        pending = GaugeMetricFamily(f"{PREFIX}_outbox_pending",
                                    "Notifications waiting for delivery.", value=backlog[0])
        oldest = backlog[1]
        age = (self.clock() - oldest).total_seconds() if oldest is not None else 0.0
        oldest_age = GaugeMetricFamily(f"{PREFIX}_outbox_oldest_pending_age_seconds",
                                       "Age of the oldest undelivered notification (0 if none).",
                                       value=max(0.0, age))
        return [alerts, pending, oldest_age]

    def _latency(self, conn: Connection) -> Metric:
        t = outbox
        stages = {
            "detect": (SecondsBetween(t.c.source_event_time, t.c.detected_at),
                       t.c.source_event_time.is_not(None)),
            "notify": (SecondsBetween(t.c.detected_at, t.c.notified_at),
                       t.c.notified_at.is_not(None)),
            "end_to_end": (SecondsBetween(t.c.source_event_time, t.c.notified_at),
                           sa.and_(t.c.source_event_time.is_not(None),
                                   t.c.notified_at.is_not(None))),
        }
        columns: list[Any] = []
        for name, (latency, present) in stages.items():
            clamped = sa.case((latency < 0, 0.0), else_=latency)
            columns.append(sa.func.sum(sa.case((present, 1), else_=0)).label(f"{name}_count"))
            columns.append(sa.func.sum(sa.case((present, clamped), else_=0.0))
                           .label(f"{name}_sum"))
            for i, bound in enumerate(LATENCY_BUCKETS):
                columns.append(sa.func.sum(sa.case((sa.and_(present, latency <= bound), 1),
                                                   else_=0)).label(f"{name}_b{i}"))
        row = conn.execute(sa.select(*columns).select_from(t)).one()._mapping
        family = HistogramMetricFamily(
            f"{PREFIX}_alert_latency_seconds",
            "Alert latency by stage: detect = source event to detection, notify = detection to "
            "delivery, end_to_end = source event to delivery.",
            labels=["stage"])
        for name in stages:
            count = float(row[f"{name}_count"] or 0)
            buckets = [(repr(float(bound)), float(row[f"{name}_b{i}"] or 0))
                       for i, bound in enumerate(LATENCY_BUCKETS)]
            buckets.append(("+Inf", count))
            family.add_metric([name], buckets, sum_value=float(row[f"{name}_sum"] or 0.0))
        return family

    def _sources(self, conn: Connection) -> list[Metric]:
        t = source_status_latest
        rows = conn.execute(sa.select(t).order_by(t.c.key)).all()
        labels = ["kind", "venue", "account"]
        # not ``source_up``: the collecting process exports that name (labels kind, source)
        # itself, and one exposition must never carry two families of one name
        up = GaugeMetricFamily(f"{PREFIX}_source_last_fetch_ok",
                               "1 when the last stored fetch from the source succeeded "
                               "(from the shared store, any process).", labels=labels)
        age = GaugeMetricFamily(f"{PREFIX}_data_age_seconds",
                                "Seconds since the source last delivered data (NaN if never).",
                                labels=labels)
        now = self.clock()
        for r in rows:
            key = [r.kind, r.venue, r.account]
            up.add_metric(key, 1.0 if r.ok else 0.0)
            age.add_metric(key, max(0.0, (now - r.last_ok_at).total_seconds())
                           if r.last_ok_at is not None else math.nan)
        return [up, age]

    def _audit_head(self, conn: Connection) -> Metric:
        """The audit chain's head: Prometheus keeps its history, an anchor outside our database
        that ``audit verify`` findings can be checked against (docs/audit.md)."""
        head = read_head(conn)
        family = GaugeMetricFamily(f"{PREFIX}_audit_chain_head",
                                   "Id of the newest audit entry, labelled with its hash.",
                                   labels=["hash"])
        family.add_metric([head.hash], float(head.id))
        return family


def register_collector(engine: Engine, *,
                       registry: CollectorRegistry = REGISTRY) -> StoredMetricsCollector:
    """Create the collector and register it (the service calls this once at start)."""
    collector = StoredMetricsCollector(engine)
    registry.register(collector)
    return collector
