"""The configuration-service contract (simulator over real HTTP) and the production client:
discovery through the real Redis, hot reload, rejection of invalid documents, disk cache."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from risk_monitor.adapters.config_service import (
    SOURCE_CACHE,
    SOURCE_SERVICE,
    AppliedConfig,
    ConfigServiceLocator,
    HttpConfigSource,
)
from risk_monitor.adapters.limit_provider import LimitConfigProvider
from risk_monitor.adapters.redis_registry import DiscoveryClient, connect
from risk_monitor.adapters.sql import Storage
from risk_monitor.domain.limits import LimitConfig
from risk_monitor.platform.errors import ConfigError, DiscoveryError, ServiceError
from risk_monitor.platform.settings import (
    ConfigServiceSettings,
    ResilienceSettings,
    load_settings,
)
from risk_monitor_tests.fixtures.service import desk_limits, free_port, write_limits
from risk_monitor_tests.fixtures.waiting import async_wait_until
from risk_sim.config_service import ConfigServiceSimulator, document_version

pytestmark = pytest.mark.integration

COMPONENT = "risk-monitor"
FAST = ResilienceSettings(timeout_s=2.0, backoff_initial_s=0.05, backoff_max_s=0.2)


def doc(breach: float = 1_000_000.0) -> dict[str, Any]:
    return {"limits": desk_limits(btc_warn=breach * 0.8, btc_breach=breach)}


@pytest.fixture(scope="module")
def sim(redis_url: str, module_redis_prefix: str) -> Iterator[ConfigServiceSimulator]:
    simulator = ConfigServiceSimulator(redis_url=redis_url,
                                       registry_prefix=f"{module_redis_prefix}:svc").start()
    yield simulator
    simulator.stop()


@pytest.fixture
def component() -> str:
    """A component name of the test's own, so tests sharing the simulator never interfere."""
    return f"comp-{uuid.uuid4().hex[:8]}"


def url(sim: ConfigServiceSimulator, component: str) -> str:
    return f"{sim.url}/v1/config/{component}"


def _btc_breach(config: LimitConfig) -> float:
    return next(d for d in config.limits if d.id == "btc-binance-notional").breach


# -- the HTTP contract ----------------------------------------------------------------------------
def test_health_and_unknown_component(sim: ConfigServiceSimulator, component: str) -> None:
    assert httpx.get(f"{sim.url}/healthz", timeout=5).json()["status"] == "ok"
    response = httpx.get(url(sim, component), timeout=5)
    assert response.status_code == 404 and response.json()["error"] == "not_found"


def test_put_get_etag_and_conditional_get(sim: ConfigServiceSimulator, component: str) -> None:
    document = doc()
    put = httpx.put(url(sim, component), json={"document": document}, timeout=5)
    assert put.status_code == 200
    body = put.json()
    assert body["version"] == document_version(document) and body["revision"] == 1
    assert body["changed"] is True
    got = httpx.get(url(sim, component), timeout=5)
    assert got.status_code == 200
    assert got.headers["ETag"] == f'"{body["version"]}"'
    assert got.json()["document"] == document and got.json()["component"] == component
    not_modified = httpx.get(url(sim, component), headers={"If-None-Match": got.headers["ETag"]},
                             timeout=5)
    assert not_modified.status_code == 304
    # same content again: same version, no new revision
    again = httpx.put(url(sim, component), json={"document": document}, timeout=5).json()
    assert again["version"] == body["version"] and again["revision"] == 1
    assert again["changed"] is False
    listing = httpx.get(f"{sim.url}/v1/config", timeout=5).json()["components"]
    assert {"component": component, "version": body["version"], "revision": 1} \
        .items() <= next(c for c in listing if c["component"] == component).items()


def test_put_with_stale_if_match_is_refused(sim: ConfigServiceSimulator, component: str) -> None:
    first = sim.publish(component, doc(1e6))
    second = sim.publish(component, doc(2e6))
    refused = httpx.put(url(sim, component), json={"document": doc(3e6)},
                        headers={"If-Match": f'"{first}"'}, timeout=5)
    assert refused.status_code == 412 and refused.json()["current_version"] == second
    accepted = httpx.put(url(sim, component), json={"document": doc(3e6)},
                         headers={"If-Match": f'"{second}"'}, timeout=5)
    assert accepted.status_code == 200 and accepted.json()["revision"] == 3


def test_bad_put_bodies_are_rejected(sim: ConfigServiceSimulator, component: str) -> None:
    for body in (b"not json", b"[1, 2]", b'{"document": 3}'):
        response = httpx.put(url(sim, component), content=body,
                             headers={"Content-Type": "application/json"}, timeout=5)
        assert response.status_code == 400, body
    assert sim.current(component) is None


