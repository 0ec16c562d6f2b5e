"""Checks of the risk assets, evaluated inside each asset's step (no extra op per check).

None is blocking: a failed reconciliation or an UNKNOWN limit must be visible, but alerts must
still flow — an UNKNOWN limit is itself an alert (fail closed), and stopping the run would
silence it.
"""

import math

import dagster as dg
import pandas as pd

from risk_monitor.defs.metadata import md_table
from risk_monitor.domain.aggregation import PreparedInputs
from risk_monitor.domain.exposures import exposures_add_up
from risk_monitor.domain.limits import LimitConfig
from risk_monitor.domain.model import LimitResult, LimitStatus

#: tolerated gap between our unrealized P&L and the venue's: marks move between the venue's
#: figure and our quote, so a relative tolerance of the notional plus a small absolute floor
RECONCILE_REL = 0.005
RECONCILE_ABS_USD = 1.0

PNL_CHECKS = [dg.AssetCheckSpec(
    "pnl_reconciles_with_venue", asset="portfolio_pnl", blocking=False,
    description="Our mark-to-market unrealized P&L matches each venue's figure within "
                f"{RECONCILE_REL:.1%} of notional (min {RECONCILE_ABS_USD} USD).")]
EXPOSURE_CHECKS = [dg.AssetCheckSpec(
    "exposures_add_up", asset="exposures", blocking=False,
    description="Per-instrument sums equal the per-asset derivative part and the portfolio.")]
LIMIT_CHECKS = [
    dg.AssetCheckSpec("every_limit_is_evaluated", asset="limit_status", blocking=False,
                      description="Each configured limit produced at least one result."),
    dg.AssetCheckSpec("risk_is_fully_known", asset="limit_status", blocking=False,
                      description="No limit is UNKNOWN (missing or stale inputs). A failure "
                                  "means the monitor is partly blind; the UNKNOWN limits alert."),
]


def pnl_reconciliation(state: PreparedInputs) -> dg.AssetCheckResult:
    pnl = state.pnl
    venue = pd.to_numeric(pnl["venue_unrealized_pnl"], errors="coerce")
    diff = pd.to_numeric(pnl["unrealized_pnl_diff"], errors="coerce")
    quote_usd = pd.to_numeric(pnl["quote_usd"], errors="coerce")
    notional_quote = pd.to_numeric(pnl["notional_usd"], errors="coerce") / quote_usd
    comparable = venue.notna() & diff.notna() & notional_quote.notna()
    tolerance = (notional_quote * RECONCILE_REL).clip(lower=RECONCILE_ABS_USD)
    off = comparable & (diff.abs() > tolerance)
    worst = float(diff[comparable].abs().max()) if comparable.any() else 0.0
    rows = pnl.loc[off, ["venue", "instrument", "position_side", "unrealized_pnl",
                         "venue_unrealized_pnl", "unrealized_pnl_diff"]]
    return dg.AssetCheckResult(
        check_name="pnl_reconciles_with_venue", asset_key="portfolio_pnl",
        passed=not bool(off.any()), severity=dg.AssetCheckSeverity.WARN,
        metadata={"positions_compared": int(comparable.sum()),
                  "positions_off": int(off.sum()),
                  "max_abs_diff": dg.MetadataValue.float(worst if math.isfinite(worst) else -1.0),
                  "off": dg.MetadataValue.md(md_table(rows.astype(object)))})


def exposure_consistency(table: pd.DataFrame) -> dg.AssetCheckResult:
    problems = exposures_add_up(table)
    return dg.AssetCheckResult(
        check_name="exposures_add_up", asset_key="exposures", passed=not problems,
        metadata={"problems": dg.MetadataValue.json(problems[:20])})


def limit_checks(results: list[LimitResult], config: LimitConfig) -> list[dg.AssetCheckResult]:
    evaluated = {r.limit_id for r in results}
    missing = sorted(d.id for d in config.limits if d.id not in evaluated)
    unknown = [r for r in results if r.status is LimitStatus.UNKNOWN]
    reasons = sorted({r.reason for r in unknown})
    return [
        dg.AssetCheckResult(
            check_name="every_limit_is_evaluated", asset_key="limit_status", passed=not missing,
            metadata={"not_evaluated": dg.MetadataValue.json(missing)}),
        dg.AssetCheckResult(
            check_name="risk_is_fully_known", asset_key="limit_status", passed=not unknown,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"unknown_limits": len(unknown),
                      "reasons": dg.MetadataValue.json(reasons[:20])}),
    ]
