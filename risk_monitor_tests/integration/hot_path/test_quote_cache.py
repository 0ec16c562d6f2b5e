"""Who writes what into the Redis quote cache (issue 10): the service's own feed hands every tick
to its hot path at once and conflates the cache to the latest quote per instrument per flush; a
``risk-monitor stream`` feeder (no listener) writes every tick, since its followers decide on
them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from risk_monitor.adapters.redis_quotes import AsyncRedisQuoteCache, RedisQuoteCache, stream_key
from risk_monitor.platform.resilience import guard_for
from risk_monitor.platform.settings import load_settings
from risk_monitor.service.market_stream import VenueFeed
from risk_monitor_tests.fixtures.waiting import async_wait_until

pytestmark = pytest.mark.integration

BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"


async def _feed_five_rounds(tmp_path: Path, redis_url: str, prefix: str,
                            heard: list[dict[str, Any]] | None, *,
                            blocking: redis.Redis | None = None
                            ) -> tuple[aioredis.Redis, AsyncRedisQuoteCache]:
    settings = load_settings(None, data_dir=tmp_path, redis_url=redis_url,
                             venues=[{"id": "binance", "exchange": "binanceusdm",
                                      "symbols": [BTC, ETH]}],
                             market_data={"key_prefix": prefix})
    client = aioredis.Redis.from_url(redis_url)
    listener = None if heard is None else (lambda _venue, rows: heard.extend(rows))
    cache = AsyncRedisQuoteCache(client, settings.market_data, blocking=blocking)
    feed = VenueFeed(settings.venues[0], settings.market_data, guard_for(settings, "binance"),
                     cache=cache, listener=listener)
    now_ms = int(time.time() * 1000)
    for i in range(5):  # what the tick hook hands on: one message per instrument and round
        feed._on_hooked([(BTC, {"last": 100.0 + i, "timestamp": now_ms + i})])
        feed._on_hooked([(ETH, {"last": 10.0 + i, "timestamp": now_ms + i})])
    return client, cache


@pytest.mark.parametrize("off_loop", [False, True], ids=["on-loop", "own-thread"])
async def test_the_services_feed_conflates_the_cache_and_a_feeder_writes_every_tick(
        tmp_path: Path, redis_url: str, redis_prefix: str, off_loop: bool) -> None:
    heard: list[dict[str, Any]] = []
    sync = redis.Redis.from_url(redis_url)
    # the service's feed writes in the cache's own thread (run_market_stream with a listener)
    blocking = redis.Redis.from_url(redis_url) if off_loop else None
    service, service_cache = await _feed_five_rounds(
        tmp_path / "service", redis_url, f"{redis_prefix}:svc", heard, blocking=blocking)
    assert service_cache.off_loop is off_loop
    feeder, _ = await _feed_five_rounds(tmp_path / "feeder", redis_url, f"{redis_prefix}:feed",
                                     None)
    try:
        assert [row["last"] for row in heard][-2:] == [104.0, 14.0]  # every tick, at once
        assert len(heard) == 10
        settings = load_settings(None, data_dir=tmp_path,
                                 market_data={"key_prefix": f"{redis_prefix}:svc"})
        cache = RedisQuoteCache(sync, settings.market_data)
        # the hash is written after the stream entries, in the same pipeline
        await async_wait_until(lambda: len(cache.read("binance")) == 2, timeout=30,
                               message="the conflated flush")
        assert sync.xlen(stream_key(f"{redis_prefix}:svc", "binance")) == 2  # latest, once
        latest = cache.read("binance").set_index("instrument")["last"].to_dict()
        assert latest == {BTC: 104.0, ETH: 14.0}

        key = stream_key(f"{redis_prefix}:feed", "binance")
        await async_wait_until(lambda: sync.xlen(key) >= 10, timeout=30,
                               message="every tick in the feeder's stream")
        assert sync.xlen(key) == 10
    finally:
        sync.close()
        service_cache.close()  # ends its thread and closes the blocking client
        await service.aclose()
        await feeder.aclose()
