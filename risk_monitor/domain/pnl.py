"""Mark-to-market P&L per position, balances valued in USD, portfolio daily P&L and drawdown
(the equity per account and vault they sum is ``domain/equity.py``).

Conventions (docs/risk-math.md): an exchange balance's ``total`` is the wallet balance
EXCLUDING unrealized P&L, so equity = Σ balances in USD + Σ unrealized P&L of the positions.
Every row carries ``ok`` and a ``problem`` code; a row that is not ok has NaN figures and makes
everything aggregated from it UNKNOWN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any, NamedTuple, cast

import numpy as np
import pandas as pd

from risk_monitor.domain.coverage import SourceProblem
from risk_monitor.domain.frame_rules import row_chunks
from risk_monitor.domain.valuation import (
    NAT,
    AssetPrices,
    Freshness,
    categorical,
    float_block,
    floats,
    frame_of,
    strings,
    times_ns,
    utc_times,
)


class RowProblem(IntEnum):
    """Why a position or balance row cannot be used (0 = usable)."""

    OK = 0
    STALE = 1  # received outside the freshness budget (or from the future)
    NO_MARK = 2  # no fresh quote and no fresh own mark for the instrument
    NO_USD_PRICE = 3  # no fresh USD price for the quote currency / asset
    INVALID = 4  # NaN quantity, entry price or total


#: Columns of :func:`position_pnl`'s frame (one row per input position, same order).
POSITION_PNL_COLUMNS: tuple[str, ...] = (
    "venue",
    "account",
    "instrument",
    "base",
    "quote",
    "position_side",
    "quantity",  # signed base units
    "entry_price",
    "mark",  # the mark used (quote currency)
    "mark_source",  # "quote" | "position" | "" (none)
    "quote_usd",  # USD per unit of quote currency
    "unrealized_pnl",  # (mark - entry) * quantity, quote currency
    "unrealized_pnl_usd",
    "venue_unrealized_pnl",  # what the venue reports, for reconciliation
    "unrealized_pnl_diff",  # ours - venue's (quote currency)
    "realized_pnl",  # venue's figure (NaN when none)
    "notional_usd",  # |quantity| * mark * quote_usd
    "signed_notional_usd",  # quantity * mark * quote_usd (the USD delta)
    "liquidation_price",
    "liquidation_distance_pct",  # |mark - liquidation| / mark * 100 (NaN without a price)
    "source_time",  # oldest input time behind the row (position receipt, quote event)
    "ok",
    "problem",  # RowProblem code
)

#: Columns of :func:`value_balances`' frame.
VALUED_BALANCE_COLUMNS: tuple[str, ...] = (
    "source_type",
    "venue",
    "account",
    "asset",  # as the source names it, e.g. Fireblocks "USDT_ERC20"
    "currency",  # the currency it is valued and grouped as, e.g. "USDT" (valuation.asset_aliases)
    "total",
    "usd_price",
    "value_usd",
    "is_stable",
    "holding_usd",  # value_usd of non-stable assets (market exposure), else 0
    "source_time",
    "ok",
    "problem",
)

def position_pnl(positions: pd.DataFrame, freshness: Freshness, valuation: AssetPrices,
                 quotes: pd.DataFrame) -> pd.DataFrame:
    """Mark every position to market (``quotes``: :func:`valuation.latest_quotes`).

    The mark is the fresh quote's ``mark`` (else its ``last``) for the (venue, instrument), else
    the position's own ``mark_price`` when the position itself is fresh, else NaN. Freshness of a
    position is judged on ``received_at``: venues report position timestamps as the time of the
    last change (Binance ``updateTime``), which says nothing about how current the figures are.
    """
    n = len(positions)
    venue = categorical(positions, "venue")
    instrument = categorical(positions, "instrument")
    quote_ccy = categorical(positions, "quote")
    quantity = floats(positions, "quantity")
    entry = floats(positions, "entry_price")
    own_mark = floats(positions, "mark_price")
    liq = floats(positions, "liquidation_price")
    venue_upnl = floats(positions, "unrealized_pnl")
    # oldest input behind the row, moved in place below: the position receipt, the quote, the
    # quote currency's price (freshness is judged on the receipt alone, before the moves)
    source_t = times_ns(positions, "received_at", "timestamp")

    width = len(instrument.categories)
    table = np.full(0, -1, dtype=np.int64)
    if n and len(quotes):
        # dense (venue code, instrument code) → quote row table: no string hashing per row
        v_codes = venue.categories.get_indexer(pd.Index(quotes["venue"]))
        i_codes = instrument.categories.get_indexer(pd.Index(quotes["instrument"]))
        known = (v_codes >= 0) & (i_codes >= 0)
        table = np.full(len(venue.categories) * width, -1, dtype=np.int64)
        table[v_codes[known] * width + i_codes[known]] = np.flatnonzero(known)
    # -1 (no quote) reads the NaN / NAT appended at the end
    quote_marks = np.append(quotes["mark"].to_numpy(dtype=np.float64), np.nan)
    quote_times = np.append(quotes["t_ns"].to_numpy(dtype=np.int64), NAT)
    rate_usd, rate_times = valuation.per_value(quote_ccy.categories)

    # the computed float columns are written straight into one block with ``out=``; the input
    # figures the frame repeats (quantity, entry, venue P&L, liquidation) are the input's own
    # arrays, not copies. The rows go slice by slice (``row_chunks``): every temporary is one
    # chunk long, where whole 1M-row temporaries cost 8 MB each (~40 MB at the peak)
    col = float_block(_PNL_FLOATS, n)
    source_codes = np.empty(n, dtype=np.int8)
    problem = np.empty(n, dtype=np.int8)
    ok = np.empty(n, dtype=bool)
    for rows in row_chunks(n):
        _mark_rows(rows, col, source_codes, problem, ok, source_t,
                   (venue.codes, instrument.codes, quote_ccy.codes, width, table),
                   (quantity, entry, own_mark, liq, venue_upnl),
                   (quote_marks, quote_times, rate_usd, rate_times), freshness)
    mark_source = pd.Categorical.from_codes(
        cast(Any, source_codes), categories=pd.Index(["quote", "position", ""]))
    return frame_of(
        {
            "venue": venue,
            "account": categorical(positions, "account"),
            "instrument": instrument,
            "base": categorical(positions, "base"),
            "quote": quote_ccy,
            "position_side": categorical(positions, "position_side"),
            **col,
            "quantity": quantity,
            "entry_price": entry,
            "venue_unrealized_pnl": venue_upnl,
            "realized_pnl": floats(positions, "realized_pnl"),
            "liquidation_price": liq,
            "mark_source": mark_source,
            "source_time": utc_times(source_t),
            "ok": ok,
            "problem": problem,
        },
        POSITION_PNL_COLUMNS,
    )


def _mark_rows(rows: slice, col: dict[str, np.ndarray], source_codes: np.ndarray,
               problem: np.ndarray, ok: np.ndarray, source_t: np.ndarray,
               keys: tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray],
               figures: tuple[np.ndarray, ...], lookups: tuple[np.ndarray, ...],
               freshness: Freshness) -> None:
    """:func:`position_pnl` for one slice of rows, written into the output arrays in place
    (elementwise, so the same bits as over the whole column)."""
    venue_codes, instrument_codes, quote_codes, width, table = keys
    quantity, entry, own_mark, liq, venue_upnl = (f[rows] for f in figures)
    quote_marks, quote_times, rate_usd, rate_times = lookups
    t = source_t[rows]  # a view: the oldest input time is moved in place
    pos_fresh = freshness.fresh(t)
    if len(table):
        found = venue_codes[rows].astype(np.int64)
        found *= width
        found += instrument_codes[rows]
        found = table[found]
    else:
        found = np.full(len(t), -1, dtype=np.int64)
    q_mark, q_t = quote_marks[found], quote_times[found]
    has_quote = np.isfinite(q_mark)
    own_ok = pos_fresh & np.isfinite(own_mark) & (own_mark > 0)
    mark = col["mark"][rows]
    mark.fill(np.nan)
    np.copyto(mark, own_mark, where=own_ok)
    np.copyto(mark, q_mark, where=has_quote)
    codes = source_codes[rows]
    codes.fill(2)
    codes[own_ok] = 1
    codes[has_quote] = 0
    quote_ccy = quote_codes[rows]
    quote_usd = col["quote_usd"][rows]
    np.take(rate_usd, quote_ccy, out=quote_usd)
    q_t[~has_quote] = NAT
    for other in (q_t, rate_times[quote_ccy]):
        older = (other != NAT) & ((t == NAT) | (other < t))
        np.copyto(t, other, where=older)

    bad = problem[rows]
    bad.fill(RowProblem.OK)
    bad[~np.isfinite(quantity) | ~np.isfinite(entry)] = RowProblem.INVALID
    bad[~np.isfinite(quote_usd)] = RowProblem.NO_USD_PRICE
    bad[~np.isfinite(mark)] = RowProblem.NO_MARK
    bad[~pos_fresh] = RowProblem.STALE
    good = np.equal(bad, RowProblem.OK, out=ok[rows])
    nan_if_bad = np.where(good, 1.0, np.nan)

    # same operations in the same order as the formulas: (mark - entry) * quantity, ...
    upnl = np.subtract(mark, entry, out=col["unrealized_pnl_usd"][rows])  # scratch, see below
    np.multiply(upnl, quantity, out=upnl)
    np.multiply(upnl, nan_if_bad, out=col["unrealized_pnl"][rows])
    np.multiply(upnl, quote_usd, out=upnl)
    np.multiply(upnl, nan_if_bad, out=upnl)  # now upnl * quote_usd * nan_if_bad
    np.subtract(col["unrealized_pnl"][rows], venue_upnl, out=col["unrealized_pnl_diff"][rows])
    notional = np.abs(quantity, out=col["notional_usd"][rows])
    np.multiply(notional, mark, out=notional)
    np.multiply(notional, quote_usd, out=notional)
    np.multiply(notional, nan_if_bad, out=notional)
    signed = np.multiply(quantity, mark, out=col["signed_notional_usd"][rows])
    np.multiply(signed, quote_usd, out=signed)
    np.multiply(signed, nan_if_bad, out=signed)
    liq_pct = col["liquidation_distance_pct"][rows]
    with np.errstate(invalid="ignore", divide="ignore"):
        has_liq = np.isfinite(liq) & (liq > 0)
        np.subtract(mark, liq, out=liq_pct)
        np.abs(liq_pct, out=liq_pct)
        np.divide(liq_pct, mark, out=liq_pct)
        np.multiply(liq_pct, 100.0, out=liq_pct)
    liq_pct[~has_liq] = np.nan
    np.multiply(liq_pct, nan_if_bad, out=liq_pct)


#: the float64 columns :func:`position_pnl` computes (the rows of the frame's block)
_PNL_FLOATS: tuple[str, ...] = (
    "mark", "quote_usd", "unrealized_pnl", "unrealized_pnl_usd", "unrealized_pnl_diff",
    "notional_usd", "signed_notional_usd", "liquidation_distance_pct",
)


def value_balances(
    balances: pd.DataFrame,
    freshness: Freshness,
    valuation: AssetPrices,
    ignore_assets: Iterable[str] = (),
    aliases: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Value each balance's ``total`` in USD.

    ``aliases`` maps a source's asset id to the currency it is (Fireblocks ``USDT_ERC20`` →
    ``USDT``): the row keeps its own id, is priced and grouped by the currency. Assets in
    ``ignore_assets`` (ids or currencies) are dropped on purpose — dust, delisted tokens — so
    they cannot turn the whole portfolio UNKNOWN; any other unpriced asset does, by design.
    """
    asset = strings(balances, "asset")
    currency = _resolve(asset, aliases or {})
    ignored = list(ignore_assets)
    keep = ~(np.isin(asset, ignored) | np.isin(currency, ignored)) if len(balances) else (
        np.zeros(0, dtype=bool)
    )
    frame = balances.loc[keep] if not keep.all() else balances
    asset, currency = asset[keep], currency[keep]
    total = floats(frame, "total")
    t = times_ns(frame, "received_at", "timestamp")
    price, price_t = valuation.prices(currency)
    is_stable = np.isin(currency, list(valuation.stablecoins))
    # a zero balance is worth zero even when its asset has no price
    value = np.where(total == 0, 0.0, total * price)
    fresh = freshness.fresh(t)
    source_t = t.copy()
    older = (price_t != NAT) & (total != 0) & ((source_t == NAT) | (price_t < source_t))
    source_t[older] = price_t[older]

    problem = np.zeros(len(frame), dtype=np.int8)
    problem[~np.isfinite(value)] = RowProblem.NO_USD_PRICE
    problem[~np.isfinite(total)] = RowProblem.INVALID
    problem[~fresh] = RowProblem.STALE
    ok = problem == RowProblem.OK
    value = np.where(ok, value, np.nan)
    return pd.DataFrame(
        {
            "source_type": strings(frame, "source_type"),
            "venue": strings(frame, "venue"),
            "account": strings(frame, "account"),
            "asset": asset,
            "currency": currency,
            "total": total,
            "usd_price": price,
            "value_usd": value,
            "is_stable": is_stable,
            "holding_usd": np.where(is_stable, 0.0, value),
            "source_time": utc_times(source_t),
            "ok": ok,
            "problem": problem,
        },
        columns=list(VALUED_BALANCE_COLUMNS),
    )


