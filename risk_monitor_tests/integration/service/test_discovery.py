"""Registration and discovery against real Redis servers: heartbeat, TTL expiry, cache, and change
notification by polling (the shared Redis, left as configured) and by keyspace notifications
(a private Redis where CONFIG SET is allowed)."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import pytest
import redis

from risk_monitor.adapters.redis_registry import (
    DiscoveryClient,
    RedisServiceRegistry,
    Registration,
    ServiceInstance,
    connect,
)
from risk_monitor_tests.fixtures.service import RedisProcess, wait_until

pytestmark = pytest.mark.integration

Changes = queue.Queue[list[ServiceInstance]]


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


def next_change(changes: Changes, timeout: float) -> list[ServiceInstance]:
    return changes.get(timeout=timeout)


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
    assert [i.instance_id for i in discovery.instances("svc-b", fresh=True)] == ["i1"]
    registry.deregister("svc-b", "i1")
    discovery.invalidate("svc-b")
    assert discovery.instances("svc-b") == []


def test_polling_watch_sees_join_leave_and_expiry(private_redis: RedisProcess) -> None:
    client = connect(private_redis.url)
    client.config_set("notify-keyspace-events", "")  # as most servers run: polling it is
    discovery = DiscoveryClient(client, poll_interval_s=0.1)
    changes: Changes = queue.Queue()
    stop = discovery.watch("svc-c", lambda _, found: changes.put(found))
    try:
        assert discovery.mode == "polling"
        assert next_change(changes, 5) == []
        registry = RedisServiceRegistry(client)
        registry.register("svc-c", "i1", info(3000), ttl_s=10)
        assert [i.instance_id for i in next_change(changes, 5)] == ["i1"]
        registry.register("svc-c", "i2", info(3002), ttl_s=0.5)  # no heartbeat: it dies
        assert {i.instance_id for i in next_change(changes, 5)} == {"i1", "i2"}
        assert [i.instance_id for i in next_change(changes, 30)] == ["i1"]  # i2 expired
        registry.deregister("svc-c", "i1")
        assert next_change(changes, 5) == []
    finally:
        stop()
        client.close()


def test_keyspace_watch_when_allowed_to_configure(private_redis: RedisProcess) -> None:
    client = connect(private_redis.url)
    try:
        client.config_set("notify-keyspace-events", "")
        # poll only every 30 s: anything faster than that came from a notification
        discovery = DiscoveryClient(client, prefix="svc", poll_interval_s=30,
                                    configure_keyspace_events=True)
        changes: Changes = queue.Queue()
        stop = discovery.watch("svc-d", lambda _, found: changes.put(found))
        try:
            assert discovery.mode == "keyspace"
            flags = str(client.config_get("notify-keyspace-events")["notify-keyspace-events"])
            assert {"K", "g", "h", "x"} <= set(flags) or "A" in flags
            assert next_change(changes, 5) == []
            registry = RedisServiceRegistry(client)
            registry.register("svc-d", "i1", info(4000), ttl_s=0.8)
            assert [i.instance_id for i in next_change(changes, 5)] == ["i1"]
            # nobody refreshes it: the expiry event announces the departure
            assert next_change(changes, 5) == []
            registry.register("svc-d", "i2", info(4002), ttl_s=10)
            assert [i.instance_id for i in next_change(changes, 5)] == ["i2"]
            registry.deregister("svc-d", "i2")
            assert next_change(changes, 5) == []
        finally:
            stop()
    finally:
        client.close()


def test_keyspace_not_configured_without_permission(private_redis: RedisProcess) -> None:
    client = connect(private_redis.url)
    try:
        client.config_set("notify-keyspace-events", "")
        discovery = DiscoveryClient(client, configure_keyspace_events=False)
        stop = discovery.watch("svc-e", lambda *_: None)
        stop()
        assert discovery.mode == "polling"
        assert client.config_get("notify-keyspace-events")["notify-keyspace-events"] == ""
        client.config_set("notify-keyspace-events", "KEA")  # already on: used as it is
        assert DiscoveryClient(client).keyspace_available() is True
    finally:
        client.close()


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
