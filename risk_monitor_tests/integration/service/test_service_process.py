"""``risk-monitor serve`` as a real process: discovery entry lifecycle on SIGKILL and SIGTERM.

Two processes start in parallel (each start costs the imports, ~2-3 s). Each gets a service name
of its own, so its registry keys never collide with another session's.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import redis
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from risk_monitor.adapters.redis_registry import DiscoveryClient, ServiceInstance, connect
from risk_monitor_tests.fixtures.service import (
    desk_limits,
    health_status,
    spawn_service,
    wait_until,
    write_limits,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TTL_S = 2.0
DRAIN_S = 1.5
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _start(name: str, tmp: Path, redis_url: str, postgres_url: str) -> Proc:
    config = {
        "environment": "ci",
        "data_dir": str(tmp / name),
        "database_url": postgres_url,
        "redis_url": redis_url,
        "limits_file": str(write_limits(tmp / f"{name}-limits.yaml", desk_limits())),
        "service": {"service_name": name, "rest_port": 0, "grpc_port": 0,
                    "registry_ttl_s": TTL_S, "drain_s": DRAIN_S},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp / f"{name}.log"
    return Proc(name, spawn_service(path, log_path=log), log)


@pytest.fixture(scope="module")
def procs(redis_url: str, module_postgres_url: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Proc]]:
    tmp = tmp_path_factory.mktemp("proc")
    tag = uuid.uuid4().hex[:8]
    started = {role: _start(f"rmtest-{role}-{tag}", tmp, redis_url, module_postgres_url)
               for role in ("killed", "terminated")}
    try:
        yield started
    finally:
        client = redis.Redis.from_url(redis_url)
        for item in started.values():
            if item.proc.poll() is None:
                item.proc.kill()
                item.proc.wait(10)
            for key in client.scan_iter(match=f"svc:{item.name}:*"):
                client.delete(key)
        client.close()


def discovered(redis_url: str, proc: Proc, timeout: float = 30.0) -> ServiceInstance:
    client = connect(redis_url)
    discovery = DiscoveryClient(client, cache_ttl_s=0)

    def find() -> ServiceInstance | None:
        if proc.proc.poll() is not None:
            pytest.fail(f"{proc.name} exited early:\n{proc.output()[-3000:]}")
        found = discovery.instances(proc.name)
        return found[0] if found else None

    try:
        return wait_until(find, timeout, interval=0.1, message=f"{proc.name} registered")
    finally:
        client.close()


def test_sigkill_removes_the_instance_within_its_ttl(procs: dict[str, Proc],
                                                     redis_url: str) -> None:
    proc = procs["killed"]
    instance = discovered(redis_url, proc)
    wait_until(lambda: health_status(instance.grpc_address) == SERVING, 10,
               message="SERVING")
    key = f"svc:{proc.name}:{instance.instance_id}"
    client = redis.Redis.from_url(redis_url)
    try:
        ttl_ms = client.pttl(key)
        assert 0 < ttl_ms <= TTL_S * 1000
        proc.proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        proc.proc.wait(10)
        wait_until(lambda: not client.exists(key), TTL_S + 3, interval=0.05,
                   message="expiry of the dead instance")
        gone_after = time.monotonic() - killed_at
    finally:
        client.close()
    # the last heartbeat was at most TTL/3 before the kill: gone within the TTL (+ slack)
    assert gone_after <= TTL_S + 0.75, gone_after
    client2 = connect(redis_url)
    try:
        assert DiscoveryClient(client2, cache_ttl_s=0).instances(proc.name) == []
    finally:
        client2.close()


def test_sigterm_goes_not_serving_before_deregistering(procs: dict[str, Proc],
                                                       redis_url: str) -> None:
    proc = procs["terminated"]
    instance = discovered(redis_url, proc)
    key = f"svc:{proc.name}:{instance.instance_id}"
    channel = grpc.insecure_channel(instance.grpc_address)
    statuses: queue.Queue[int] = queue.Queue()
    stream = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service="risk_monitor.v1.RiskMonitor"), timeout=60)

    def consume() -> None:
        try:
            for reply in stream:
                statuses.put(reply.status)
        except grpc.RpcError:
            pass

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    client = redis.Redis.from_url(redis_url)
    try:
        status = statuses.get(timeout=15)
        while status != SERVING:
            status = statuses.get(timeout=15)
        proc.proc.send_signal(signal.SIGTERM)
        assert statuses.get(timeout=10) == NOT_SERVING
        # health said NOT_SERVING while the instance is still registered (draining)
        assert client.exists(key), "deregistered before NOT_SERVING was observed"
        wait_until(lambda: not client.exists(key), DRAIN_S + 5, message="deregistration")
        assert proc.proc.wait(15) == 0
    finally:
        stream.cancel()
        thread.join(5)
        channel.close()
        client.close()
    output = proc.output()
    assert output.index('"service_draining"') < output.index('"deregistered"') \
        < output.index('"service_stopped"')