def _resolve(assets: np.ndarray, aliases: Mapping[str, str]) -> np.ndarray:
    if not aliases or len(assets) == 0:
        return assets
    codes, uniques = pd.factorize(assets)
    resolved = np.array([aliases.get(str(u), u) for u in uniques], dtype=object)
    return resolved[codes]


def describe_position_problem(row: pd.Series) -> str:
    """Human reason for a bad position row (only ever built for the few bad rows)."""
    where = f"{row['venue']}/{row['account']} {row['instrument']}"
    code = RowProblem(int(row["problem"]))
    if code is RowProblem.STALE:
        return f"{row['venue']}: positions of account {row['account']} are stale or from the future"
    if code is RowProblem.NO_MARK:
        return f"{row['venue']}: no fresh price for {row['instrument']} ({where})"
    if code is RowProblem.NO_USD_PRICE:
        return f"no fresh USD price for {row['quote']} (quote currency of {where})"
    return f"{row['venue']}: invalid position figures for {where}"


def describe_balance_problem(row: pd.Series) -> str:
    """Human reason for a bad balance row."""
    where = f"{row['venue']}/{row['account']} {row['asset']}"
    code = RowProblem(int(row["problem"]))
    if code is RowProblem.STALE:
        return f"{row['venue']}: balances of account {row['account']} are stale or from the future"
    if code is RowProblem.NO_USD_PRICE:
        return f"no fresh USD price for {row['currency']} (balance {where})"
    return f"{row['venue']}: invalid balance figures for {where}"


