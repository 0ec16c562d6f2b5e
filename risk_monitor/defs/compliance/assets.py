"""Compliance status over time: the status timeline per (limit, scope) and a summary."""

from datetime import timedelta
from typing import Any

import dagster as dg
import pandas as pd

from risk_monitor import application
from risk_monitor.adapters.audit_anchors import anchor_metadata
from risk_monitor.defs.failures import surface_errors
from risk_monitor.defs.metadata import OWNERS, asset_code_version, md_table, utc_now
from risk_monitor.defs.resources import SettingsResource
from risk_monitor.defs.retries import STEP_RETRY
from risk_monitor.defs.risk.resources import RiskStoreResource
from risk_monitor.domain.limits import LimitConfig
from risk_monitor.domain.model import LimitResult, LimitStatus

CODE_VERSION = asset_code_version(__name__)

WINDOW = timedelta(hours=24)


@dg.asset(group_name="compliance", kinds={"sql"}, owners=OWNERS,
          code_version=CODE_VERSION, retry_policy=STEP_RETRY)
@surface_errors("compliance")
def compliance_status(context: dg.AssetExecutionContext, settings: SettingsResource,
                      risk_store: RiskStoreResource, limit_status: list[LimitResult],
                      limit_config: LimitConfig) -> dict[str, Any]:
    """Overall status (COMPLIANT / WARNING / BREACH / UNKNOWN), counts per status, and time in
    breach over the last 24 h per limit — the record a compliance reviewer reads."""
    cfg = settings.load()
    storage = risk_store.storage(cfg)
    summary = application.record_compliance(storage, limit_status)
    now = utc_now()
    # limits this document no longer has end their intervals (the service: at the change)
    storage.compliance.end_removed_limits(
        limit_status, at=max((r.as_of for r in limit_status), default=now),
        config_version=limit_config.version)
    seconds = storage.compliance.time_in_status(now - WINDOW, now)
    breach = pd.DataFrame(
        [{"limit_id": limit_id, "scope": scope,
          "breach_s": round(by[LimitStatus.BREACH], 1), "warn_s": round(by[LimitStatus.WARN], 1),
          "unknown_s": round(by[LimitStatus.UNKNOWN], 1)}
         for (limit_id, scope), by in sorted(seconds.items())
         if by[LimitStatus.BREACH] or by[LimitStatus.WARN] or by[LimitStatus.UNKNOWN]],
        columns=["limit_id", "scope", "breach_s", "warn_s", "unknown_s"])
    record = summary.as_dict()
    context.add_output_metadata({
        "status": summary.status.value,
        **{f"limits_{k}": v for k, v in record.items() if isinstance(v, int)},
        "time_in_breach_24h": dg.MetadataValue.md(md_table(breach)),
        # the audit chain's head, anchored outside our database (docs/audit.md)
        **anchor_metadata(storage.audit.head()),
    })
    return {**record, "time_in_status_24h": breach.to_dict(orient="records")}