def test_long_poll_returns_the_new_version_as_soon_as_it_is_published(
        sim: ConfigServiceSimulator, component: str) -> None:
    v1 = sim.publish(component, doc(1e6))
    timer = threading.Timer(0.3, lambda: sim.publish(component, doc(2e6)))
    started = time.monotonic()
    timer.start()
    wait_s = 30
    response = httpx.get(url(sim, component), params={"wait_s": wait_s, "after": v1},
                         timeout=wait_s + 15)
    elapsed = time.monotonic() - started
    timer.join()
    assert response.status_code == 200
    assert response.json()["version"] == document_version(doc(2e6))
    assert elapsed < wait_s  # woken by the publish, before the long poll's own timeout


def test_long_poll_times_out_with_304(sim: ConfigServiceSimulator, component: str) -> None:
    version = sim.publish(component, doc())
    response = httpx.get(url(sim, component), params={"wait_s": 0.3, "after": version},
                         timeout=5)
    assert response.status_code == 304 and response.headers["ETag"] == f'"{version}"'


def test_simulator_registers_in_discovery_and_leaves_on_stop(redis_url: str,
                                                             module_redis_prefix: str) -> None:
    prefix = f"{module_redis_prefix}:own"
    simulator = ConfigServiceSimulator(redis_url=redis_url, registry_prefix=prefix,
                                       registry_ttl_s=5).start()
    client = connect(redis_url)
    try:
        discovery = DiscoveryClient(client, prefix=prefix, cache_ttl_s=0)
        (instance,) = discovery.instances("config-service")
        assert instance.rest_url == simulator.url
        assert 0 < client.pttl(simulator.registry_key) <= 5000
        simulator.stop()
        assert discovery.instances("config-service") == []
    finally:
        simulator.stop()
        client.close()


# -- the client ------------------------------------------------------------------------------------
def settings_for(component: str, **kw: Any) -> ConfigServiceSettings:
    return ConfigServiceSettings(enabled=True, component=component, poll_timeout_s=1.0, **kw)


def service_limits(component: str, tmp_path: Path, store: str, *, url: str | None = None,
                discovery: DiscoveryClient | None = None, cache: Path | None = None,
                limits_file: Path | None = None) -> LimitConfigProvider:
    """The service's limit provider (start/stop run its refresh loop), over an embedded store
    ``store``."""
    settings = load_settings(None, data_dir=tmp_path, resilience=FAST.model_dump(),
                             **({"limits_file": str(limits_file)} if limits_file else {}),
                             config_service=settings_for(component, url=url,
                                                         cache_path=cache).model_dump())
    versions = Storage.open(f"sqlite:///{tmp_path / store}.db").config_versions
    locator = ConfigServiceLocator(settings.config_service, discovery)
    return LimitConfigProvider(settings, versions, HttpConfigSource(locator, timeout_s=2.0))


def test_sync_source_finds_the_service_through_discovery(sim: ConfigServiceSimulator,
                                                         component: str, redis_url: str,
                                                         module_redis_prefix: str) -> None:
    version = sim.publish(component, doc())
    client = connect(redis_url)
    try:
        discovery = DiscoveryClient(client, prefix=f"{module_redis_prefix}:svc")
        source = HttpConfigSource(ConfigServiceLocator(settings_for(component), discovery))
        assert source.fetch(component) == (version, doc())
        with pytest.raises(ConfigError):
            source.fetch(f"{component}-absent")
        missing = ConfigServiceLocator(settings_for(component, service_name="nobody"), discovery)
        with pytest.raises(DiscoveryError):
            HttpConfigSource(missing).fetch(component)
    finally:
        client.close()


def test_sync_source_maps_server_errors(sim: ConfigServiceSimulator, component: str) -> None:
    sim.publish(component, doc())
    fault = sim.faults.add("http_error", f"/v1/config/{component}", status=503)
    try:
        source = HttpConfigSource(ConfigServiceLocator(settings_for(component, url=sim.url)))
        with pytest.raises(ServiceError) as info:
            source.fetch(component)
        assert info.value.retryable and info.value.details["http_status"] == 503
    finally:
        sim.faults.remove(fault.id)


