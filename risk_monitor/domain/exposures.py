"""Exposure tables: gross / net notional per venue+instrument, instrument, asset, venue, portfolio.

One tidy frame (one row per level and key, one column per measure) feeds Dagster metadata, the
dashboard and plots. Rows are computed with the same scope machinery the limits use, so a
number in a table and the number a limit compared are the same number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from risk_monitor.domain.aggregation import Needs, PreparedInputs, ScopeInputs, sorted_scope_inputs
from risk_monitor.domain.scopes import Scope

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


def portfolio_exposure(state: PreparedInputs) -> tuple[float, float]:
    """(gross, net) USD of the portfolio row of :func:`exposure_table` (NaN when unknown),
    without building the table: the summary of every evaluation needs only this row."""
    _, _, needs = _LEVELS[-1]
    ((_, inputs),) = sorted_scope_inputs(state, needs, {})
    if inputs.problems:
        return math.nan, math.nan
    return inputs.gross_usd, inputs.net_usd


def exposure_table(state: PreparedInputs) -> pd.DataFrame:
    """All exposure levels in one tidy frame; figures of an unknown row are NaN.

    Built column-wise: the per-scope inputs are transposed once per level (``zip(*inputs)``,
    the fields of ``ScopeInputs`` in its order), every derived figure is one numpy expression
    over a level's rows, and the frame is made once from arrays (text columns as object
    arrays: from lists pandas would scan every value for dates). Thousands of rows per
    evaluation: a Python loop with a dozen appends per row cost ~3 µs a row."""
    parts = [_level_columns(level, needs, pairs) for level, template, needs in _LEVELS
             if (pairs := sorted_scope_inputs(state, needs, template))]
    columns: dict[str, np.ndarray] = {}
    for name in EXPOSURE_COLUMNS:
        pieces = [part[name] for part in parts]
        columns[name] = (np.concatenate(pieces) if pieces
                         else np.zeros(0, dtype=object))
    return pd.DataFrame(columns, columns=list(EXPOSURE_COLUMNS), copy=False)


def _level_columns(level: str, needs: Needs,
                   pairs: Sequence[tuple[Scope, ScopeInputs]]) -> dict[str, np.ndarray]:
    """One level's rows of ``exposure_table``, column by column: the same figures as
    ``ScopeInputs.gross_usd`` / ``net_usd`` and the ratios of ``_ratios``, element by element."""
    n = len(pairs)
    scopes = [scope for scope, _ in pairs]
    (d_gross, d_net, holdings, equity_in, portfolio_equity, _, positions, problems, _,
     _) = zip(*(inputs for _, inputs in pairs), strict=True)
    known = np.fromiter((not p for p in problems), dtype=bool, count=n)
    d_gross_a = np.asarray(d_gross, dtype=np.float64)
    d_net_a = np.asarray(d_net, dtype=np.float64)
    holdings_a = np.asarray(holdings, dtype=np.float64)
    gross = d_gross_a + np.abs(holdings_a)
    net = d_net_a + holdings_a
    nan = np.full(n, np.nan)
    equity = np.asarray(equity_in, dtype=np.float64) if needs.scope_equity else nan
    concentration = (_ratios(gross, np.asarray(portfolio_equity, dtype=np.float64), 100.0)
                     if needs.portfolio_equity else nan)
    leverage = _ratios(gross, equity, 1.0) if needs.scope_equity else nan
    return {
        "level": np.full(n, level, dtype=object),
        "venue": _texts([scope.venue or "" for scope in scopes]),
        "instrument": _texts([scope.instrument or "" for scope in scopes]),
        "asset": _texts([scope.asset or "" for scope in scopes]),
        "positions": np.asarray(positions, dtype=np.int64),
        "derivatives_gross_usd": np.where(known, d_gross_a, np.nan),
        "derivatives_net_usd": np.where(known, d_net_a, np.nan),
        "holdings_usd": np.where(known, holdings_a, np.nan),
        "gross_usd": np.where(known, gross, np.nan),
        "net_usd": np.where(known, net, np.nan),
        "equity_usd": np.where(known, equity, np.nan),
        "concentration_pct": np.where(known, concentration, np.nan),
        "leverage": np.where(known, leverage, np.nan),
        "ok": known,
        "reason": _texts(["; ".join(p) for p in problems]),
    }


def _texts(values: list[str]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _ratios(numerator: np.ndarray, denominator: np.ndarray, scale: float) -> np.ndarray:
    """``numerator / denominator * scale``; NaN where the denominator is not finite or not
    positive (no ratio to an unknown or negative equity)."""
    usable = np.isfinite(denominator) & (denominator > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(usable, numerator / np.where(usable, denominator, 1.0) * scale, np.nan)


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
