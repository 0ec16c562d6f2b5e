"""Risk assets: the limit configuration, P&L, exposures and limit status.

Bodies stay short: build the snapshot, call the domain, persist through the application use cases, return
data with metadata. The arithmetic lives in ``risk_monitor.domain``.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import pandas as pd

from risk_monitor import application
from risk_monitor.defs.failures import surface_errors
from risk_monitor.defs.metadata import OWNERS, asset_code_version, md_table, utc_now
from risk_monitor.defs.resources import SettingsResource
from risk_monitor.defs.retries import STEP_RETRY
from risk_monitor.defs.risk.checks import (
    EXPOSURE_CHECKS,
    LIMIT_CHECKS,
    PNL_CHECKS,
    exposure_consistency,
    limit_checks,
    pnl_reconciliation,
)
from risk_monitor.defs.risk.resources import RiskStoreResource
from risk_monitor.defs.risk_support import exposure_chart, utilisation_chart
from risk_monitor.domain.aggregation import PreparedInputs
from risk_monitor.domain.engine import results_frame
from risk_monitor.domain.exposures import exposure_table
from risk_monitor.domain.limits import LimitConfig, evaluate_limits
from risk_monitor.domain.model import Collected, LimitStatus

CODE_VERSION = asset_code_version(__name__)

GROUP = "risk"


@dg.asset(group_name=GROUP, kinds={"yaml", "python"}, owners=OWNERS,
          code_version=CODE_VERSION, retry_policy=STEP_RETRY)
@surface_errors("risk")
def limit_config(settings: SettingsResource, risk_store: RiskStoreResource) -> dg.Output[LimitConfig]:
    """The limit configuration in force (configuration service or file), versioned by content.

    Every applied version is recorded in the store, so an alert's ``config_version`` always
    resolves to the exact document that produced it.
    """
    cfg = settings.load()
    loaded = risk_store.limits(cfg).current()
    config, source = loaded.config, loaded.source
    table = pd.DataFrame([{"id": d.id, "kind": d.kind.value, "scope": str(d.scope.items()),
                           "warn": d.warn, "breach": d.breach} for d in config.limits])
    return dg.Output(config, data_version=dg.DataVersion(config.version), metadata={
        "version": config.version, "source": source, "limits": len(config.limits),
        "unavailable": config.unavailable,
        "definitions": dg.MetadataValue.md(md_table(table, rows=100)),
    })


@dg.asset(group_name=GROUP, kinds={"pandas"}, owners=OWNERS, check_specs=PNL_CHECKS,
          code_version=CODE_VERSION, retry_policy=STEP_RETRY)
@surface_errors("risk")
def portfolio_pnl(context: dg.AssetExecutionContext, settings: SettingsResource,
                  risk_store: RiskStoreResource, exchange_positions: Collected,
                  exchange_balances: Collected, custodian_balances: Collected,
                  market_prices: Collected, limit_config: LimitConfig) -> Iterator[Any]:
    """Mark-to-market P&L per position, equity per account and vault, daily P&L, drawdown."""
    from risk_monitor.domain.engine import prepare

    cfg = settings.load()
    snapshot = application.build_snapshot(
        positions=exchange_positions,
        balances=application.merge_collected(exchange_balances, custodian_balances),
        prices=market_prices, now=utc_now(), settings=cfg, storage=risk_store.storage(cfg))
    state = prepare(snapshot, limit_config)
    p = state.portfolio
    yield dg.Output(state, metadata={
        "equity_usd": dg.MetadataValue.float(float(p.equity_usd)),
        "daily_pnl_usd": dg.MetadataValue.float(float(p.daily_pnl_usd)),
        "drawdown_pct": dg.MetadataValue.float(float(p.drawdown_pct)),
        "positions": len(state.pnl),
        "equity": dg.MetadataValue.md(md_table(state.equity[
            ["source_type", "venue", "account", "balances_usd", "unrealized_pnl_usd",
             "equity_usd", "ok", "reason"]])),
        "positions_pnl": dg.MetadataValue.md(md_table(state.pnl[
            ["venue", "instrument", "position_side", "quantity", "entry_price", "mark",
             "unrealized_pnl_usd", "venue_unrealized_pnl", "ok"]].astype(object))),
        "unknown_reason": p.reason or "",
    })
    yield pnl_reconciliation(state)


@dg.asset(group_name=GROUP, kinds={"pandas"}, owners=OWNERS, check_specs=EXPOSURE_CHECKS,
          code_version=CODE_VERSION, retry_policy=STEP_RETRY)
@surface_errors("risk")
def exposures(portfolio_pnl: PreparedInputs) -> Iterator[Any]:
    """Gross and net exposure per instrument, asset, venue and portfolio; concentration,
    leverage (the counterparty view: what is at risk at each venue)."""
    table = exposure_table(portfolio_pnl)
    top = table[table["level"].isin(["asset", "venue", "portfolio"])][
        ["level", "venue", "asset", "gross_usd", "net_usd", "equity_usd", "concentration_pct",
         "leverage", "ok"]]
    yield dg.Output(table, metadata={
        "rows": len(table),
        "exposures": dg.MetadataValue.md(md_table(top)),
        "chart": dg.MetadataValue.md(exposure_chart(table)),
    })
    yield exposure_consistency(table)


@dg.asset(group_name=GROUP, kinds={"pandas", "sql"}, owners=OWNERS, check_specs=LIMIT_CHECKS,
          code_version=CODE_VERSION, retry_policy=STEP_RETRY)
@surface_errors("risk")
def limit_status(settings: SettingsResource, risk_store: RiskStoreResource,
                 portfolio_pnl: PreparedInputs, exposures: pd.DataFrame,
                 limit_config: LimitConfig) -> Iterator[Any]:
    """One result per (limit, scope): value, utilisation, OK / WARN / BREACH / UNKNOWN.

    UNKNOWN whenever an input is missing or stale (fail closed). The results are also written
    to the store the service and Prometheus read.
    """
    cfg = settings.load()
    results = evaluate_limits(portfolio_pnl, limit_config)
    application.persist_evaluation(risk_store.storage(cfg), state=portfolio_pnl,
                                 exposures=exposures, results=results,
                                 as_of=portfolio_pnl.freshness.now)
    counts = {s.value: sum(r.status is s for r in results) for s in LimitStatus}
    yield dg.Output(results, metadata={
        **{f"limits_{k.lower()}": v for k, v in counts.items()},
        "config_version": limit_config.version,
        "max_utilisation_pct": dg.MetadataValue.float(max(
            [r.utilisation * 100 for r in results if r.utilisation is not None] or [0.0])),
        "limits": dg.MetadataValue.md(md_table(results_frame(results).drop(
            columns=["source_event_time"]), rows=50)),
        "utilisation": dg.MetadataValue.md(utilisation_chart(results)),
    })
    yield from limit_checks(results, limit_config)