@dataclass(frozen=True)
class PortfolioPnl:
    """Portfolio-level P&L figures; NaN figures mean UNKNOWN (see ``reason``)."""

    equity_usd: float
    start_of_day_equity_usd: float | None  # effective value used (None when equity unknown)
    start_of_day_established: bool  # True: this evaluation set it; the caller should store it
    daily_pnl_usd: float
    peak_equity_usd: float | None  # max(previous peak, equity): the caller should store it
    drawdown_pct: float
    reason: str = ""

    @property
    def known(self) -> bool:
        return math.isfinite(self.equity_usd)


def portfolio_pnl(
    equity: pd.DataFrame,
    problems: Sequence[SourceProblem],
    start_of_day_equity: float | None,
    peak_equity: float | None,
) -> PortfolioPnl:
    """Daily P&L against the start-of-day (UTC) equity and drawdown from the peak.

    With no start-of-day equity yet (first evaluation of the UTC day) this evaluation
    establishes it: daily P&L is 0 and ``start_of_day_established`` tells the caller to store
    the value. Same for the peak: no peak yet → the current equity is the peak.
    """
    reason = ""
    bad = equity[~equity["ok"]] if len(equity) else equity
    if len(bad):
        reason = str(bad.iloc[0]["reason"])
    elif problems:
        reason = problems[0].reason
    elif len(equity) == 0:
        reason = "no account or vault reported any data"
    if reason:
        return PortfolioPnl(math.nan, start_of_day_equity, False, math.nan, peak_equity, math.nan,
                            reason)
    return portfolio_from_total(float(equity["equity_usd"].sum()), start_of_day_equity,
                                peak_equity)


