"""Registration and discovery against real Redis servers: heartbeat, TTL expiry, cache, and
re-registration after a Redis restart (a private Redis that can be killed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from risk_monitor.adapters.redis_registry import (
    DiscoveryClient,
    RedisServiceRegistry,
    Registration,
    connect,
)
from risk_monitor_tests.fixtures.service import RedisProcess, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def shared(redis_url: str) -> Iterator[redis.Redis]:
    client = connect(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def private_redis() -> Iterator[RedisProcess]:
    server = RedisProcess().start()
    yield server
    server.stop()


def info(port: int) -> dict[str, object]:
    return {"grpc_address": f"127.0.0.1:{port}", "rest_url": f"http://127.0.0.1:{port + 1}",
            "version": "t", "venues": ["binance"], "started_at": "2025-10-01T00:00:00+00:00"}


def test_heartbeat_keeps_an_instance_alive_past_its_ttl(shared: redis.Redis,
                                                        redis_prefix: str) -> None:
    registry = RedisServiceRegistry(shared, prefix=redis_prefix)
    registration = Registration(registry, "svc-a", "i1", info(1000), ttl_s=0.6).start()
    try:
        seen = {"refreshes": 0, "ttl": shared.pttl(registration.key)}

        def heartbeats() -> bool:  # the TTL going back up is a refresh: count them, no sleep
            ttl = shared.pttl(registration.key)
            seen["refreshes"] += ttl > seen["ttl"]
            seen["ttl"] = ttl
            return seen["refreshes"] >= 5  # ~1.7 TTLs of heartbeats (one every TTL/3)

        wait_until(heartbeats, timeout=30, interval=0.02, message="five heartbeats")
        assert shared.exists(registration.key)
        assert 0 < shared.pttl(registration.key) <= 600
        (found,) = DiscoveryClient(shared, prefix=redis_prefix).instances("svc-a")
        assert found.grpc_address == "127.0.0.1:1000" and found.venues == ("binance",)
    finally:
        registration.stop()
    assert not shared.exists(registration.key)


def test_cache_serves_until_its_ttl(shared: redis.Redis, redis_prefix: str) -> None:
    registry = RedisServiceRegistry(shared, prefix=redis_prefix)
    discovery = DiscoveryClient(shared, prefix=redis_prefix, cache_ttl_s=30)
    assert discovery.instances("svc-b") == []
    registry.register("svc-b", "i1", info(2000), ttl_s=5)
    assert discovery.instances("svc-b") == []  # cached answer
    discovery.invalidate("svc-b")
    assert [i.instance_id for i in discovery.instances("svc-b")] == ["i1"]
    registry.deregister("svc-b", "i1")
    discovery.invalidate("svc-b")
    assert discovery.instances("svc-b") == []


def test_registration_recovers_when_redis_comes_back(private_redis: RedisProcess) -> None:
    client = connect(private_redis.url, timeout_s=0.5)
    registration = Registration(RedisServiceRegistry(client), "svc-f", "i1", info(5000),
                                ttl_s=0.9).start()
    try:
        assert registration.healthy
        private_redis.kill()
        wait_until(lambda: not registration.healthy, 5, message="failure noticed")
        private_redis.start()
        wait_until(lambda: registration.healthy and client.exists(registration.key), 5,
                   message="registered again")
    finally:
        registration.stop()
        client.close()
