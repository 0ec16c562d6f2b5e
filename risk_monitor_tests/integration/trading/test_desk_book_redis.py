"""The desk's book in Redis (adapters/redis_desk_book.py) on a real server: values with the time
the desk changed each item, read in one MULTI; the book-wide ``updated_at`` as a fallback."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis

from risk_monitor.adapters.redis_desk_book import read_desk_book
from risk_monitor.platform.errors import DataValidationError

BTC = "BTC/USDT:USDT"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


def publish(client: redis.Redis, key: str, item: str, value: float, at: float) -> None:
    """What the desk's trading client does on each change (risk_sim/trading/session.py)."""
    pipe = client.pipeline(transaction=True)
    pipe.hset(key, item, str(value))
    pipe.hset(f"{key}:as_of", item, at)
    pipe.set(f"{key}:updated_at", at)
    pipe.execute()


def test_items_carry_the_time_the_desk_changed_them(client: redis.Redis,
                                                    redis_prefix: str) -> None:
    key = f"{redis_prefix}:desk:book"
    assert read_desk_book(client, key) is None  # nothing published: nothing to compare
    publish(client, key, f"okx|position|{BTC}", 1.0, 1_700_000_000.0)
    publish(client, key, f"binance|position|{BTC}", 2.5, 1_700_000_100.5)
    book = read_desk_book(client, key)
    assert book is not None
    assert dict(book.items) == {("okx", BTC, "position"): 1.0, ("binance", BTC, "position"): 2.5}
    assert dict(book.as_of) == {
        ("okx", BTC, "position"): datetime.fromtimestamp(1_700_000_000.0, UTC),
        ("binance", BTC, "position"): datetime.fromtimestamp(1_700_000_100.5, UTC)}


def test_without_item_times_updated_at_stands_for_every_item(client: redis.Redis,
                                                             redis_prefix: str) -> None:
    key = f"{redis_prefix}:desk:book"
    client.hincrbyfloat(key, f"okx|position|{BTC}", 1.0)  # an older client: values only
    book = read_desk_book(client, key)
    assert book is not None and dict(book.as_of) == {}  # compared by value alone
    client.set(f"{key}:updated_at", 1_700_000_000)
    book = read_desk_book(client, key)
    assert book is not None
    assert dict(book.as_of) == {("okx", BTC, "position"):
                                datetime.fromtimestamp(1_700_000_000, UTC)}
    client.hset(f"{key}:as_of", f"okx|position|{BTC}", "yesterday")
    with pytest.raises(DataValidationError, match="not unix seconds"):
        read_desk_book(client, key)
