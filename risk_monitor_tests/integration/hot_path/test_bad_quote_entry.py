"""One bad field in one venue's Redis quotes blinds that instrument only: the other instruments
and venues keep flowing to the hot path and to the Dagster snapshot, and the reader goes on."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import redis

from risk_monitor.adapters.market_data import RedisMarketData, quote_policy
from risk_monitor.adapters.redis_quotes import (
    RedisQuoteCache,
    follow_quote_streams,
    quotes_key,
    stream_key,
)
from risk_monitor.domain.schemas import prices_frame
from risk_monitor.platform.settings import MarketDataSettings
from risk_monitor_tests.fixtures.waiting import async_wait_until

BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"
SYMBOLS = {"binance": (BTC, ETH), "okx": (BTC, ETH)}


def quotes(venue: str, at: datetime, bump: float = 0.0) -> pd.DataFrame:
    rows = [{"venue": venue, "instrument": symbol, "base": symbol[:3], "quote": "USDT",
             "bid": price - 1 + bump, "ask": price + 1 + bump, "last": price + bump,
             "mark": price + bump, "timestamp": at, "received_at": at}
            for symbol, price in ((BTC, 60_000.0), (ETH, 3_000.0))]
    return prices_frame(rows)


async def test_a_bad_field_in_one_venue_leaves_the_other_quotes_flowing(
        redis_url: str, redis_prefix: str) -> None:
    market = MarketDataSettings(key_prefix=f"{redis_prefix}:md")
    client = redis.Redis.from_url(redis_url)
    cache = RedisQuoteCache(client, market)
    now = datetime.now(UTC)
    for venue in SYMBOLS:
        cache.write(venue, quotes(venue, now), via="stream")
    # okx's BTC entry: a boolean where the exchange time belongs
    broken = json.loads(client.hget(quotes_key(market.key_prefix, "okx"), BTC))
    client.hset(quotes_key(market.key_prefix, "okx"), BTC, json.dumps({**broken, "ts": False}))

    # the Dagster snapshot: only okx's BTC is missing
    snapshot = RedisMarketData(cache, SYMBOLS, market).latest_prices()
    assert sorted(zip(snapshot.frame["venue"], snapshot.frame["instrument"], strict=True)) == [
        ("binance", BTC), ("binance", ETH), ("okx", ETH)]
    status = {s.venue: s for s in snapshot.sources}
    assert status["binance"].ok
    assert (status["okx"].ok, status["okx"].error_code) == (False, "RM302")
    assert BTC in (status["okx"].error or "")

    # the hot path's reader: seeded without okx's BTC, then goes on through a bad stream entry
    seen: list[tuple[str, str, float]] = []

    def listener(venue: str, rows: list[dict[str, Any]]) -> None:
        seen.extend((venue, str(r["instrument"]), float(r["last"])) for r in rows)

    stop = asyncio.Event()
    reader = asyncio.create_task(follow_quote_streams(
        redis_url, market, list(SYMBOLS), quote_policy(market), stop, listener, block_ms=100))
    try:
        await async_wait_until(lambda: len(seen) >= 3, message="the seed from the hashes")
        assert sorted((v, i) for v, i, _ in seen) == [("binance", BTC), ("binance", ETH),
                                                      ("okx", ETH)]
        client.xadd(stream_key(market.key_prefix, "okx"),
                    {"instrument": BTC, "base": "BTC", "quote": "USDT", "last": "false",
                     "ts": str(int(now.timestamp() * 1000) + 1)})
        cache.write("binance", quotes("binance", datetime.now(UTC), bump=5.0), via="stream")
        cache.write("okx", quotes("okx", datetime.now(UTC), bump=7.0), via="stream")
        await async_wait_until(lambda: ("okx", BTC, 60_007.0) in seen,
                               message="okx quotes after the bad entry")
        assert ("binance", BTC, 60_005.0) in seen and ("okx", ETH, 3_007.0) in seen
        assert not reader.done()  # the reader never stopped
    finally:
        stop.set()
        await asyncio.wait_for(reader, timeout=10)
        client.close()
