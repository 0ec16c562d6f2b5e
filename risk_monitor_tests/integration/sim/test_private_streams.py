"""Trading through the venues' signed REST APIs, seen on their private streams by ccxt.pro.

Orders go in with the real ccxt clients; the simulators fill them against the market model
(book depth, slippage, partial fills, fees, resting limit orders) and push the changes on the
Binance USDⓈ-M user-data stream and the OKX private websocket exactly as ccxt.pro consumes them
(``watch_orders``, ``watch_my_trades``, ``watch_positions``, ``watch_balance``). Every expected
number comes from the simulator's truth or from the documented rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import ccxt
import pytest

from risk_monitor_tests.fixtures.waiting import scaled
from risk_sim.launcher import SimulatorStack
from risk_sim.market import Trade

from .helpers import clear_positions, eventually

pytestmark = pytest.mark.integration
BTC = "BTC/USDT:USDT"
WAIT = scaled(10.0)  # a hang guard: stretched under CI's contention run
#: the calm scenario: Binance is one-way, OKX hedge mode (orders name the position side)
PARAMS = {"binance": {}, "okx": {"posSide": "long"}}
CLOSE = {"binance": {"reduceOnly": True}, "okx": {"posSide": "long"}}


@pytest.fixture(params=["binance", "okx"])
def venue(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def contracts_of(sim: SimulatorStack, venue: str, base_qty: str) -> float:
    return float(Decimal(base_qty) / sim.market.instrument(venue, BTC).contract_size)


async def collect(watch: Callable[[], Awaitable[Any]], cached: Callable[[], list[Any]],
                  done: Callable[[list[Any]], bool]) -> list[Any]:
    """Keep a ccxt.pro watch running until its cache (``cached()``) satisfies ``done``.

    A watch call returns on the next message only, and updates that arrive between two calls
    land in ccxt's cache without waking anyone: the cache is the client's full view.
    """
    deadline = time.monotonic() + WAIT
    while True:
        items = cached()
        if done(items):
            return items
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"stream incomplete after {WAIT}s: {items!r}")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(watch()), min(0.5, remaining))


class Watch:
    """A ccxt.pro watch subscribed at once; calling it returns the next update."""

    def __init__(self, method: Callable[..., Awaitable[Any]], *args: Any) -> None:
        self.method = method
        self.args = args
        self.first: asyncio.Future[Any] | None = asyncio.ensure_future(method(*args))

    async def __call__(self) -> Any:
        if self.first is not None:
            first, self.first = self.first, None
            return await first
        return await self.method(*self.args)


def truth_trades(sim: SimulatorStack, venue: str, order_id: str) -> list[Trade]:
    return [t for t in sim.market.trades(venue, "main") if str(t.order_id) == order_id]


async def test_market_order_walks_the_book_fills_partially_pays_fees(
        sim: SimulatorStack, venue: str, sim_ccxt: Any) -> None:
    sim.market.set_price(BTC, 60000)
    sim.market.set_liquidity(BTC, "0.3", level_bps=1.0)  # 0.3 BTC per level, levels 1 bp apart
    exchange = sim_ccxt(venue, "async")
    await exchange.load_markets()
    quote = sim.market.quote(venue, BTC)
    amount = contracts_of(sim, venue, "1.0")
    order = await exchange.create_order(BTC, "market", "buy", amount, None, PARAMS[venue])
    fills = truth_trades(sim, venue, order["id"])
    assert [f.base_qty for f in fills] == [Decimal("0.3")] * 3 + [Decimal("0.1")]
    assert fills[0].price == quote.ask
    assert all(b.price > a.price for a, b in itertools.pairwise(fills))
    rate = sim.market.venues[venue].taker_fee
    assert all(f.fee == (f.base_qty * f.price * rate).quantize(Decimal("1e-8")) for f in fills)
    mine = [t for t in await exchange.fetch_my_trades(BTC) if t["order"] == order["id"]]
    assert sorted((t["price"], t["amount"]) for t in mine) == \
        sorted((float(f.price), float(f.contracts)) for f in fills)
    fetched = await exchange.fetch_order(order["id"], BTC)
    vwap = sum(f.price * f.base_qty for f in fills) / Decimal("1.0")
    assert (fetched["status"], fetched["filled"]) == ("closed", amount)
    assert fetched["average"] == pytest.approx(float(vwap))
    assert fetched["average"] > float(quote.ask)  # slippage beyond the touch


async def test_resting_limit_order_fills_as_maker_or_is_cancelled(
        sim: SimulatorStack, venue: str, sim_ccxt: Any) -> None:
    sim.market.set_price(BTC, 60000)
    sim.market.set_resting_orders(True)
    exchange = sim_ccxt(venue, "async")
    await exchange.load_markets()
    amount = contracts_of(sim, venue, "0.2")
    resting = await exchange.create_order(BTC, "limit", "buy", amount, 59000, PARAMS[venue])
    cancelled = await exchange.create_order(BTC, "limit", "buy", amount, 58000, PARAMS[venue])
    assert {o["id"] for o in await exchange.fetch_open_orders(BTC)} == \
        {resting["id"], cancelled["id"]}
    await exchange.cancel_order(cancelled["id"], BTC)
    assert (await exchange.fetch_order(cancelled["id"], BTC))["status"] == "canceled"
    with pytest.raises(ccxt.OrderNotFound if venue == "binance" else ccxt.ExchangeError):
        await exchange.cancel_order(cancelled["id"], BTC)

    sim.market.set_price(BTC, 58900)  # the ask crosses 59000: the resting order fills there
    filled = await exchange.fetch_order(resting["id"], BTC)
    assert (filled["status"], filled["filled"], filled["average"]) == ("closed", amount, 59000)
    [fill] = truth_trades(sim, venue, resting["id"])
    assert fill.maker and fill.fee == (Decimal("0.2") * 59000 *
                                       sim.market.venues[venue].maker_fee).quantize(
                                           Decimal("1e-8"))
    assert await exchange.fetch_open_orders(BTC) == []


async def test_private_stream_reports_orders_fills_positions_and_balance(
        sim: SimulatorStack, venue: str, sim_ccxt: Any) -> None:
    clear_positions(sim, venue)
    sim.market.set_price(BTC, 60000)
    sim.market.set_liquidity(BTC, "0.25")
    rest = sim_ccxt(venue, "async")
    pro = sim_ccxt(venue, "pro")
    await asyncio.gather(rest.load_markets(), pro.load_markets())
    orders, trades = Watch(pro.watch_orders, BTC), Watch(pro.watch_my_trades, BTC)
    positions, balance = Watch(pro.watch_positions, [BTC]), Watch(pro.watch_balance)
    simulator = sim.venue(venue)
    await eventually(lambda: simulator.private_connections("main") >= 1)
    if venue == "okx":  # every private channel acknowledged before the order goes in
        await eventually(lambda: len(_okx_private_subs(simulator)) >= 3)
    await asyncio.sleep(0)  # let the subscriptions settle on the client side
    amount = contracts_of(sim, venue, "0.5")
    order = await rest.create_order(BTC, "market", "buy", amount, None, PARAMS[venue])
    truth = truth_trades(sim, venue, order["id"])
    assert len(truth) == 2  # 0.25 + 0.25 BTC: two partial fills

    seen_trades = await collect(trades, lambda: list(pro.myTrades or []), lambda seen: len(
        [t for t in seen if t["order"] == order["id"]]) >= 2)
    mine = [t for t in seen_trades if t["order"] == order["id"]]
    assert [(t["id"], t["price"], t["amount"]) for t in mine] == \
        [(str(f.id), float(f.price), float(f.contracts)) for f in truth]
    assert [abs(t["fee"]["cost"]) for t in mine] == [float(f.fee) for f in truth]

    seen_orders = await collect(orders, lambda: list(pro.orders or []), lambda seen: any(
        o["id"] == order["id"] and o["status"] == "closed" for o in seen))
    final = [o for o in seen_orders if o["id"] == order["id"]][-1]
    assert final["filled"] == amount

    [long] = sim.market.positions(venue, "main")
    seen_positions = await collect(positions, lambda: cached_positions(pro, venue),
                                   lambda seen: any(
        p["contracts"] == float(long.contracts) and p["side"] == "long" for p in seen))
    latest = [p for p in seen_positions if p["side"] == "long"][-1]
    assert latest["entryPrice"] == pytest.approx(float(long.position.entry_price))

    [usdt] = [b for b in sim.market.balances(venue, "main") if b.asset == "USDT"]
    wanted = float(usdt.wallet) if venue == "binance" else float(usdt.margin_balance)
    await collect(balance, lambda: cached_usdt(pro, venue),
                  lambda seen: any(b.get("total") == pytest.approx(wanted, abs=1e-6)
                                   for b in seen))


def cached_positions(pro: Any, venue: str) -> list[dict[str, Any]]:
    cache = pro.positions.get("linear") if venue == "binance" else pro.positions
    return list(cache or [])


def cached_usdt(pro: Any, venue: str) -> list[dict[str, Any]]:
    balance = pro.balance.get("linear", {}) if venue == "binance" else pro.balance
    return [balance["USDT"]] if balance and "USDT" in balance else []


def _okx_private_subs(simulator: Any) -> list[dict[str, str]]:
    loop = simulator._server.loop

    async def read() -> list[dict[str, str]]:
        return [s for c in simulator._connections.values() for s in c.private]

    return asyncio.run_coroutine_threadsafe(read(), loop).result(5)  # type: ignore[no-any-return]


async def test_injected_fill_reaches_the_stream_but_no_client_order(
        sim: SimulatorStack, venue: str, sim_ccxt: Any) -> None:
    """A fill the desk never sent (back office, manual trade) shows up like any other."""
    clear_positions(sim, venue)
    pro = sim_ccxt(venue, "pro")
    await pro.load_markets()
    trades = Watch(pro.watch_my_trades, BTC)
    simulator = sim.venue(venue)
    await eventually(lambda: simulator.private_connections("main") >= 1)
    if venue == "okx":
        await eventually(lambda: len(_okx_private_subs(simulator)) >= 1)
    async with aiohttp.ClientSession() as http:
        response = await http.post(f"{simulator.url}/__admin/fill", json={
            "symbol": BTC, "side": "buy", "amount": str(contracts_of(sim, venue, "0.1")),
            "price": "60123.4", "position_side": "long" if venue == "okx" else None})
        body = await response.json()
    assert body["ok"] and body["client_order_id"].startswith("external-")
    seen = await collect(trades, lambda: list(pro.myTrades or []),
                         lambda seen: any(t["order"] == str(body["order_id"]) for t in seen))
    [injected] = [t for t in seen if t["order"] == str(body["order_id"])]
    assert injected["price"] == 60123.4
    [position] = sim.market.positions(venue, "main")
    assert position.position.entry_price == Decimal("60123.4")


async def test_funding_is_paid_from_the_wallet_and_reported(sim: SimulatorStack,
                                                            sim_ccxt: Any) -> None:
    clear_positions(sim, "binance")
    sim.market.set_position("binance", "main", BTC, side="long", contracts="2",
                            entry_price="60000")
    before = sim.market.account("binance").balances["USDT"].wallet
    paid = sim.market.settle_funding("binance")
    mark = sim.market.quote("binance", BTC).mark
    rate = sim.market.instrument_specs[BTC].funding_rate
    expected = (-2 * mark * rate).quantize(Decimal("1e-8"))
    assert paid[("main", BTC)] == expected
    assert sim.market.account("binance").balances["USDT"].wallet == before + expected
    exchange = sim_ccxt("binance", "async")
    await exchange.load_markets()
    history = await exchange.fetch_funding_history(BTC)
    assert [h["amount"] for h in history] == [float(expected)]


async def test_okx_private_login_checks_the_signature(sim: SimulatorStack,
                                                      sim_ccxt: Any) -> None:
    pro = sim_ccxt("okx", "pro")
    await pro.load_markets()
    pro.secret = "0" * 32  # the websocket login is signed with the wrong secret
    with pytest.raises(ccxt.AuthenticationError):
        await asyncio.wait_for(pro.watch_orders(BTC), WAIT)


async def test_binance_listen_key_needs_a_valid_api_key(sim: SimulatorStack) -> None:
    simulator = sim.venue("binance")
    async with aiohttp.ClientSession() as http:
        bad = await http.post(f"{simulator.url}/fapi/v1/listenKey",
                              headers={"X-MBX-APIKEY": "nope"})
        assert bad.status == 401 and (await bad.json())["code"] == -2015
        key = sim.market.credentials()["binance"]["main"]["api_key"]
        assert key is not None
        first = await (await http.post(f"{simulator.url}/fapi/v1/listenKey",
                                       headers={"X-MBX-APIKEY": key})).json()
        again = await (await http.post(f"{simulator.url}/fapi/v1/listenKey",
                                       headers={"X-MBX-APIKEY": key})).json()
        assert first["listenKey"] == again["listenKey"]  # the active key is handed back
        async with http.ws_connect(f"{simulator.ws_url}/ws/not-a-key") as ws:
            message = await ws.receive(timeout=WAIT)
            assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


def test_scenario_actions_inject_a_fill_and_settle_funding(sim: SimulatorStack) -> None:
    from risk_sim.scenario import Action

    clear_positions(sim, "binance")
    sim.player.apply(Action.model_validate({"inject_fill": {
        "venue": "binance", "symbol": BTC, "side": "sell", "amount": "1", "price": "61000"}}))
    [short] = sim.market.positions("binance", "main")
    assert (short.side, short.position.entry_price) == ("short", Decimal("61000"))
    [order] = sim.market.orders("binance", "main")[-1:]
    assert order.external and order.client_order_id.startswith("external-")
    wallet = sim.market.account("binance").balances["USDT"].wallet
    sim.player.apply(Action.model_validate({"funding": {"venue": "binance"}}))
    paid = sim.market.account("binance").funding["USDT"]
    assert paid > 0  # a short receives a positive funding rate
    assert sim.market.account("binance").balances["USDT"].wallet == wallet + paid


async def test_binance_listen_key_expiry_ends_the_user_data_stream(sim: SimulatorStack) -> None:
    simulator = sim.venue("binance")
    key = sim.market.credentials()["binance"]["main"]["api_key"]
    assert key is not None
    async with aiohttp.ClientSession() as http:
        created = await (await http.post(f"{simulator.url}/fapi/v1/listenKey",
                                         headers={"X-MBX-APIKEY": key})).json()
        listen_key = created["listenKey"]
        async with http.ws_connect(f"{simulator.ws_url}/private/ws?listenKey={listen_key}") as ws:
            await eventually(lambda: simulator.private_connections("main") >= 1)
            sim.market.set_balance("binance", "main", "USDT", "123")  # an ADJUSTMENT push
            update = await ws.receive_json(timeout=WAIT)
            assert update["e"] == "ACCOUNT_UPDATE" and update["a"]["m"] == "ADJUSTMENT"
            assert update["a"]["B"][0]["wb"] == "123"
            expire = await http.post(f"{simulator.url}/__admin/listen_keys/expire")
            assert (await expire.json())["closed"] == 1
            expired = await ws.receive_json(timeout=WAIT)
            assert expired == {"e": "listenKeyExpired", "E": expired["E"],
                               "listenKey": listen_key}
            closing = await ws.receive(timeout=WAIT)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        keepalive = await http.put(f"{simulator.url}/fapi/v1/listenKey",
                                   headers={"X-MBX-APIKEY": key})
        assert (await keepalive.json())["code"] == -1125  # gone: the client must create anew
