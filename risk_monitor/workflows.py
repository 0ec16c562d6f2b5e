"""Use cases shared by the Dagster assets and the long-running service (the service layer).

Each function is one step of the risk cycle written once: build the snapshot an evaluation
reads, persist what an evaluation found, raise alerts under the store's lock, record the
compliance timeline. The Dagster assets call them with a run context, the service's hot path
with its own, so both data paths write the same truth in the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from risk_monitor.adapters.sql import EquityPoint, MetricValue, Storage
from risk_monitor.adapters.sql import risk_state as rs
from risk_monitor.adapters.sql.audit_hooks import seal_alert_transaction
from risk_monitor.domain.aggregation import RiskState
from risk_monitor.domain.alerts import AlertPlan, AlertPolicy, plan_alerts
from risk_monitor.domain.compliance import ComplianceSummary, compliance_summary
from risk_monitor.domain.engine import RiskSnapshot
from risk_monitor.domain.model import Collected, LimitResult, Notification, SourceKind
from risk_monitor.domain.pnl import utc_day_start
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.settings import Settings

log = get_logger(__name__)

PORTFOLIO_SCOPE = "portfolio"


def merge_collected(*parts: Collected) -> Collected:
    """One dataset from several sources (exchange + custodian balances), coverage kept."""
    frames = [p.frame for p in parts if len(p.frame)]
    frame = pd.concat(frames, ignore_index=True) if frames else parts[0].frame.iloc[0:0]
    return Collected(frame=frame, sources=tuple(s for p in parts for s in p.sources))


def build_snapshot(*, positions: Collected, balances: Collected, prices: Collected,
                   now: datetime, settings: Settings, storage: Storage) -> RiskSnapshot:
    """The inputs of one evaluation, with start-of-day and peak equity from the store."""
    start = storage.equity.start_of_day(PORTFOLIO_SCOPE, utc_day_start(now).date())
    peak = storage.equity.peak(PORTFOLIO_SCOPE)
    expected = tuple(dict.fromkeys([v.id for v in settings.venues]
                                   + [c.id for c in settings.custodians]))
    return RiskSnapshot(
        positions=positions,
        balances=balances,
        prices=prices,
        now=now,
        start_of_day_equity=start.equity if start else None,
        peak_equity=peak.equity if peak else None,
        max_age_s=settings.market_data.max_age_s,
        max_future_skew_s=settings.market_data.max_future_skew_s,
        expected_venues=expected,
        source_max_age_s=source_budgets(settings),
    )


def source_budgets(settings: Settings) -> dict[SourceKind, float]:
    """Freshness budget of each kind of source status (``market_data.*max_age_s``)."""
    md = settings.market_data
    return {SourceKind.MARKET: md.max_age_s, SourceKind.EXCHANGE: md.exchange_max_age_s,
            SourceKind.CUSTODIAN: md.custody_max_age_s}


def record_equity(storage: Storage, state: RiskState, at: datetime) -> None:
    """Remember portfolio equity (start of day, peak, drawdown need its history)."""
    equity = state.portfolio.equity_usd
    if state.portfolio.known and math.isfinite(equity):
        storage.equity.record([EquityPoint(scope=PORTFOLIO_SCOPE, at=at, equity=equity)])


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def evaluation_metrics(state: RiskState, exposures: pd.DataFrame) -> list[MetricValue]:
    """What the service's ``/metrics``, risk API and dashboard read about an evaluation.

    Unknown figures stay None, never 0: a failed venue's positions are absent from the P&L
    frame, so a plain sum would look complete (fail closed).
    """
    p = state.portfolio
    unrealized: float | None = None
    if not any(problem.affects_positions for problem in state.problems):
        pnl = state.pnl
        unrealized = _finite(pnl["unrealized_pnl_usd"].sum()) if len(pnl) else 0.0
        if len(pnl) and not bool(pnl["ok"].all()):
            unrealized = None
    metrics = [
        MetricValue(rs.EQUITY_METRIC, _finite(p.equity_usd)),
        MetricValue(rs.DAILY_PNL_METRIC, _finite(p.daily_pnl_usd)),
        MetricValue(rs.DRAWDOWN_METRIC, _finite(p.drawdown_pct)),
        MetricValue(rs.UNREALIZED_PNL_METRIC, unrealized),
    ]
    portfolio = exposures[exposures["level"] == "portfolio"]
    if len(portfolio):
        top = portfolio.iloc[0]
        metrics += [
            MetricValue(rs.GROSS_METRIC, _finite(top["gross_usd"])),
            MetricValue(rs.NET_METRIC, _finite(top["net_usd"])),
            MetricValue(rs.LEVERAGE_METRIC, _finite(top["leverage"])),
        ]
    for level in ("venue", "asset"):
        for ex in exposures[exposures["level"] == level].itertuples(index=False):
            key = str(getattr(ex, level))
            labels = {"level": level, level: key}
            metrics += [
                MetricValue(rs.EXPOSURE_GROSS_METRIC, _finite(ex.gross_usd), labels),
                MetricValue(rs.EXPOSURE_NET_METRIC, _finite(ex.net_usd), labels),
            ]
            if level == "venue":
                metrics.append(MetricValue(rs.VENUE_EQUITY_METRIC, _finite(ex.equity_usd),
                                           {"venue": key}))
    return metrics


def persist_evaluation(storage: Storage, *, state: RiskState, exposures: pd.DataFrame,
                       results: Sequence[LimitResult], as_of: datetime) -> None:
    """Latest limit results, metrics and source coverage, for the service and Prometheus."""
    storage.risk_state.upsert_limit_results(results, prune_before=as_of)
    storage.risk_state.replace_metrics(evaluation_metrics(state, exposures), as_of,
                                       names=rs.EVALUATION_METRIC_NAMES)
    storage.risk_state.record_sources(state.sources)
    record_equity(storage, state, as_of)


def alert_policy(settings: Settings) -> AlertPolicy:
    a = settings.alerts
    return AlertPolicy(group_wait_s=a.group_wait_s, repeat_interval_s=a.repeat_interval_s,
                       send_resolved=a.send_resolved, resolve_missing=True,
                       keep_firing_for_s=a.keep_firing_for_s, hysteresis=a.hysteresis,
                       unknown_for_s=a.unknown_for_s)


@dataclass(frozen=True)
class RaisedAlerts:
    plan: AlertPlan
    enqueued: int


def raise_alerts(storage: Storage, results: Sequence[LimitResult], *, now: datetime,
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
        # audit hook (issue 11): entries sealing the new notifications and changed states
        seal_alert_transaction(tx.connection, before=before, states=plan.states,
                               notifications=plan.notifications, context=context, at=now)
    return RaisedAlerts(plan=plan, enqueued=applied.enqueued)


def record_compliance(storage: Storage, results: Sequence[LimitResult]) -> ComplianceSummary:
    """Extend the status timeline and summarise the desk's compliance now."""
    storage.compliance.record(results)
    return compliance_summary(results)


def notification_frame(notifications: Sequence[Notification]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"kind": n.kind.value, "status": n.status.value, "severity": n.severity.value,
          "limit_id": n.limit_id, "scope": n.scope, "value": n.value,
          "utilisation_pct": None if n.utilisation is None else n.utilisation * 100,
          "correlation_id": n.correlation_id, "idempotency_key": n.idempotency_key}
         for n in notifications],
        columns=["kind", "status", "severity", "limit_id", "scope", "value", "utilisation_pct",
                 "correlation_id", "idempotency_key"],
    )
