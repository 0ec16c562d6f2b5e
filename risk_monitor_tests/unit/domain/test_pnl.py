"""P&L, valuation and equity on hand-computed cases (numbers in docs/risk-math.md)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from risk_monitor.domain.engine import evaluate, prepare
from risk_monitor.domain.model import PRICE_COLUMNS
from risk_monitor.domain.valuation import (
    LATEST_QUOTE_COLUMNS,
    Freshness,
    asset_prices,
    latest_quotes,
)
from risk_monitor_tests.unit.domain.builders import (
    NOW,
    ago,
    balance,
    config,
    desk,
    frame,
    position,
    quote,
    snapshot,
)

CFG = config()


def _row(pnl: pd.DataFrame, venue: str, instrument: str, side: str | None = None) -> pd.Series:
    mask = (pnl["venue"] == venue) & (pnl["instrument"] == instrument)
    if side:
        mask &= pnl["position_side"] == side
    rows = pnl[mask]
    assert len(rows) == 1
    return rows.iloc[0]


def test_long_and_short_mark_to_market() -> None:
    pnl = evaluate(desk(), CFG).position_pnl
    long_btc = _row(pnl, "binance", "BTC/USDT:USDT")
    assert long_btc["unrealized_pnl"] == pytest.approx((61000 - 60000) * 10)
    assert long_btc["notional_usd"] == pytest.approx(610000)
    assert long_btc["signed_notional_usd"] == pytest.approx(610000)
    assert long_btc["liquidation_distance_pct"] == pytest.approx(11000 / 61000 * 100)
    short_eth = _row(pnl, "binance", "ETH/USDT:USDT")
    assert short_eth["unrealized_pnl"] == pytest.approx((2900 - 3000) * -50)  # +5000
    assert short_eth["signed_notional_usd"] == pytest.approx(-145000)
    short_btc = _row(pnl, "okx", "BTC/USDT:USDT")
    assert short_btc["unrealized_pnl"] == pytest.approx(4000)
    assert bool(pnl["ok"].all())
    assert (pnl["unrealized_pnl_diff"].abs() < 1e-9).all()  # builder reports venue upnl at mark


def test_hedge_mode_keeps_both_legs() -> None:
    pnl = evaluate(desk(), CFG).position_pnl
    long_leg = _row(pnl, "okx", "ETH/USDT:USDT", "long")
    short_leg = _row(pnl, "okx", "ETH/USDT:USDT", "short")
    assert long_leg["unrealized_pnl"] == pytest.approx(2000)  # (2900-2800)*20
    assert short_leg["unrealized_pnl"] == pytest.approx(4000)  # (2900-3100)*-20
    assert long_leg["notional_usd"] + short_leg["notional_usd"] == pytest.approx(116000)
    assert long_leg["signed_notional_usd"] + short_leg["signed_notional_usd"] == pytest.approx(0)


def test_venue_upnl_kept_for_reconciliation() -> None:
    snap = snapshot(
        [position("binance", "BTC/USDT:USDT", 1, 60000, 61000, unrealized=900.0)],
        [balance("binance", "USDT", 1000)],
        [quote("binance", "BTC/USDT:USDT", 61000)],
        custodians=(),
    )
    row = evaluate(snap, CFG).position_pnl.iloc[0]
    assert row["unrealized_pnl"] == pytest.approx(1000)
    assert row["venue_unrealized_pnl"] == pytest.approx(900)
    assert row["unrealized_pnl_diff"] == pytest.approx(100)


def test_mark_prefers_quote_mark_then_last_then_own_mark() -> None:
    snap = snapshot(
        [
            position("binance", "BTC/USDT:USDT", 1, 60000, 60500),
            position("binance", "ETH/USDT:USDT", 1, 3000, 3050),
            position("okx", "BTC/USDT:USDT", 1, 60000, 60700),
        ],
        [],
        [
            quote("binance", "BTC/USDT:USDT", 61000, mark=61100),
            {**quote("binance", "ETH/USDT:USDT", 2950), "mark": float("nan")},
        ],
        custodians=(),
    )
    pnl = evaluate(snap, CFG).position_pnl
    assert _row(pnl, "binance", "BTC/USDT:USDT")["mark"] == 61100
    assert _row(pnl, "binance", "ETH/USDT:USDT")["mark"] == 2950
    okx = _row(pnl, "okx", "BTC/USDT:USDT")
    assert okx["mark"] == 60700 and okx["mark_source"] == "position"


def test_stale_quote_falls_back_to_fresh_position_mark() -> None:
    snap = snapshot(
        [position("binance", "BTC/USDT:USDT", 2, 60000, 60500)],
        [],
        [quote("binance", "BTC/USDT:USDT", 61000, at=ago(300))],
        custodians=(),
    )
    row = evaluate(snap, CFG).position_pnl.iloc[0]
    assert row["mark_source"] == "position"
    assert row["unrealized_pnl"] == pytest.approx(1000)


def test_stale_quote_and_stale_position_give_nan() -> None:
    snap = snapshot(
        [position("binance", "BTC/USDT:USDT", 2, 60000, 60500, received=ago(300))],
        [],
        [quote("binance", "BTC/USDT:USDT", 61000, at=ago(300))],
        custodians=(),
    )
    row = evaluate(snap, CFG).position_pnl.iloc[0]
    assert not row["ok"]
    assert math.isnan(row["unrealized_pnl"]) and math.isnan(row["notional_usd"])


def test_quote_from_the_future_beyond_skew_is_not_used() -> None:
    snap = snapshot(
        [position("binance", "BTC/USDT:USDT", 1, 60000, 60500)],
        [],
        [quote("binance", "BTC/USDT:USDT", 99999, at=ago(-30))],  # 30 s ahead, skew 5 s
        custodians=(),
    )
    row = evaluate(snap, CFG).position_pnl.iloc[0]
    assert row["mark"] == 60500 and row["mark_source"] == "position"


def test_asset_price_is_median_of_fresh_stable_quotes() -> None:
    prices = frame(
        [
            quote("binance", "BTC/USDT:USDT", 61000),
            quote("okx", "BTC/USDT:USDT", 61200),
            quote("bybit", "BTC/USDC:USDC", 60900),
            quote("okx", "BTC/USDT", 10, at=ago(600)),  # stale: ignored
            quote("okx", "ETH/BTC", 0.05),  # not against a stablecoin: ignored
        ],
        PRICE_COLUMNS,
    )
    valuation = asset_prices(prices, Freshness(NOW, 60.0, 5.0))
    assert valuation.price("BTC") == 61000
    assert valuation.price("USDT") == 1.0 and valuation.price("DAI") == 1.0
    assert math.isnan(valuation.price("ETH"))  # only an ETH/BTC quote: no USD price


def test_custodian_balances_valued_at_market_and_equity() -> None:
    report = evaluate(desk(), CFG)
    eq = report.equity.set_index(["venue", "account"])
    assert eq.loc[("binance", "main"), "equity_usd"] == pytest.approx(500000 + 10000 + 5000)
    assert eq.loc[("okx", "main"), "equity_usd"] == pytest.approx(300000 + 61000 + 4000 + 2000 + 4000)
    assert eq.loc[("fireblocks", "vault-1"), "equity_usd"] == pytest.approx(5 * 61000 + 1_000_000)
    assert eq.loc[("fireblocks", "vault-2"), "equity_usd"] == pytest.approx(100 * 2900)
    assert eq.loc[("fireblocks", "vault-1"), "source_type"] == "custodian"
    assert report.portfolio.equity_usd == pytest.approx(2_481_000)


def test_failed_venue_has_nan_equity_row_not_zero() -> None:
    report = evaluate(desk(failed=["okx"]), CFG)
    okx = report.equity[report.equity["venue"] == "okx"].iloc[0]
    assert math.isnan(float(okx["equity_usd"]))
    assert not okx["ok"]
    assert "okx" in str(okx["reason"])
    assert not report.portfolio.known and "okx" in report.portfolio.reason


def test_daily_pnl_establishes_start_of_day_when_missing() -> None:
    first = evaluate(desk(), CFG).portfolio
    assert first.start_of_day_established
    assert first.daily_pnl_usd == 0.0 and first.start_of_day_equity_usd == pytest.approx(2_481_000)
    later = evaluate(desk(start_of_day_equity=2_600_000, peak_equity=3_000_000), CFG).portfolio
    assert not later.start_of_day_established
    assert later.daily_pnl_usd == pytest.approx(2_481_000 - 2_600_000)
    assert later.peak_equity_usd == 3_000_000
    assert later.drawdown_pct == pytest.approx((3_000_000 - 2_481_000) / 3_000_000 * 100)


def test_new_peak_replaces_old_peak() -> None:
    pnl = evaluate(desk(peak_equity=2_000_000), CFG).portfolio
    assert pnl.peak_equity_usd == pytest.approx(2_481_000) and pnl.drawdown_pct == 0.0


def test_prepare_keeps_input_order_and_columns() -> None:
    state = prepare(desk(), CFG)
    assert list(state.pnl["instrument"].astype(str)) == [
        "BTC/USDT:USDT", "ETH/USDT:USDT", "BTC/USDT:USDT", "ETH/USDT:USDT", "ETH/USDT:USDT",
    ]
    assert state.pnl["source_time"].dt.tz is not None


def test_latest_quotes_keep_the_newest_fresh_quote_per_instrument_oldest_first() -> None:
    """One row per (venue, instrument): its newest fresh quote (on a tie, the later row), mark
    else last, stale and unusable quotes left out, listed oldest first (ties in row order)."""
    prices = frame([
        quote("okx", "ETH/USDT:USDT", 3000.0, at=ago(5)),
        quote("binance", "BTC/USDT:USDT", 60000.0, at=ago(2)),
        quote("okx", "ETH/USDT:USDT", 3010.0, mark=float("nan"), at=ago(1)),
        quote("binance", "BTC/USDT:USDT", 60100.0, at=ago(9)),
        quote("okx", "BTC/USDT:USDT", 60050.0, mark=60060.0, at=ago(2)),
        quote("binance", "BTC/USDT:USDT", 60200.0, at=ago(2)),  # same time, later row: kept
        quote("okx", "SOL/USDT:USDT", 150.0, at=ago(600)),  # stale
        quote("okx", "XRP/USDT:USDT", float("nan"), mark=float("nan"), at=ago(1)),  # no price
    ], PRICE_COLUMNS)
    latest = latest_quotes(prices, Freshness(NOW, 60.0))
    assert tuple(latest.columns) == LATEST_QUOTE_COLUMNS
    assert latest[["venue", "instrument", "mark"]].values.tolist() == [
        ["okx", "BTC/USDT:USDT", 60060.0], ["binance", "BTC/USDT:USDT", 60200.0],
        ["okx", "ETH/USDT:USDT", 3010.0]]
    assert latest["t_ns"].tolist() == [pd.Timestamp(ago(s)).value for s in (2, 2, 1)]
    assert latest.index.tolist() == [0, 1, 2]
