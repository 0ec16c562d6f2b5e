"""Use cases shared by the Dagster assets and the long-running service (no Dagster, no adapter).

Each function is one step of the risk cycle written once; the Dagster assets call them with a
run context, the service's hot path with its own, so both paths write the same truth.
"""

from risk_monitor.application.alerting import alert_policy, raise_alerts, record_compliance
from risk_monitor.application.evaluation import (
    build_snapshot,
    evaluation_metrics,
    merge_collected,
    persist_evaluation,
    source_budgets,
)

__all__ = ["alert_policy", "build_snapshot", "evaluation_metrics", "merge_collected",
           "persist_evaluation", "raise_alerts", "record_compliance", "source_budgets"]
