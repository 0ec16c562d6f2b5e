"""The live feed (ccxt.pro websockets -> Redis quote cache) and ``market_prices`` read from it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY

from risk_monitor.adapters.redis_quotes import RedisQuoteCache, stream_entry_row
from risk_monitor.platform.settings import Settings, load_settings
from risk_monitor.service.market_stream import VenueFeed, run_market_stream
from risk_monitor_tests.fixtures.waiting import async_wait_until
from risk_monitor_tests.integration.collection.conftest import SYMBOLS, Sims, WriteSettings
from risk_monitor_tests.integration.collection.helpers import (
    add_fault,
    materialize,
    metadata,
    output,
)

pytestmark = pytest.mark.integration


@dataclass
class Running:
    settings: Settings
    config: Path
    cache: RedisQuoteCache
    feeds: dict[str, VenueFeed]
    stop: asyncio.Event
    task: asyncio.Task[list[VenueFeed]]


@pytest.fixture
async def stream(sims: Sims, write_settings: WriteSettings, redis_url: str,
                 redis_prefix: str) -> AsyncIterator[Running]:
    config = write_settings(sims.settings_doc(
        redis_url=redis_url, market_data={"source": "redis", "key_prefix": redis_prefix}))
    settings = load_settings(config)
    stop = asyncio.Event()
    feeds: dict[str, VenueFeed] = {}
    task = asyncio.create_task(run_market_stream(settings, stop))
    await asyncio.sleep(0)
    client = redis.Redis.from_url(redis_url)
    running = Running(settings, config, RedisQuoteCache(client, settings.market_data), feeds,
                      stop, task)
    await asyncio.to_thread(sims.binance.wait_for_subscription, "btcusdt@miniTicker", 60)
    await asyncio.to_thread(sims.okx.wait_for_subscription, "tickers:BTC-USDT-SWAP", 60)
    yield running
    stop.set()
    for feed in await asyncio.wait_for(task, 15):
        feeds[feed.venue.id] = feed
    client.close()


def cached_last(running: Running, venue: str, symbol: str) -> float | None:
    frame = running.cache.read(venue)
    rows = frame[frame["instrument"] == symbol]
    return float(rows["last"].iloc[0]) if len(rows) else None


def streamed_lasts(running: Running, venue: str, symbol: str) -> list[float]:
    """Every ``last`` written for ``symbol`` to the venue's quote stream, oldest first."""
    client = redis.Redis.from_url(running.settings.redis_url or "")
    try:
        entries = client.xrange(f"{running.settings.market_data.key_prefix}:stream:{venue}")
    finally:
        client.close()
    rows = [stream_entry_row(venue, fields) for _, fields in entries]
    return [float(r["last"]) for r in rows if r["instrument"] == symbol]


def rejections(venue: str, reason: str) -> float:
    """Ticks of ``venue`` the live feed rejected for ``reason`` so far (its Prometheus counter)."""
    value = REGISTRY.get_sample_value("risk_monitor_market_ticks_total",
                                      {"venue": venue, "outcome": f"rejected_{reason}"})
    return value or 0.0


def quoted(running: Running, venue: str, symbol: str, price: float) -> Callable[[], bool]:
    return lambda: cached_last(running, venue, symbol) == price


async def test_ticks_reach_the_cache_and_market_prices_reads_them(sims: Sims,
                                                                  stream: Running) -> None:
    sims.market.set_price("BTC/USDT:USDT", "61000")
    sims.market.set_price("ETH/USDT:USDT", "3100")
    for venue in ("binance", "okx"):
        for symbol, price in (("BTC/USDT:USDT", 61000.0), ("ETH/USDT:USDT", 3100.0)):
            await async_wait_until(quoted(stream, venue, symbol, price), timeout=10,
                                   message=f"{venue} {symbol} at {price} in the cache")
    assert stream.cache.status("binance")["mode"] == "stream"
    result = await asyncio.to_thread(materialize, stream.config, "market_prices")
    prices = output(result, "market_prices")
    assert prices.complete
    frame = prices.frame.set_index(["venue", "instrument"])
    for venue in ("binance", "okx"):
        for symbol in SYMBOLS:
            quote = sims.market.quote(venue, symbol)
            assert frame.loc[(venue, symbol), "last"] == float(quote.last)
    assert frame.loc[("okx", "BTC/USDT:USDT"), "bid"] == float(sims.market.quote(
        "okx", "BTC/USDT:USDT").bid)
    meta = metadata(result, "market_prices")
    assert meta["source"] == "redis"
    entries = redis.Redis.from_url(stream.settings.redis_url or "").xlen(
        f"{stream.settings.market_data.key_prefix}:stream:okx")
    assert entries >= 2


