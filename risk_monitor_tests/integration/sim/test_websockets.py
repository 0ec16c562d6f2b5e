"""ccxt.pro against the venues' websockets: updates, reconnects, faults, and the raw protocol."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import ccxt
import pytest

from risk_monitor_tests.fixtures.sims import ccxt_client
from risk_monitor_tests.fixtures.waiting import async_wait_until, scaled
from risk_sim.launcher import SimulatorStack
from risk_sim.market import fmt

from .helpers import eventually, f

pytestmark = pytest.mark.integration
BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"
WAIT = scaled(10.0)  # a hang guard: stretched under CI's contention run


@pytest.fixture(params=["binance", "okx"])
def venue(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def pro(sim: SimulatorStack, venue: str) -> AsyncIterator[Any]:
    exchange = ccxt_client(sim, venue, "pro")
    yield exchange
    await exchange.close()


async def watch_until(exchange: Any, symbol: str, wanted: float,
                      field: str = "last", method: str = "watch_ticker") -> dict[str, Any]:
    """Watch until the ticker shows ``wanted`` (earlier pushes may still be queued)."""
    deadline = time.monotonic() + WAIT
    seen: list[Any] = []
    while time.monotonic() < deadline:
        ticker = await asyncio.wait_for(getattr(exchange, method)(symbol),
                                        deadline - time.monotonic())
        seen.append(ticker[field])
        if ticker[field] == wanted:
            return ticker  # type: ignore[no-any-return]
    raise AssertionError(f"{symbol} {field} never reached {wanted}; saw {seen}")


async def test_watch_ticker_follows_price_changes(sim: SimulatorStack, venue: str,
                                                  pro: Any) -> None:
    first = await asyncio.wait_for(pro.watch_ticker(BTC), WAIT)
    assert first["last"] == f(sim.market.quote(venue, BTC).last)
    sim.market.set_price(BTC, 61234.5)
    ticker = await watch_until(pro, BTC, f(sim.market.quote(venue, BTC).last))
    assert abs(ticker["timestamp"] - time.time() * 1000) < 10_000
    sim.market.advance(30)  # the random walk moves it again
    await watch_until(pro, BTC, f(sim.market.quote(venue, BTC).last))


async def test_watch_tickers_delivers_every_symbol(sim: SimulatorStack, venue: str,
                                                   pro: Any) -> None:
    await asyncio.wait_for(pro.watch_tickers([BTC, ETH]), WAIT)
    sim.market.set_price(BTC, 58000)
    sim.market.set_price(ETH, 2800)
    truth = {s: f(sim.market.quote(venue, s).last) for s in (BTC, ETH)}

    async def both_current() -> bool:
        await asyncio.wait_for(pro.watch_tickers([BTC, ETH]), WAIT)
        return all(pro.tickers.get(s, {}).get("last") == truth[s] for s in truth)

    deadline = time.monotonic() + WAIT
    while not await both_current():
        assert time.monotonic() < deadline, {s: pro.tickers.get(s, {}).get("last") for s in truth}


async def test_watch_mark_price(sim: SimulatorStack, venue: str, pro: Any) -> None:
    await asyncio.wait_for(pro.watch_mark_price(ETH), WAIT)
    sim.market.set_price(ETH, 3100)
    await watch_until(pro, ETH, f(sim.market.quote(venue, ETH).mark), field="markPrice",
                      method="watch_mark_price")


async def test_dropped_connections_are_reconnected_by_ccxt(sim: SimulatorStack, venue: str,
                                                           pro: Any) -> None:
    server = sim.venue(venue)
    await asyncio.wait_for(pro.watch_ticker(BTC), WAIT)
    connects = server.ws_connects
    closed = server.disconnect_ws(refuse_seconds=0.5)
    assert closed >= 1
    errors: list[Exception] = []
    sim.market.set_price(BTC, 59500)
    wanted = f(sim.market.quote(venue, BTC).last)

    async def reconnected() -> bool:
        try:
            ticker = await asyncio.wait_for(pro.watch_ticker(BTC), WAIT)
        except ccxt.NetworkError as exc:  # the drop, then refused handshakes for 0.5 s
            errors.append(exc)
            raise
        return bool(ticker["last"] == wanted)

    await async_wait_until(reconnected, timeout=10.0, interval=0.1,
                           message="ccxt to reconnect and show the new price")
    assert errors, "the drop was not noticed"
    assert server.ws_connects > connects


async def test_a_disconnect_fault_drops_the_next_push(sim: SimulatorStack, venue: str,
                                                      pro: Any) -> None:
    server = sim.venue(venue)
    await asyncio.wait_for(pro.watch_ticker(ETH), WAIT)
    server.faults.add("disconnect", "ws:*", count=1)
    sim.market.set_price(ETH, 3333)
    with pytest.raises(ccxt.NetworkError):
        for _ in range(5):
            await asyncio.wait_for(pro.watch_ticker(ETH), WAIT)
    ticker = await asyncio.wait_for(pro.watch_ticker(ETH), WAIT)  # reconnects, fresh snapshot
    assert ticker["last"] == f(sim.market.quote(venue, ETH).last)


async def test_stale_and_delayed_pushes_reach_ccxt(sim: SimulatorStack, venue: str,
                                                   pro: Any) -> None:
    server = sim.venue(venue)
    await asyncio.wait_for(pro.watch_ticker(BTC), WAIT)

    server.faults.add("stale", "ws:*", count=1, seconds=3600)
    sim.market.set_price(BTC, 60100)
    ticker = await asyncio.wait_for(pro.watch_ticker(BTC), WAIT)
    assert time.time() * 1000 - ticker["timestamp"] == pytest.approx(3600_000, abs=30_000)
    assert ticker["last"] == f(sim.market.quote(venue, BTC).last)

    server.faults.add("latency", "ws:*", count=1, seconds=0.5)
    sim.market.set_price(BTC, 60300)
    started = time.monotonic()
    await watch_until(pro, BTC, f(sim.market.quote(venue, BTC).last))
    assert time.monotonic() - started >= 0.4


async def test_a_nan_push_silently_kills_the_ccxt_stream(sim: SimulatorStack, venue: str,
                                                         pro: Any) -> None:
    """ccxt 4.5.90 cannot parse "nan": the handler raises ValueError inside ccxt.pro's receive
    loop (asyncio logs it), which ends that loop. The socket stays open but nothing on it is
    processed any more, not even a close from the server (only the keep-alive ping notices,
    after 2 x keepAlive: 36 s on OKX, 360 s on Binance): consumers must watch for staleness
    and recreate the connection themselves."""
    server = sim.venue(venue)
    await asyncio.wait_for(pro.watch_ticker(BTC), WAIT)
    server.faults.add("nan", "ws:*", count=1)
    sim.market.set_price(BTC, 60200)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pro.watch_ticker(BTC), 1.0)
    sim.market.set_price(BTC, 60400)  # clean data, same connection: never processed
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pro.watch_ticker(BTC), 1.0)
    assert not math.isnan(pro.tickers[BTC]["last"])
    server.disconnect_ws()  # the server hangs up: ccxt does not even notice
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pro.watch_ticker(BTC), 1.0)
    await pro.close()  # what heals it: the consumer drops its connections and watches again
    ticker = await eventually_ticker(pro, BTC)
    assert ticker["last"] == f(sim.market.quote(venue, BTC).last)


async def test_outage_refuses_handshakes_until_cleared(sim: SimulatorStack, venue: str,
                                                       pro: Any) -> None:
    server = sim.venue(venue)
    await asyncio.wait_for(pro.watch_ticker(BTC), WAIT)
    server.disconnect_ws(refuse_seconds=None)  # until accept_ws / clear_faults
    with pytest.raises(ccxt.NetworkError):
        for _ in range(5):
            await asyncio.wait_for(pro.watch_ticker(BTC), WAIT)
    with pytest.raises(ccxt.NetworkError):
        await asyncio.wait_for(pro.watch_ticker(BTC), WAIT)
    assert server.ws_refused >= 1
    server.accept_ws()
    ticker = await eventually_ticker(pro, BTC)
    assert ticker["last"] == f(sim.market.quote(venue, BTC).last)


async def eventually_ticker(exchange: Any, symbol: str) -> dict[str, Any]:
    """The first ticker after a reconnect (a refused handshake counts as "not yet")."""
    ticker: dict[str, Any] = await async_wait_until(
        lambda: asyncio.wait_for(exchange.watch_ticker(symbol), WAIT), timeout=10.0,
        interval=0.1, message=f"a {symbol} ticker after the reconnect")
    return ticker


# -- raw protocol -----------------------------------------------------------------------------------
async def receive_json(ws: aiohttp.ClientWebSocketResponse) -> Any:
    message = await asyncio.wait_for(ws.receive(), WAIT)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    return json.loads(message.data) if message.data not in ("pong",) else message.data


async def test_binance_protocol_subscribe_list_unsubscribe(sim: SimulatorStack) -> None:
    assert sim.binance is not None
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(f"{sim.binance.ws_url}/market/ws/7") as ws:
        await ws.send_str(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@ticker"],
                                      "id": 1}))
        assert await receive_json(ws) == {"result": None, "id": 1}
        snapshot = await receive_json(ws)
        assert snapshot["e"] == "24hrTicker" and snapshot["s"] == "BTCUSDT"
        assert snapshot["c"] == fmt(sim.market.quote("binance", BTC).last)
        await ws.send_str(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
        assert await receive_json(ws) == {"result": ["btcusdt@ticker"], "id": 2}
        await ws.send_str(json.dumps({"method": "SUBSCRIBE", "params": ["nonsense"], "id": 3}))
        error = await receive_json(ws)
        assert error["id"] == 3 and error["error"]["code"] == 2
        await ws.send_str(json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@ticker"],
                                      "id": 4}))
        assert await receive_json(ws) == {"result": None, "id": 4}
        await ws.send_str(json.dumps({"method": "SUBSCRIBE", "params": ["!miniTicker@arr"],
                                      "id": 5}))
        assert await receive_json(ws) == {"result": None, "id": 5}
        every = await receive_json(ws)
        assert {e["s"] for e in every} == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
        sim.market.set_price(ETH, 2999)
        update = await receive_json(ws)
        assert [e["s"] for e in update] == ["ETHUSDT"]  # BTC's ticker stream was dropped
        assert update[0]["e"] == "24hrMiniTicker"


async def test_binance_answers_ping_frames(sim: SimulatorStack) -> None:
    assert sim.binance is not None
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(f"{sim.binance.ws_url}/ws", autoping=False) as ws:
        await ws.ping(b"keepalive")
        message = await asyncio.wait_for(ws.receive(), WAIT)
        assert (message.type, message.data) == (aiohttp.WSMsgType.PONG, b"keepalive")


async def test_binance_combined_streams_in_the_url(sim: SimulatorStack) -> None:
    assert sim.binance is not None
    url = f"{sim.binance.ws_url}/stream?streams=btcusdt@markPrice@1s/ethusdt@bookTicker"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        first, second = await receive_json(ws), await receive_json(ws)
        by_stream = {m["stream"]: m["data"] for m in (first, second)}
        assert by_stream["btcusdt@markPrice@1s"]["e"] == "markPriceUpdate"
        assert by_stream["btcusdt@markPrice@1s"]["p"] == \
            fmt(sim.market.quote("binance", BTC).mark)
        assert by_stream["ethusdt@bookTicker"]["b"] == \
            fmt(sim.market.quote("binance", ETH).bid)


async def test_okx_protocol_ping_subscribe_and_errors(sim: SimulatorStack) -> None:
    assert sim.okx is not None
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(f"{sim.okx.ws_url}/ws/v5/public") as ws:
        await ws.send_str("ping")
        assert await receive_json(ws) == "pong"
        arg = {"channel": "tickers", "instId": "BTC-USDT-SWAP"}
        await ws.send_str(json.dumps({"op": "subscribe", "args": [arg]}))
        ack = await receive_json(ws)
        assert ack["event"] == "subscribe" and ack["arg"] == arg and ack["connId"]
        push = await receive_json(ws)
        assert push["arg"] == arg
        assert push["data"][0]["last"] == fmt(sim.market.quote("okx", BTC).last)
        await ws.send_str(json.dumps({"op": "subscribe", "args": [
            {"channel": "tickers", "instId": "NOPE-USDT-SWAP"}]}))
        error = await receive_json(ws)
        assert error["event"] == "error" and error["code"] == "60018"
        await ws.send_str(json.dumps({"op": "unsubscribe", "args": [arg]}))
        assert (await receive_json(ws))["event"] == "unsubscribe"
        sim.market.set_price(BTC, 60500)
        await ws.send_str("ping")
        assert await receive_json(ws) == "pong"  # no ticker push came in between


async def test_wait_for_subscription_sees_ccxt_subscribe(sim: SimulatorStack,
                                                        sim_ccxt: Any) -> None:
    server = sim.venue("okx")
    exchange = sim_ccxt("okx", "pro")
    task = asyncio.ensure_future(exchange.watch_ticker(ETH))
    await eventually(lambda: "tickers:ETH-USDT-SWAP" in server.ws_subscriptions())
    await asyncio.wait_for(task, WAIT)
    assert server.ws_connection_count() == 1
