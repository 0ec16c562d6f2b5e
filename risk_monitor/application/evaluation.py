"""Use cases of one evaluation: build its snapshot, persist what it found.

Both data paths call these (the Dagster ``risk_cycle`` assets and the service's hot path), so
they read the same inputs and write the same truth. They reach the world through
``risk_monitor.ports`` only: no adapter is imported here (the architecture test checks it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

import pandas as pd

from risk_monitor.domain import figures as fig
from risk_monitor.domain.aggregation import PreparedInputs
from risk_monitor.domain.engine import RiskSnapshot
from risk_monitor.domain.figures import EquityPoint, MetricValue, finite
from risk_monitor.domain.model import Collected, LimitResult, SourceKind
from risk_monitor.domain.pnl import utc_day_start
from risk_monitor.domain.scopes import PORTFOLIO_KEY
from risk_monitor.platform.settings import Settings
from risk_monitor.ports import RiskStore


def merge_collected(*parts: Collected) -> Collected:
    """One dataset from several sources (exchange + custodian balances), coverage kept."""
    frames = [p.frame for p in parts if len(p.frame)]
    frame = pd.concat(frames, ignore_index=True) if frames else parts[0].frame.iloc[0:0]
    return Collected(frame=frame, sources=tuple(s for p in parts for s in p.sources))


def build_snapshot(*, positions: Collected, balances: Collected, prices: Collected,
                   now: datetime, settings: Settings, storage: RiskStore) -> RiskSnapshot:
    """The inputs of one evaluation, with start-of-day and peak equity from the store."""
    start = storage.equity.start_of_day(PORTFOLIO_KEY, utc_day_start(now).date())
    peak = storage.equity.peak(PORTFOLIO_KEY)
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


def record_equity(storage: RiskStore, state: PreparedInputs, at: datetime) -> None:
    """Remember portfolio equity (start of day, peak, drawdown need its history)."""
    equity = state.portfolio.equity_usd
    if state.portfolio.known and math.isfinite(equity):
        storage.equity.record([EquityPoint(scope=PORTFOLIO_KEY, at=at, equity=equity)])


def evaluation_metrics(state: PreparedInputs, exposures: pd.DataFrame) -> list[MetricValue]:
    """What the service's ``/metrics``, risk API and dashboard read about an evaluation.

    Unknown figures stay None, never 0: a failed venue's positions are absent from the P&L
    frame, so a plain sum would look complete (fail closed).
    """
    p = state.portfolio
    unrealized: float | None = None
    if not any(problem.affects_positions for problem in state.problems):
        pnl = state.pnl
        unrealized = finite(pnl["unrealized_pnl_usd"].sum()) if len(pnl) else 0.0
        if len(pnl) and not bool(pnl["ok"].all()):
            unrealized = None
    metrics = [
        MetricValue(fig.EQUITY_METRIC, finite(p.equity_usd)),
        MetricValue(fig.DAILY_PNL_METRIC, finite(p.daily_pnl_usd)),
        MetricValue(fig.DRAWDOWN_METRIC, finite(p.drawdown_pct)),
        MetricValue(fig.UNREALIZED_PNL_METRIC, unrealized),
    ]
    portfolio = exposures[exposures["level"] == "portfolio"]
    if len(portfolio):
        top = portfolio.iloc[0]
        metrics += [
            MetricValue(fig.GROSS_METRIC, finite(top["gross_usd"])),
            MetricValue(fig.NET_METRIC, finite(top["net_usd"])),
            MetricValue(fig.LEVERAGE_METRIC, finite(top["leverage"])),
        ]
    for level in ("venue", "asset"):
        for ex in exposures[exposures["level"] == level].itertuples(index=False):
            key = str(getattr(ex, level))
            labels = {"level": level, level: key}
            metrics += [
                MetricValue(fig.EXPOSURE_GROSS_METRIC, finite(ex.gross_usd), labels),
                MetricValue(fig.EXPOSURE_NET_METRIC, finite(ex.net_usd), labels),
            ]
            if level == "venue":
                metrics.append(MetricValue(fig.VENUE_EQUITY_METRIC, finite(ex.equity_usd),
                                           {"venue": key}))
    return metrics


def persist_evaluation(storage: RiskStore, *, state: PreparedInputs, exposures: pd.DataFrame,
                       results: Sequence[LimitResult], as_of: datetime) -> None:
    """Latest limit results, metrics and source coverage, for the service and Prometheus."""
    storage.risk_state.upsert_limit_results(results, prune_before=as_of)
    storage.risk_state.replace_metrics(evaluation_metrics(state, exposures), as_of,
                                       names=fig.EVALUATION_METRIC_NAMES)
    storage.risk_state.record_sources(state.sources)
    record_equity(storage, state, as_of)
