"""The real ccxt binanceusdm clients (sync and async) against the Binance simulator's REST API."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import ccxt
import pytest

from risk_monitor_tests.fixtures.sims import ccxt_client
from risk_sim.launcher import SimulatorStack

from .helpers import assert_position_matches, call, clear_positions, close, f

pytestmark = pytest.mark.integration
VENUE = "binance"


@pytest.fixture(params=["sync", "async"])
async def binance(sim: SimulatorStack, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    exchange = ccxt_client(sim, VENUE, request.param)
    yield exchange
    await close(exchange)


def paths(sim: SimulatorStack) -> list[str]:
    assert sim.binance is not None
    return [r["path"] for r in sim.binance.requests]


async def test_load_markets_lists_the_simulated_perpetuals(sim: SimulatorStack,
                                                           binance: Any) -> None:
    markets = await call(binance, "load_markets")
    truth = sim.market.instruments[VENUE]
    assert set(markets) == set(truth)
    for symbol, inst in truth.items():
        market = markets[symbol]
        assert market["id"] == inst.venue_id
        assert market["swap"] and market["linear"] and market["type"] == "swap"
        assert market["settle"] == inst.settle
        assert market["contractSize"] == f(inst.contract_size)
        assert market["precision"]["price"] == f(inst.tick_size)
        assert market["precision"]["amount"] == f(inst.lot_size)
    assert "/fapi/v1/exchangeInfo" in paths(sim)
    assert "/sapi/v1/capital/config/getall" in paths(sim)  # currencies, signed, on "api" host


async def test_tickers_and_mark_prices_equal_the_market(sim: SimulatorStack,
                                                        binance: Any) -> None:
    sim.market.advance(30)  # move the walk away from the initial prices
    tickers = await call(binance, "fetch_tickers")
    now_ms = time.time() * 1000
    for symbol in sim.market.instruments[VENUE]:
        quote = sim.market.quote(VENUE, symbol)
        assert tickers[symbol]["last"] == f(quote.last)
        assert tickers[symbol]["open"] == f(quote.open)
        assert abs(tickers[symbol]["timestamp"] - now_ms) < 10_000
    sim.market.set_price("BTC/USDT:USDT", 65432.1)
    ticker = await call(binance, "fetch_ticker", "BTC/USDT:USDT")
    assert ticker["last"] == 65432.1
    marks = await call(binance, "fetch_mark_prices")
    for symbol in sim.market.instruments[VENUE]:
        quote = sim.market.quote(VENUE, symbol)
        assert marks[symbol]["markPrice"] == f(quote.mark)
        assert marks[symbol]["indexPrice"] == f(quote.index)
    last_prices = await call(binance, "fetch_last_prices")
    assert {s: p["price"] for s, p in last_prices.items()} == \
        {s: f(sim.market.quote(VENUE, s).last) for s in sim.market.instruments[VENUE]}
    rates = await call(binance, "fetch_funding_rates")
    assert {s: r["fundingRate"] for s, r in rates.items()} == \
        {s: f(sim.market.quote(VENUE, s).funding_rate) for s in sim.market.instruments[VENUE]}
    bids_asks = await call(binance, "fetch_bids_asks", ["BTC/USDT:USDT"])
    quote = sim.market.quote(VENUE, "BTC/USDT:USDT")
    assert (bids_asks["BTC/USDT:USDT"]["bid"], bids_asks["BTC/USDT:USDT"]["ask"]) == \
        (f(quote.bid), f(quote.ask))
    assert "/fapi/v1/ticker/24hr" in paths(sim)
    assert "/fapi/v1/premiumIndex" in paths(sim)


async def test_balance_equals_the_account(sim: SimulatorStack, binance: Any) -> None:
    balance = await call(binance, "fetch_balance")
    truth = {b.asset: b for b in sim.market.balances(VENUE, "main")}
    assert set(truth) <= set(balance["total"])
    for asset, b in truth.items():
        assert balance[asset]["total"] == f(b.margin_balance)  # ccxt reads marginBalance
        assert balance[asset]["free"] == f(b.available)
        assert balance[asset]["used"] == f(b.initial_margin)
        [row] = [a for a in balance["info"]["assets"] if a["asset"] == asset]
        assert float(row["walletBalance"]) == f(b.wallet)
        assert row["updateTime"] > 0  # ccxt drops rows with updateTime 0
    assert "/fapi/v3/account" in paths(sim)


async def test_one_way_positions_equal_the_account(sim: SimulatorStack, binance: Any) -> None:
    sim.market.advance(15)
    positions = await call(binance, "fetch_positions")
    truth = {v.symbol: v for v in sim.market.positions(VENUE, "main")}
    assert len(truth) == 3
    assert {p["symbol"] for p in positions} == set(truth)
    for position in positions:
        assert_position_matches(position, truth[position["symbol"]])
        assert position["hedged"] is False
    mode = await call(binance, "fetch_position_mode")
    assert mode["hedged"] is False
    assert "/fapi/v1/leverageBracket" in paths(sim)
    assert "/fapi/v3/positionRisk" in paths(sim)


async def test_hedge_mode_positions_keep_both_sides(sim: SimulatorStack, binance: Any) -> None:
    clear_positions(sim, VENUE)
    sim.market.set_position_mode(VENUE, "main", "hedge")
    sim.market.set_position(VENUE, "main", "BTC/USDT:USDT", side="long", contracts="3",
                            entry_price="59000")
    sim.market.set_position(VENUE, "main", "BTC/USDT:USDT", side="short", contracts="1.25",
                            entry_price="61000")
    positions = await call(binance, "fetch_positions", ["BTC/USDT:USDT"])
    truth = {v.side: v for v in sim.market.positions(VENUE, "main")}
    assert {p["side"] for p in positions} == {"long", "short"}
    for position in positions:
        assert position["hedged"] is True
        assert position["info"]["positionSide"] == position["side"].upper()
        assert_position_matches(position, truth[position["side"]])
    assert (await call(binance, "fetch_position_mode"))["hedged"] is True


async def test_v2_routes_carry_leverage_and_margin_type(sim: SimulatorStack,
                                                        binance: Any) -> None:
    await call(binance, "set_leverage", 7, "BTC/USDT:USDT")
    assert sim.market.account(VENUE).leverage_for("BTC/USDT:USDT") == 7
    leverages = await call(binance, "fetch_leverages")
    assert leverages["BTC/USDT:USDT"]["longLeverage"] == 7
    assert leverages["ETH/USDT:USDT"]["longLeverage"] == 10
    positions = await call(binance, "fetch_positions", None, {"useV2": True})
    [btc] = [p for p in positions if p["symbol"] == "BTC/USDT:USDT"]
    assert btc["leverage"] == 7
    assert btc["marginMode"] == "cross"
    assert {"/fapi/v2/positionRisk", "/fapi/v1/leverage", "/fapi/v1/symbolConfig"} <= \
        set(paths(sim))
    balance = await call(binance, "fetch_balance", {"useV2": True})
    assert balance["USDT"]["total"] > 0
    assert "/fapi/v2/account" in paths(sim)


async def test_a_wrong_secret_is_an_authentication_error(sim: SimulatorStack) -> None:
    exchange = ccxt_client(sim, VENUE, "async", secret="not-the-secret")
    try:
        with pytest.raises(ccxt.AuthenticationError, match="-1022"):
            await exchange.fetch_balance()
    finally:
        await exchange.close()


def test_a_wrong_key_is_an_authentication_error(sim: SimulatorStack) -> None:
    exchange = ccxt_client(sim, VENUE, "sync", apiKey="unknown-key")
    exchange.options["fetchCurrencies"] = False
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        exchange.fetch_positions()


def test_clock_skew_breaks_the_timestamp_window_until_ccxt_adjusts(sim: SimulatorStack) -> None:
    assert sim.binance is not None
    exchange = ccxt_client(sim, VENUE, "sync")
    exchange.load_markets()
    sim.binance.set_clock_offset(-30)  # server 30 s behind: requests look 30 s in the future
    with pytest.raises(ccxt.InvalidNonce, match="-1021"):
        exchange.fetch_balance()
    sim.binance.set_clock_offset(+30)  # server ahead: requests older than recvWindow (10 s)
    with pytest.raises(ccxt.InvalidNonce, match="-1021"):
        exchange.fetch_balance()
    server_ms = exchange.fetch_time()
    assert abs(server_ms - (time.time() + 30) * 1000) < 5_000
    exchange.load_time_difference()  # what options.adjustForTimeDifference does
    assert exchange.fetch_balance()["USDT"]["total"] > 0


def test_request_weight_is_reported_and_429_raises_ddos_protection(sim: SimulatorStack) -> None:
    assert sim.binance is not None
    with urllib.request.urlopen(f"{sim.binance.url}/fapi/v1/ticker/24hr", timeout=10) as answer:
        used = int(answer.headers["X-MBX-USED-WEIGHT-1M"])
    assert used >= 40
    sim.binance.set_weight_limit(30)  # less than fetch_tickers' weight of 40
    exchange = ccxt_client(sim, VENUE, "sync")
    exchange.load_markets()
    with pytest.raises(ccxt.DDoSProtection, match="-1003"):
        exchange.fetch_tickers()
    with pytest.raises(urllib.error.HTTPError) as rejected:
        urllib.request.urlopen(f"{sim.binance.url}/fapi/v1/ticker/24hr", timeout=10)
    assert rejected.value.code == 429
    assert 1 <= int(rejected.value.headers["Retry-After"]) <= 61
    sim.binance.set_weight_limit(None)
    assert exchange.fetch_tickers()


def test_rate_limited_client_paces_itself(sim: SimulatorStack) -> None:
    """With enableRateLimit on (production default) calls are spaced, not refused."""
    exchange = ccxt_client(sim, VENUE, "sync", enableRateLimit=True)
    exchange.load_markets()
    tickers = [exchange.fetch_ticker("BTC/USDT:USDT") for _ in range(3)]
    assert all(ticker["last"] for ticker in tickers)  # none refused (no speed is asserted)
