"""grpc.health.v1 follows the dependencies: SERVING → Redis killed → NOT_SERVING → Redis back →
SERVING, and the same for PostgreSQL (reached through a TCP proxy we cut). Checked with a real
gRPC health client (Check and a Watch stream) and /readyz."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
import httpx
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from risk_monitor_tests.fixtures.service import (
    RedisProcess,
    ServiceThread,
    TcpProxy,
    desk_limits,
    health_status,
    service_settings,
    wait_until,
    write_limits,
)

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
RISK = "risk_monitor.v1.RiskMonitor"


@dataclass
class Rig:
    redis: RedisProcess
    proxy: TcpProxy
    service: ServiceThread
    watched: queue.Queue[int]
    first_watched: int  # the Watch stream's opening status, taken off the queue by the fixture


def _via_proxy(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


@pytest.fixture(scope="module")
def rig(module_postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    private_redis = RedisProcess().start()
    pg = urlsplit(module_postgres_url)
    proxy = TcpProxy(pg.hostname or "127.0.0.1", pg.port or 5432).start()
    settings = service_settings(database_url=_via_proxy(module_postgres_url, proxy.port),
                                redis_url=private_redis.url,
                                tmp=tmp_path_factory.mktemp("deps"))
    service = ServiceThread(settings, check_interval_s=0.25).start()
    watched: queue.Queue[int] = queue.Queue()
    channel = grpc.insecure_channel(service.grpc_target)
    stream = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=RISK), timeout=110)

    def consume() -> None:
        try:
            for reply in stream:
                watched.put(reply.status)
        except grpc.RpcError:
            pass

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    try:
        # consumed here so each "…and back" test starts from an empty queue, whatever ran first
        first = watched.get(timeout=15)
        yield Rig(private_redis, proxy, service, watched, first)
    finally:
        stream.cancel()
        thread.join(5)
        channel.close()
        service.stop()
        proxy.stop()
        private_redis.stop()


def both(target: str) -> tuple[int, int]:
    return health_status(target, ""), health_status(target, RISK)


def next_watched(rig: Rig, timeout: float = 15.0) -> int:
    return rig.watched.get(timeout=timeout)


def readyz(rig: Rig) -> httpx.Response:
    return httpx.get(f"{rig.service.rest_url}/readyz", timeout=5)


def failing(response: httpx.Response) -> set[str]:
    return {c["name"] for c in response.json()["checks"] if c["critical"] and not c["ok"]}


def test_serving_at_start(rig: Rig) -> None:
    assert both(rig.service.grpc_target) == (SERVING, SERVING)
    assert rig.first_watched == SERVING
    assert readyz(rig).status_code == 200


def test_redis_loss_flips_to_not_serving_and_back(rig: Rig) -> None:
    target = rig.service.grpc_target
    assert rig.service.app is not None and rig.service.app.registration is not None
    key = rig.service.app.registration.key
    rig.redis.kill()
    assert next_watched(rig) == NOT_SERVING
    assert both(target) == (NOT_SERVING, NOT_SERVING)
    response = readyz(rig)
    assert response.status_code == 503 and failing(response) == {"redis"}

    rig.redis.start()  # same port, empty: the heartbeat must register again by itself
    assert next_watched(rig) == SERVING
    assert both(target) == (SERVING, SERVING)
    client = redis.Redis.from_url(rig.redis.url)
    try:
        wait_until(lambda: client.exists(key), timeout=10, message="re-registration")
    finally:
        client.close()


def test_database_loss_flips_to_not_serving_and_back(rig: Rig) -> None:
    target = rig.service.grpc_target
    rig.proxy.cut()
    assert next_watched(rig) == NOT_SERVING
    assert both(target) == (NOT_SERVING, NOT_SERVING)
    response = readyz(rig)
    # the delivery check reads the outbox from the same database, so it fails with it
    assert response.status_code == 503
    assert "database" in failing(response) <= {"database", "alert_delivery"}
    rig.proxy.restore()
    assert next_watched(rig) == SERVING
    assert both(target) == (SERVING, SERVING)
    assert readyz(rig).status_code == 200


def test_not_serving_from_the_start_without_a_valid_configuration(tmp_path: Path) -> None:
    """Fail closed at start: invalid limits and no configuration service → never SERVING."""
    bad = write_limits(tmp_path / "limits.yaml", desk_limits(btc_warn=2e6, btc_breach=1e6))
    settings = service_settings(database_url=f"sqlite:///{tmp_path}/rm.db", redis_url=None,
                                tmp=tmp_path, limits_file=str(bad))
    service = ServiceThread(settings, check_interval_s=0.25).start()
    try:
        assert both(service.grpc_target) == (NOT_SERVING, NOT_SERVING)
        # only the configuration fails; on a loaded machine one round of the other checks may
        # time out (a real not-ready answer), so wait for the round where they all answered
        def config_alone() -> httpx.Response | None:
            response = httpx.get(f"{service.rest_url}/readyz", timeout=5)
            return response if failing(response) == {"config"} else None

        response = wait_until(config_alone, timeout=30,
                              message="/readyz failing on the configuration alone")
        assert response.status_code == 503
        assert both(service.grpc_target) == (NOT_SERVING, NOT_SERVING)  # never SERVING
        assert response.json()["config"]["rejected"] == 1
        assert httpx.get(f"{service.rest_url}/healthz", timeout=5).status_code == 200  # alive
    finally:
        service.stop()
