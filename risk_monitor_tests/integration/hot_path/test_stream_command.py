"""``risk-monitor stream --venue binance`` as a real process: it writes binance's quotes (and only
binance's) to the Redis quote cache, registers as ``market-stream`` with the venues it serves,
and leaves discovery within its TTL when killed (at once when stopped). A service running with
``service.stream: false`` follows what it writes (``follow_quote_streams``)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from risk_monitor.adapters.market_data import quote_policy, symbols_by_venue
from risk_monitor.adapters.redis_quotes import follow_quote_streams
from risk_monitor.adapters.redis_registry import (
    DiscoveryClient,
    ServiceInstance,
    connect,
    scan_instances,
)
from risk_monitor.platform.settings import load_settings
from risk_monitor.service.feeder import FEEDER_SERVICE
from risk_monitor_tests.fixtures.service import risk_monitor_command, wait_until
from risk_sim.launcher import SimulatorStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TTL_S = 2.0
BTC = "BTC/USDT:USDT"


@dataclass
class Feeder:
    proc: subprocess.Popen[bytes]
    log: Path
    config: Path
    instance_id: str
    prefix: str
    discovery: DiscoveryClient
    client: redis.Redis

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def registered(self) -> ServiceInstance | None:
        found = [i for i in scan_instances(self.client, self.discovery.prefix, FEEDER_SERVICE)
                 if i.instance_id == self.instance_id]
        return found[0] if found else None

    def cached(self, venue: str) -> dict[str, dict[str, Any]]:
        raw: dict[bytes, bytes] = self.client.hgetall(  # type: ignore[assignment]
            f"{self.prefix}:md:quotes:{venue}")
        return {k.decode(): json.loads(v) for k, v in raw.items()}


@pytest.fixture
def feeder(sim: SimulatorStack, redis_url: str, redis_prefix: str,
           tmp_path: Path) -> Iterator[Feeder]:
    doc = sim.settings_document()
    instance_id = f"feeder-{uuid.uuid4().hex[:8]}"
    doc.update({
        "environment": "ci", "redis_url": redis_url, "data_dir": str(tmp_path / "data"),
        "market_data": {"key_prefix": f"{redis_prefix}:md", "max_age_s": 30.0,
                        "poll_interval_s": 0.5, "reconnect_initial_s": 0.05,
                        "reconnect_max_s": 0.5},
        "service": {"registry_prefix": f"{redis_prefix}:svc", "registry_ttl_s": TTL_S,
                    "instance_id": instance_id},
    })
    config = tmp_path / "feeder.yaml"
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    log = tmp_path / "feeder.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*risk_monitor_command(), "--config", str(config), "stream", "--venue", "binance",
             "--metrics-port", "0"], stdout=out, stderr=subprocess.STDOUT)
    client = connect(redis_url)
    discovery = DiscoveryClient(client, prefix=f"{redis_prefix}:svc")
    running = Feeder(proc, log, config, instance_id, redis_prefix, discovery, client)
    try:
        yield running
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        client.close()


def _started(feeder: Feeder) -> ServiceInstance:
    def up() -> ServiceInstance | None:
        assert feeder.proc.poll() is None, feeder.output()[-3000:]
        instance = feeder.registered()
        return instance if instance is not None and feeder.cached("binance") else None

    return wait_until(up, timeout=45, message="feeder registered and quoting")


def test_stream_command_feeds_one_venue_registers_and_expires_when_killed(
        feeder: Feeder, sim: SimulatorStack, redis_url: str) -> None:
    instance = _started(feeder)
    assert instance.venues == ("binance",)
    assert instance.metadata["role"] == FEEDER_SERVICE
    assert instance.metadata["key_prefix"] == f"{feeder.prefix}:md"
    assert not instance.grpc_address
    assert 0 < instance.ttl_s <= TTL_S

    # a tick on binance reaches the cache through the websocket; okx is someone else's shard
    settings = load_settings(feeder.config)
    received: list[dict[str, Any]] = []
    stop = asyncio.Event()
    follower_loop = asyncio.new_event_loop()

    def listener(venue: str, rows: list[dict[str, Any]]) -> None:
        received.extend({**row, "venue": venue} for row in rows)

    thread = threading.Thread(target=follower_loop.run_until_complete, daemon=True,
                              args=(follow_quote_streams(
                                  str(settings.redis_url), settings.market_data,
                                  list(symbols_by_venue(settings)),
                                  quote_policy(settings.market_data), stop, listener,
                                  block_ms=200),))
    thread.start()
    try:
        wait_until(lambda: any(r["instrument"] == BTC for r in received), timeout=10,
                   message="the follower seeded from the cache")
        sim.market.set_price(BTC, 61_234.5, venue="binance")
        wait_until(lambda: feeder.cached("binance").get(BTC, {}).get("last") == 61_234.5,
                   timeout=10, message="the new binance price in the Redis cache")
        assert feeder.cached("binance")[BTC]["via"] == "stream"
        wait_until(lambda: any(r["instrument"] == BTC and r["last"] == 61_234.5
                               for r in received), timeout=10,
                   message="the follower (service.stream: false) received the tick")
    finally:
        follower_loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        follower_loop.close()
    assert all(r["venue"] == "binance" for r in received)
    assert feeder.cached("okx") == {}

    metrics = httpx.get(f"{instance.rest_url}/metrics", timeout=5).text
    assert 'risk_monitor_market_ticks_total{outcome="accepted",venue="binance"}' in metrics

    feeder.proc.send_signal(signal.SIGKILL)
    feeder.proc.wait(10)
    # nobody deregisters a killed process: its key's TTL (asserted <= TTL_S above) removes it;
    # the deadline only guards against a hang (speed is not a test's business)
    wait_until(lambda: feeder.registered() is None, timeout=TTL_S + 60,
               message="the killed feeder expired from discovery")


def test_stream_command_deregisters_at_once_on_sigterm(feeder: Feeder) -> None:
    _started(feeder)
    feeder.proc.send_signal(signal.SIGTERM)
    assert feeder.proc.wait(20) == 0, feeder.output()[-3000:]
    assert feeder.registered() is None  # deleted on the way out, not left to expire
    assert "market_stream_feeder_stopped" in feeder.output()


def test_stream_command_rejects_an_unknown_venue(sim: SimulatorStack, tmp_path: Path) -> None:
    config = tmp_path / "feeder.yaml"
    config.write_text(yaml.safe_dump(sim.settings_document(), sort_keys=False))
    result = subprocess.run([*risk_monitor_command(), "--config", str(config), "stream",
                             "--venue", "kraken"], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 2
    assert "unknown venue" in result.stderr and "kraken" in result.stderr
