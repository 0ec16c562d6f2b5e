"""Alerts: lifecycle transitions planned under the store's lock, delivered via the outbox."""

from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg
import pandas as pd

from risk_monitor import application
from risk_monitor.defs.failures import surface_errors
from risk_monitor.defs.metadata import OWNERS, asset_code_version, md_table, utc_now
from risk_monitor.defs.resources import SettingsResource
from risk_monitor.defs.retries import STEP_RETRY
from risk_monitor.defs.risk.resources import RiskStoreResource
from risk_monitor.defs.risk_support import alert_context
from risk_monitor.domain.limits import LimitConfig
from risk_monitor.domain.model import LimitResult, Notification

CODE_VERSION = asset_code_version(__name__)

#: the inputs whose data versions every alert records (lineage for the compliance reviewer)
LINEAGE_INPUTS = ("market_prices", "exchange_positions", "exchange_balances",
                  "custodian_balances", "limit_config")

ALERT_CHECKS = [dg.AssetCheckSpec(
    "alerts_are_delivered", asset="risk_alerts", blocking=False,
    description="Nothing in the outbox failed for good and nothing waits for a retry. A failure "
                "means Slack is down or refusing us: alerts are kept and retried, not lost.")]


@dg.asset(group_name="compliance", kinds={"slack", "sql"}, owners=OWNERS,
          check_specs=ALERT_CHECKS,
          op_tags={"dagster/priority": "1"},  # before compliance_status: Slack hears sooner
          code_version=CODE_VERSION, retry_policy=STEP_RETRY)
@surface_errors("alerts")
def risk_alerts(context: dg.AssetExecutionContext, settings: SettingsResource,
                risk_store: RiskStoreResource, limit_status: list[LimitResult],
                limit_config: LimitConfig) -> Iterator[Any]:
    """Alerts raised by this evaluation (FIRING, ESCALATED, REPEAT, RESOLVED ...).

    Planned under the alert store's lock (the service's hot path may evaluate the same limits),
    enqueued in the durable outbox with this run's lineage, then delivered at once; a Slack
    outage leaves them queued for the next dispatch, never lost.
    """
    cfg = settings.load()
    storage = risk_store.storage(cfg)
    lineage = alert_context(context, cfg, LINEAGE_INPUTS, limit_config.version)
    raised = application.raise_alerts(storage, limit_status, now=utc_now(),
                                    policy=application.alert_policy(cfg), context=lineage)
    delivered = risk_store.dispatcher(cfg).dispatch_once(cfg.alerts.outbox_batch_size)
    outbox = storage.outbox.counts()
    table = notification_frame(raised.plan.notifications)
    yield dg.Output(table, metadata={
        "raised": len(raised.plan.notifications),
        "enqueued": raised.enqueued,
        "delivered": delivered.sent,
        "retry_scheduled": delivered.retried,
        "failed": delivered.failed,
        "outbox": dg.MetadataValue.json(outbox),
        "notifications": dg.MetadataValue.md(md_table(table)),
    })
    yield dg.AssetCheckResult(
        check_name="alerts_are_delivered", asset_key="risk_alerts",
        passed=outbox["failed"] == 0 and delivered.retried == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"failed_for_good": outbox["failed"], "pending": outbox["pending"],
                  "retry_scheduled": delivered.retried})


def notification_frame(notifications: Sequence[Notification]) -> pd.DataFrame:
    """The notifications of a run as a table (Dagster metadata)."""
    return pd.DataFrame(
        [{"kind": n.kind.value, "status": n.status.value, "severity": n.severity.value,
          "limit_id": n.limit_id, "scope": n.scope, "value": n.value,
          "utilisation_pct": None if n.utilisation is None else n.utilisation * 100,
          "correlation_id": n.correlation_id, "idempotency_key": n.idempotency_key}
         for n in notifications],
        columns=["kind", "status", "severity", "limit_id", "scope", "value", "utilisation_pct",
                 "correlation_id", "idempotency_key"],
    )
