"""Exposure tables: gross / net notional per venue+instrument, instrument, asset, venue, portfolio.

One tidy frame (one row per level and key, one column per measure) feeds Dagster metadata, the
dashboard and plots. Rows are computed with the same scope machinery the limits use, so a
number in a table and the number a limit compared are the same number.
"""

from __future__ import annotations

import math

import pandas as pd

from risk_monitor.domain.aggregation import Needs, PreparedInputs, sorted_scope_inputs

EXPOSURE_COLUMNS: tuple[str, ...] = (
    "level",  # venue_instrument | instrument | asset | venue | portfolio
    "venue",
    "instrument",
    "asset",
    "positions",
    "derivatives_gross_usd",
    "derivatives_net_usd",
    "holdings_usd",  # non-stable balances (spot, custody), USD
    "gross_usd",  # derivatives gross + |holdings|
    "net_usd",  # derivatives net + holdings
    "equity_usd",  # venue / portfolio: balances + unrealized P&L (counterparty exposure)
    "concentration_pct",  # asset: gross / portfolio equity * 100
    "leverage",  # venue / portfolio: gross / equity
    "ok",
    "reason",
)

_LEVELS: tuple[tuple[str, dict[str, str | None], Needs], ...] = (
    ("venue_instrument", {"venue": "*", "instrument": "*"}, Needs(positions=True)),
    ("instrument", {"instrument": "*"}, Needs(positions=True)),
    ("asset", {"asset": "*"}, Needs(positions=True, holdings=True, portfolio_equity=True)),
    ("venue", {"venue": "*"}, Needs(positions=True, holdings=True, scope_equity=True)),
    ("portfolio", {}, Needs(positions=True, holdings=True, scope_equity=True)),
)


def exposure_table(state: PreparedInputs) -> pd.DataFrame:
    """All exposure levels in one tidy frame; figures of an unknown row are NaN.

    Built column by column (one list per column, one frame at the end): thousands of rows per
    evaluation, and a frame from per-row dicts costs several times more."""
    columns: dict[str, list[object]] = {name: [] for name in EXPOSURE_COLUMNS}
    (level_c, venue_c, instrument_c, asset_c, positions_c, d_gross_c, d_net_c, holdings_c,
     gross_c, net_c, equity_c, concentration_c, leverage_c, ok_c, reason_c) = (
        columns[name] for name in EXPOSURE_COLUMNS)
    nan = math.nan
    for level, template, needs in _LEVELS:
        for scope, inputs in sorted_scope_inputs(state, needs, template):
            known = inputs.known
            equity = inputs.equity_usd if needs.scope_equity else nan
            gross = inputs.gross_usd
            level_c.append(level)
            venue_c.append(scope.venue or "")
            instrument_c.append(scope.instrument or "")
            asset_c.append(scope.asset or "")
            positions_c.append(inputs.positions)
            d_gross_c.append(inputs.derivatives_gross_usd if known else nan)
            d_net_c.append(inputs.derivatives_net_usd if known else nan)
            holdings_c.append(inputs.holdings_usd if known else nan)
            gross_c.append(gross if known else nan)
            net_c.append(inputs.net_usd if known else nan)
            equity_c.append(equity if known else nan)
            concentration_c.append(
                _ratio(gross, inputs.portfolio_equity_usd, 100.0)
                if known and needs.portfolio_equity else nan)
            leverage_c.append(_ratio(gross, equity, 1.0) if known and needs.scope_equity else nan)
            ok_c.append(known)
            reason_c.append("; ".join(inputs.problems))
    return pd.DataFrame(columns, columns=list(EXPOSURE_COLUMNS))


def _ratio(numerator: float, denominator: float, scale: float) -> float:
    if not math.isfinite(denominator) or denominator <= 0:
        return math.nan
    return numerator / denominator * scale


def exposures_add_up(table: pd.DataFrame, rel_tol: float = 1e-9) -> list[str]:
    """Consistency check: every level sums to the portfolio (empty list = consistent).

    Derivative gross/net must agree across venue_instrument, instrument, asset, venue and
    portfolio; holdings across asset, venue and portfolio. Levels with unknown rows are skipped
    (their figures are NaN by design).
    """
    problems: list[str] = []
    checks = {
        "derivatives_gross_usd": ("venue_instrument", "instrument", "asset", "venue", "portfolio"),
        "derivatives_net_usd": ("venue_instrument", "instrument", "asset", "venue", "portfolio"),
        "holdings_usd": ("asset", "venue", "portfolio"),
    }
    for column, levels in checks.items():
        totals: dict[str, float] = {}
        for level in levels:
            part = table.loc[table["level"] == level, column]
            if part.isna().any():
                continue
            totals[level] = float(part.sum())
        if "portfolio" not in totals:
            continue
        reference = totals["portfolio"]
        for level, total in totals.items():
            if not math.isclose(total, reference, rel_tol=rel_tol, abs_tol=1e-6):
                problems.append(f"{column}: {level} sums to {total!r}, portfolio is {reference!r}")
    return problems
