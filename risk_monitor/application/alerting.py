"""Use cases of what an evaluation found: raise alerts, extend the compliance timeline.

The store's lock makes the Dagster run and the service's hot path agree on who notifies.
Only ``risk_monitor.ports`` is used here, never an adapter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from risk_monitor.domain.alerts import AlertPlan, AlertPolicy, plan_alerts
from risk_monitor.domain.compliance import ComplianceSummary, compliance_summary
from risk_monitor.domain.model import LimitResult
from risk_monitor.platform.settings import Settings
from risk_monitor.ports import RiskStore


def alert_policy(settings: Settings) -> AlertPolicy:
    """The alert lifecycle's policy from ``settings.alerts``."""
    a = settings.alerts
    return AlertPolicy(group_wait_s=a.group_wait_s, repeat_interval_s=a.repeat_interval_s,
                       send_resolved=a.send_resolved, resolve_missing=True,
                       keep_firing_for_s=a.keep_firing_for_s, hysteresis=a.hysteresis,
                       unknown_for_s=a.unknown_for_s, warn_for_s=a.warn_for_s)


@dataclass(frozen=True)
class RaisedAlerts:
    plan: AlertPlan
    enqueued: int


def raise_alerts(storage: RiskStore, results: Sequence[LimitResult], *, now: datetime,
                 policy: AlertPolicy, context: Mapping[str, Any]) -> RaisedAlerts:
    """Plan transitions under the store's lock and enqueue notifications atomically.

    The lock makes the Dagster run and the service's hot path agree: whichever evaluates a
    series first notifies, the other sees the new state and stays quiet. Every notification is
    written to the audit log with the data behind it (run, input data versions, limit
    configuration version, code version).
    """
    fingerprints = [r.fingerprint for r in results]
    if policy.resolve_missing:
        # series of limits no longer evaluated (removed, scope vanished) resolve too
        known = set(fingerprints)
        fingerprints += [s.fingerprint for s in storage.alerts.all_states()
                         if s.fingerprint not in known]
    with storage.alerts.locked(fingerprints) as tx:
        before = dict(tx.states)
        plan = plan_alerts(tx.states, results, now, policy, context=context)
        applied = tx.apply(plan.states, plan.notifications)
        # audit (issue 11): entries sealing the new notifications and changed states
        tx.seal(before=before, states=plan.states, notifications=plan.notifications,
                context=context, at=now)
    return RaisedAlerts(plan=plan, enqueued=applied.enqueued)


def record_compliance(storage: RiskStore, results: Sequence[LimitResult]) -> ComplianceSummary:
    """Extend the status timeline and summarise the desk's compliance now."""
    storage.compliance.record(results)
    return compliance_summary(results)


