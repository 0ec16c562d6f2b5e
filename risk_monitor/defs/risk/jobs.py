"""The risk jobs and the schedule that keeps evaluating when no market data arrives.

The jobs take the executor the deployment configured (``risk_monitor.defs.executors``,
in-process by default) from the code location's ``Definitions``.
"""

import dagster as dg

from risk_monitor.defs.risk.automation import AUTOMATION

RISK_GROUPS = ("risk", "compliance")

risk_cycle = dg.define_asset_job(
    "risk_cycle",
    selection=dg.AssetSelection.groups("collection", *RISK_GROUPS),
    description="Collect positions, balances and prices, evaluate limits, alert, record "
                "compliance — the whole loop, one run.",
    tags={"team": "risk"},
)

risk_evaluation = dg.define_asset_job(
    "risk_evaluation",
    selection=dg.AssetSelection.groups(*RISK_GROUPS),
    description="Re-evaluate limits, alerts and compliance on the latest collected data.",
    tags={"team": "risk"},
)

# Fail closed even when the stream is silent: a stale venue must turn UNKNOWN and alert, and
# only an evaluation can notice. One cycle a minute bounds how long the monitor can be blind.
risk_cycle_every_minute = dg.ScheduleDefinition(
    name="risk_cycle_every_minute",
    job=risk_cycle,
    cron_schedule="* * * * *",
    default_status=AUTOMATION.schedule_status,
    description="Evaluate at least once a minute, whatever the market data does. "
                f"At start: {AUTOMATION.reason}.",
)