async def test_refresh_loop_applies_hot_reloads_rejects_and_caches(
        sim: ConfigServiceSimulator, component: str, tmp_path: Path) -> None:
    v1 = sim.publish(component, doc(1e6))
    cache = tmp_path / "cache.json"
    limits_file = write_limits(tmp_path / "limits.yaml", desk_limits())
    limits = service_limits(component, tmp_path, "hot", url=sim.url, cache=cache,
                          limits_file=limits_file)
    state = limits.state
    applied: list[AppliedConfig] = []
    state.on_applied(applied.append)
    await limits.start()
    try:
        assert [a.source for a in applied] == [SOURCE_SERVICE]
        assert state.current is not None and state.current.version == v1
        assert _btc_breach(state.current.limits) == 1e6

        v2 = sim.publish(component, doc(2e6))
        await async_wait_until(lambda: applied[-1].version == v2)
        assert state.current is not None
        assert _btc_breach(state.current.limits) == 2e6
        assert state.current.limits_version != applied[0].limits_version
        assert json.loads(cache.read_text())["version"] == v2

        # warn above breach: the domain schema refuses it; v2 stays in force
        bad = {"limits": desk_limits(btc_warn=3e6, btc_breach=2e6)}
        bad_version = sim.publish(component, bad)
        await async_wait_until(lambda: state.rejected == 1)
        assert state.current.version == v2
        assert state.last_rejection is not None and state.last_rejection.startswith(bad_version)
        assert "limits.limits[0].warn" in state.last_rejection or "warn" in state.last_rejection
        assert json.loads(cache.read_text())["version"] == v2  # never cache a bad document

        # a 5xx burst is retried; the next version still arrives
        fault = sim.faults.add("http_error", f"/v1/config/{component}", count=3, status=500)
        # a long poll already waiting would answer v3 without meeting the fault: publish once
        # the limits has met it (its next poll, within the 1 s long-poll timeout)
        await async_wait_until(lambda: limits.contact.failures >= 1, timeout=60)
        v3 = sim.publish(component, doc(3e6))
        # the listeners are told after the swap: wait for them, not only for state.current
        await async_wait_until(lambda: applied[-1].version == v3)
        sim.faults.remove(fault.id)
        assert limits.contact.failures >= 1
    finally:
        await limits.stop()
    assert [a.version for a in applied][-1] == v3


async def test_start_from_disk_cache_while_the_service_is_down(
        sim: ConfigServiceSimulator, component: str, tmp_path: Path) -> None:
    # first run: the service is up, the document is cached
    version = sim.publish(component, doc(4e6))
    cache = tmp_path / "cache.json"
    limits = service_limits(component, tmp_path, "first", url=sim.url, cache=cache)
    await limits.start()
    await limits.stop()
    assert json.loads(cache.read_text())["version"] == version

    # second run, on another store (nothing in it): nothing listens at the configured URL
    dead = f"http://127.0.0.1:{free_port()}"
    limits = service_limits(component, tmp_path, "second", url=dead, cache=cache,
                          limits_file=write_limits(tmp_path / "l.yaml", desk_limits()))
    second = limits.state
    await limits.start()
    try:
        assert second.current is not None
        assert (second.current.source, second.current.version) == (SOURCE_CACHE, version)
        assert _btc_breach(second.current.limits) == 4e6
        assert second.status()["service_synced"] is True
        assert limits.readiness()["service_connected"] is False
    finally:
        await limits.stop()


async def test_refresh_loop_rediscovers_a_moved_service(redis_url: str, module_redis_prefix: str,
                                                   component: str, tmp_path: Path) -> None:
    prefix = f"{module_redis_prefix}:moving"
    first = ConfigServiceSimulator(redis_url=redis_url, registry_prefix=prefix,
                                   initial={component: doc(1e6)}).start()
    client = connect(redis_url)
    second: ConfigServiceSimulator | None = None
    discovery = DiscoveryClient(client, prefix=prefix, cache_ttl_s=0.1)
    limits = service_limits(component, tmp_path, "moving", discovery=discovery)
    state = limits.state
    try:
        await limits.start()
        assert state.current is not None and state.current.source == SOURCE_SERVICE
        first.stop()  # deregisters; a new instance appears elsewhere with a newer document
        second = ConfigServiceSimulator(redis_url=redis_url, registry_prefix=prefix,
                                        initial={component: doc(5e6)}).start()
        await async_wait_until(lambda: state.current is not None
                     and state.current.version == document_version(doc(5e6)), timeout=15)
    finally:
        await limits.stop()
        first.stop()
        if second is not None:
            second.stop()
        client.close()
    leftover = redis.Redis.from_url(redis_url)
    try:
        assert list(leftover.scan_iter(match=f"{prefix}:*")) == []
    finally:
        leftover.close()