async def test_the_feed_resumes_after_a_disconnect_and_polls_rest_meanwhile(
        sims: Sims, stream: Running) -> None:
    sims.market.set_price("BTC/USDT:USDT", "60500")
    await async_wait_until(lambda: cached_last(stream, "binance", "BTC/USDT:USDT") == 60500.0,
                           timeout=10, message="first tick")
    started = time.monotonic()
    # refused long enough that the REST quote below lands inside the outage even on a busy box
    assert sims.binance.disconnect_ws(refuse_seconds=20) >= 1
    await async_wait_until(lambda: stream.cache.status("binance").get("mode") == "rest_fallback",
                           timeout=5, message="fallback mode recorded")
    # while the websocket is refused, REST polling keeps the cache current
    sims.market.set_price("BTC/USDT:USDT", "60700")
    await async_wait_until(lambda: cached_last(stream, "binance", "BTC/USDT:USDT") == 60700.0,
                           timeout=15, message="a REST-polled quote during the outage")
    assert sims.binance.ws_refusing()
    await async_wait_until(lambda: stream.cache.status("binance").get("mode") == "stream",
                           timeout=60, message="the websocket is back")
    assert time.monotonic() - started >= 20  # not back before the refusal ended
    sims.market.set_price("BTC/USDT:USDT", "60900")
    await async_wait_until(lambda: cached_last(stream, "binance", "BTC/USDT:USDT") == 60900.0,
                           timeout=10, message="a streamed quote after the reconnect")
    stream.stop.set()
    feeds = {f.venue.id: f for f in await asyncio.wait_for(stream.task, 15)}
    assert feeds["binance"].reconnects >= 1
    assert feeds["binance"].rest_polls >= 1
    assert feeds["okx"].reconnects == 0


@pytest.mark.parametrize(("kind", "params", "reason"), [
    ("nan", {}, "unparseable"),  # ccxt.pro's own parser fails on NaN: dropped, loop kept alive
    ("malformed", {}, "unparseable"),
    ("negative", {}, "invalid"),
    ("stale", {"seconds": 3600}, "stale"),
    ("skew", {"seconds": 600}, "future"),
])
async def test_bad_ticks_are_rejected_counted_and_never_stored(
        sims: Sims, stream: Running, kind: str, params: dict[str, Any], reason: str) -> None:
    sims.market.set_price("ETH/USDT:USDT", "3050")
    await async_wait_until(lambda: cached_last(stream, "okx", "ETH/USDT:USDT") == 3050.0,
                           timeout=10, message="good tick")
    before = rejections("okx", reason)
    fault = add_fault(sims.okx, kind, "ws:*", **params)
    sims.market.set_price("ETH/USDT:USDT", "3070")
    await async_wait_until(lambda: any(k == kind for _, k, _ in sims.okx.faults.fired), timeout=30,
                           message="fault fired")
    # the feed reads ccxt's ticker cache, where a newer tick replaces an unread one: wait until
    # the bad tick was handled before sending the next good one
    await async_wait_until(lambda: rejections("okx", reason) > before, timeout=30,
                           message=f"the {kind} tick rejected as {reason}")
    sims.okx.faults.remove(fault.id)
    sims.market.set_price("ETH/USDT:USDT", "3090")  # the feed survived and still delivers
    await async_wait_until(lambda: cached_last(stream, "okx", "ETH/USDT:USDT") == 3090.0,
                           timeout=10, message="good tick after the bad one")
    # one websocket delivers in order: the bad tick was handled before 3090 was stored, and
    # the quote stream (every write, in order) never held it
    assert streamed_lasts(stream, "okx", "ETH/USDT:USDT")[-2:] == [3050.0, 3090.0]
    stream.stop.set()
    feeds = {f.venue.id: f for f in await asyncio.wait_for(stream.task, 15)}
    assert feeds["okx"].rejected.get(reason, 0) >= 1, feeds["okx"].rejected
    assert feeds["okx"].reconnects == 0
