"""Risk Monitor's own store on PostgreSQL or SQLite: alerts, outbox, risk state, audit.

``Storage.open(url)`` migrates the database (idempotent) and returns every repository on one
engine; the service and the Dagster resource each open one per process.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from risk_monitor.adapters.sql.alert_controls import SqlAlertControls
from risk_monitor.adapters.sql.alert_store import SqlAlertStore
from risk_monitor.adapters.sql.audit_log import AuditRecord, SqlAuditLog
from risk_monitor.adapters.sql.codec import Clock, utc_now
from risk_monitor.adapters.sql.compliance_store import ComplianceInterval, ComplianceStore
from risk_monitor.adapters.sql.config_versions import ConfigVersionStore
from risk_monitor.adapters.sql.dispatcher import BackoffPolicy, OutboxDispatcher
from risk_monitor.adapters.sql.engine import create_engine
from risk_monitor.adapters.sql.equity_store import EquityPoint, EquityStore
from risk_monitor.adapters.sql.migrate import current_revision, head_revision, migrate
from risk_monitor.adapters.sql.outbox import OutboxRepository, OutboxRow
from risk_monitor.adapters.sql.risk_state import LatestEvaluationStore, MetricValue

#: what callers import from the package (the rest from its modules)
__all__ = ["AuditRecord", "BackoffPolicy", "ComplianceInterval", "EquityPoint", "EquityStore",
           "MetricValue", "OutboxDispatcher", "OutboxRow", "Storage", "create_engine",
           "current_revision", "head_revision", "migrate"]


@dataclass(frozen=True)
class Storage:
    """Every repository over one engine."""

    engine: Engine
    alerts: SqlAlertStore
    outbox: OutboxRepository
    risk_state: LatestEvaluationStore
    compliance: ComplianceStore
    equity: EquityStore
    config_versions: ConfigVersionStore
    audit: SqlAuditLog
    controls: SqlAlertControls  # silences and acknowledgements

    @classmethod
    def open(cls, url: str, *, clock: Clock = utc_now) -> Storage:
        engine = create_engine(url)
        migrate(engine)
        return cls.on(engine, clock=clock)

    @classmethod
    def on(cls, engine: Engine, *, clock: Clock = utc_now) -> Storage:
        return cls(
            engine=engine,
            alerts=SqlAlertStore(engine, clock=clock),
            outbox=OutboxRepository(engine),
            risk_state=LatestEvaluationStore(engine, clock=clock),
            compliance=ComplianceStore(engine),
            equity=EquityStore(engine),
            config_versions=ConfigVersionStore(engine),
            audit=SqlAuditLog(engine),
            controls=SqlAlertControls(engine, clock=clock),
        )

    def close(self) -> None:
        self.engine.dispose()
