"""The real ccxt okx clients (sync and async) against the OKX simulator's REST API."""

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
VENUE = "okx"
SYMBOLS = ["BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT"]


@pytest.fixture(params=["sync", "async"])
async def okx(sim: SimulatorStack, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    exchange = ccxt_client(sim, VENUE, request.param)
    yield exchange
    await close(exchange)


def requested(sim: SimulatorStack) -> list[str]:
    assert sim.okx is not None
    return [r["path"] for r in sim.okx.requests]


async def test_load_markets_lists_the_swaps(sim: SimulatorStack, okx: Any) -> None:
    markets = await call(okx, "load_markets")
    truth = sim.market.instruments[VENUE]
    assert set(markets) == set(truth)
    for symbol, inst in truth.items():
        market = markets[symbol]
        assert market["id"] == inst.venue_id
        assert market["swap"] and market["linear"]
        assert market["contractSize"] == f(inst.contract_size)
        assert market["precision"]["amount"] == f(inst.lot_size)
        assert market["precision"]["price"] == f(inst.tick_size)
    assert markets["BTC/USDT:USDT"]["contractSize"] == 0.01  # OKX ctVal
    assert "/api/v5/public/instruments" in requested(sim)
    assert "/api/v5/asset/currencies" in requested(sim)  # signed, when keys are set


async def test_tickers_and_mark_prices_equal_the_market(sim: SimulatorStack, okx: Any) -> None:
    sim.market.advance(30)
    tickers = await call(okx, "fetch_tickers", SYMBOLS)
    now_ms = time.time() * 1000
    for symbol in SYMBOLS:
        quote = sim.market.quote(VENUE, symbol)
        assert tickers[symbol]["last"] == f(quote.last)
        assert tickers[symbol]["bid"] == f(quote.bid)
        assert tickers[symbol]["ask"] == f(quote.ask)
        assert abs(tickers[symbol]["timestamp"] - now_ms) < 10_000
    sim.market.set_price("ETH/USDT:USDT", 2345.67)
    ticker = await call(okx, "fetch_ticker", "ETH/USDT:USDT")
    assert ticker["last"] == f(sim.market.quote(VENUE, "ETH/USDT:USDT").last)
    assert ticker["last"] == pytest.approx(2345.67 * (1 + 1e-4), abs=0.01)  # 1 bp basis
    marks = await call(okx, "fetch_mark_prices", SYMBOLS)
    for symbol in SYMBOLS:
        assert marks[symbol]["markPrice"] == f(sim.market.quote(VENUE, symbol).mark)
    rates = await call(okx, "fetch_funding_rates", SYMBOLS)
    assert {s: r["fundingRate"] for s, r in rates.items()} == \
        {s: f(sim.market.quote(VENUE, s).funding_rate) for s in SYMBOLS}
    assert {"/api/v5/market/tickers", "/api/v5/market/ticker", "/api/v5/public/mark-price",
            "/api/v5/public/funding-rate"} <= set(requested(sim))


async def test_balance_equals_the_account(sim: SimulatorStack, okx: Any) -> None:
    balance = await call(okx, "fetch_balance")
    for b in sim.market.balances(VENUE, "main"):
        assert balance[b.asset]["total"] == f(b.margin_balance)  # OKX eq
        assert balance[b.asset]["free"] == f(b.available)  # availEq
        [row] = [d for d in balance["info"]["data"][0]["details"] if d["ccy"] == b.asset]
        assert float(row["cashBal"]) == f(b.wallet)
        assert float(row["upl"]) == f(b.unrealized_pnl)
    assert balance["timestamp"] is not None


async def test_hedge_positions_equal_the_account(sim: SimulatorStack, okx: Any) -> None:
    sim.market.advance(20)
    positions = await call(okx, "fetch_positions")
    truth = {(v.symbol, v.side): v for v in sim.market.positions(VENUE, "main")}
    assert len(truth) == 3  # calm: BTC long + BTC short + ETH long
    assert {(p["symbol"], p["side"]) for p in positions} == set(truth)
    for position in positions:
        assert position["hedged"] is True
        assert_position_matches(position, truth[(position["symbol"], position["side"])])
        assert position["leverage"] == 5
    assert (await call(okx, "fetch_position_mode"))["hedged"] is True


async def test_one_way_positions_equal_the_account(sim: SimulatorStack, okx: Any) -> None:
    clear_positions(sim, VENUE)
    sim.market.set_position_mode(VENUE, "main", "one_way")
    sim.market.set_position(VENUE, "main", "SOL/USDT:USDT", side="short", contracts="250",
                            entry_price="155")
    positions = await call(okx, "fetch_positions", ["SOL/USDT:USDT"])
    [position] = positions
    [truth] = sim.market.positions(VENUE, "main")
    assert position["hedged"] is False
    assert position["info"]["posSide"] == "net"
    assert float(position["info"]["pos"]) == -250
    assert_position_matches(position, truth)
    assert (await call(okx, "fetch_position_mode"))["hedged"] is False


@pytest.mark.parametrize(("override", "code"), [
    ({"secret": "A" * 32}, "50113"),
    ({"apiKey": "00000000-0000-0000-0000-000000000000"}, "50111"),
    ({"password": "wrong-passphrase"}, "50105"),
])
def test_wrong_credentials_are_authentication_errors(sim: SimulatorStack,
                                                     override: dict[str, str],
                                                     code: str) -> None:
    exchange = ccxt_client(sim, VENUE, "sync")
    exchange.load_markets()
    for attribute, value in override.items():
        setattr(exchange, attribute, value)
    with pytest.raises(ccxt.AuthenticationError, match=code):
        exchange.fetch_balance()


def test_demo_trading_requests_are_refused(sim: SimulatorStack) -> None:
    exchange = ccxt_client(sim, VENUE, "sync")
    exchange.load_markets()
    exchange.headers = {"x-simulated-trading": "1"}  # what set_sandbox_mode(True) sends
    with pytest.raises(ccxt.AuthenticationError, match="50101"):
        exchange.fetch_positions()


def test_clock_skew_expires_the_signature_timestamp(sim: SimulatorStack) -> None:
    assert sim.okx is not None
    exchange = ccxt_client(sim, VENUE, "sync")
    exchange.load_markets()
    sim.okx.set_clock_offset(120)
    with pytest.raises(ccxt.InvalidNonce, match="50102"):
        exchange.fetch_balance()
    exchange.load_time_difference()
    assert exchange.fetch_balance()["USDT"]["total"] > 0


def test_429_raises_rate_limit_exceeded(sim: SimulatorStack) -> None:
    assert sim.okx is not None
    exchange = ccxt_client(sim, VENUE, "sync")
    exchange.load_markets()
    sim.okx.set_rate_limit(2)
    exchange.fetch_ticker("BTC/USDT:USDT")
    exchange.fetch_ticker("BTC/USDT:USDT")
    with pytest.raises(ccxt.RateLimitExceeded, match="50011"):
        for _ in range(5):  # the 2-second window may roll over once; it cannot twice
            exchange.fetch_ticker("BTC/USDT:USDT")
    with pytest.raises(urllib.error.HTTPError) as rejected:
        for _ in range(5):
            urllib.request.urlopen(f"{sim.okx.url}/api/v5/market/ticker?instId=BTC-USDT-SWAP",
                                   timeout=10)
    assert rejected.value.code == 429
    assert rejected.value.headers["Retry-After"]
    sim.okx.set_rate_limit(None)
    assert exchange.fetch_ticker("BTC/USDT:USDT")["last"] > 0