def portfolio_from_total(total: float, start_of_day_equity: float | None,
                         peak_equity: float | None) -> PortfolioPnl:
    """Daily P&L and drawdown of a known portfolio equity (shared by the batch evaluation and
    the per-tick evaluator, which moves ``total`` by the ticks' unrealized P&L changes)."""
    established = start_of_day_equity is None
    sod = total if start_of_day_equity is None else float(start_of_day_equity)
    peak = total if peak_equity is None else max(float(peak_equity), total)
    drawdown = (peak - total) / peak * 100.0 if peak > 0 else math.nan
    why = "" if peak > 0 else f"peak equity {peak:.2f} USD is not positive: drawdown undefined"
    return PortfolioPnl(total, sod, established, total - sod, peak, drawdown, why)


class PositionMarks(NamedTuple):
    """One usable position's figures at a mark (USD): what :func:`position_pnl` computes per
    row, in scalar form for the per-tick evaluator (same formulas, same operation order). A
    named tuple: one is built per position per tick, a frozen dataclass costs ~1 µs more."""

    upnl_usd: float
    notional_usd: float
    signed_notional_usd: float
    liquidation_distance_pct: float  # NaN without a liquidation price


def mark_position(quantity: float, entry: float, mark: float, quote_usd: float,
                  liquidation: float) -> PositionMarks:
    """Scalar :func:`position_pnl` for one usable row (finite quantity, entry, mark > 0)."""
    has_liq = math.isfinite(liquidation) and liquidation > 0
    return PositionMarks(  # positional (field order): per position per tick
        (mark - entry) * quantity * quote_usd,  # upnl_usd
        abs(quantity) * mark * quote_usd,  # notional_usd
        quantity * mark * quote_usd,  # signed_notional_usd
        abs(mark - liquidation) / mark * 100.0 if has_liq else math.nan,
    )


def project_portfolio(portfolio: PortfolioPnl, equity_change_usd: float) -> PortfolioPnl:
    """The portfolio figures after an equity change (a fill away from the mark), by the rule
    of :func:`portfolio_from_total` against the evaluation's start of day and peak."""
    if not portfolio.known:
        return portfolio
    moved = portfolio_from_total(portfolio.equity_usd + equity_change_usd,
                                 portfolio.start_of_day_equity_usd, portfolio.peak_equity_usd)
    return replace(moved, start_of_day_established=portfolio.start_of_day_established)


def utc_day_start(now: datetime) -> datetime:
    """Start of the UTC day containing ``now`` (the boundary of daily P&L)."""
    ts = pd.Timestamp(now).tz_convert("UTC")
    start = ts.normalize().to_pydatetime()
    return start if start <= now else start - timedelta(days=1)
