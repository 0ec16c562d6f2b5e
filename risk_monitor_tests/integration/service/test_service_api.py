"""The service in-process against the real Redis, PostgreSQL, the configuration-service simulator,
a real grpcio client and a real HTTP client. One service per module."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from prometheus_client.parser import text_string_to_metric_families

from risk_monitor.adapters.redis_registry import DiscoveryClient, connect
from risk_monitor.adapters.sql.alert_store import enqueue_rows
from risk_monitor.adapters.sql.config_versions import ConfigVersionStore
from risk_monitor.adapters.sql.engine import write_tx
from risk_monitor.domain.figures import EQUITY_METRIC, MetricValue
from risk_monitor.domain.model import (
    AlertSeverity,
    LimitResult,
    LimitStatus,
    Notification,
    NotificationKind,
    SourceKind,
    SourceStatus,
)
from risk_monitor.service.proto import risk_monitor_pb2 as pb
from risk_monitor.service.proto import risk_monitor_pb2_grpc as pb_grpc
from risk_monitor.service.sql_state import DatabaseRiskView
from risk_monitor.service.state import LiveEvaluation
from risk_monitor_tests.fixtures.service import (
    ServiceThread,
    desk_limits,
    publish_evaluation,
    service_settings,
    wait_until,
)
from risk_sim.config_service import ConfigServiceSimulator

pytestmark = pytest.mark.integration

def limits_document(note: str) -> dict[str, Any]:
    """A valid risk-monitor document: the test desk's limits plus a marker that changes its hash."""
    return {"limits": desk_limits(), "alert_routing": {"note": note}}


def sim_version(stack: Stack) -> str:
    current = stack.sim.current("risk-monitor")
    assert current is not None
    return str(current["version"])


@dataclass
class Stack:
    sim: ConfigServiceSimulator
    service: ServiceThread
    prefix: str
    redis_url: str
    cache_path: Path

    @property
    def provider(self) -> DatabaseRiskView:
        assert self.service.app is not None
        provider = self.service.app.provider
        assert isinstance(provider, DatabaseRiskView)
        return provider

    @property
    def live(self) -> LiveEvaluation:
        assert self.provider.live is not None
        return self.provider.live


@pytest.fixture(scope="module")
def stack(redis_url: str, module_postgres_url: str, module_redis_prefix: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prefix = f"{module_redis_prefix}:svc"
    tmp = tmp_path_factory.mktemp("service")
    sim = ConfigServiceSimulator(redis_url=redis_url, registry_prefix=prefix,
                                 initial={"risk-monitor": limits_document("v1")}).start()
    cache_path = tmp / "config-cache.json"
    settings = service_settings(
        database_url=module_postgres_url, redis_url=redis_url, tmp=tmp,
        config_service={"enabled": True, "poll_timeout_s": 5.0, "cache_path": str(cache_path)},
        venues=[{"id": "binance", "exchange": "binanceusdm"},
                {"id": "okx", "exchange": "okx"}],
        service={"registry_prefix": prefix},
    )
    service = ServiceThread(settings).start()
    try:
        yield Stack(sim, service, prefix, redis_url, cache_path)
    finally:
        service.stop()
        sim.stop()


@pytest.fixture(scope="module")
def channel(stack: Stack) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(stack.service.grpc_target) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.RiskMonitorStub:
    return pb_grpc.RiskMonitorStub(channel)


def ready_body(stack: Stack) -> dict[str, Any]:
    return httpx.get(f"{stack.service.rest_url}/readyz", timeout=30).json()


def check(body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in body["checks"] if c["name"] == name)


# -- REST -----------------------------------------------------------------------------------------
def test_healthz_is_alive(stack: Stack) -> None:
    response = httpx.get(f"{stack.service.rest_url}/healthz", timeout=30)
    assert response.status_code == 200
    assert response.json()["status"] == "alive"


def test_readyz_lists_every_check_and_is_ready(stack: Stack) -> None:
    response = httpx.get(f"{stack.service.rest_url}/readyz", timeout=30)
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True
    names = {c["name"] for c in body["checks"]}
    assert {"database", "redis", "config", "data_freshness"} <= names
    assert check(body, "database")["ok"] and check(body, "database")["detail"] == "postgresql"
    assert check(body, "redis")["ok"]
    config = check(body, "config")
    assert config["ok"] and config["data"]["source"] == "service"
    assert config["data"]["version"] == sim_version(stack)


def test_metrics_parse_and_carry_the_config_version(stack: Stack) -> None:
    response = httpx.get(f"{stack.service.rest_url}/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    info = families["risk_monitor_config_version_info"]
    versions = {s.labels["version"] for s in info.samples
                if s.labels.get("component") == "risk-monitor"}
    assert sim_version(stack) in versions
    ready = families["risk_monitor_service_ready"].samples[0].value
    assert ready == 1.0


# -- gRPC health and reflection -------------------------------------------------------------------
def test_grpc_health_serving_overall_and_per_service(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "risk_monitor.v1.RiskMonitor"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as info:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(channel: grpc.Channel) -> None:
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    assert {"risk_monitor.v1.RiskMonitor", "grpc.health.v1.Health"} <= services
    method = database.FindFileContainingSymbol("risk_monitor.v1.RiskMonitor")
    assert method.package == "risk_monitor.v1"


# -- discovery → gRPC -----------------------------------------------------------------------------
def test_client_discovers_the_service_in_redis_and_calls_it(stack: Stack) -> None:
    client = connect(stack.redis_url)
    try:
        discovery = DiscoveryClient(client, prefix=stack.prefix)
        instance = discovery.pick("risk-monitor", need="grpc_address")
    finally:
        client.close()
    assert stack.service.app is not None
    assert instance.instance_id == stack.service.app.instance_id
    assert set(instance.venues) == {"binance", "okx"}
    assert instance.rest_url == stack.service.rest_url
    with grpc.insecure_channel(instance.grpc_address) as ch:
        status = pb_grpc.RiskMonitorStub(ch).GetRiskStatus(pb.GetRiskStatusRequest(), timeout=30)
    # nothing evaluated yet in this process: UNKNOWN, clearly marked, never "compliant"
    assert status.evaluation_source == "no-evaluation-yet"
    assert status.status == pb.COMPLIANCE_STATUS_UNKNOWN
    assert not status.HasField("equity")
    assert status.config_source == "service"
    assert status.config_document_version == sim_version(stack)
    assert status.limit_config_version  # the limits version of the applied document


# -- configuration service: hot reload ------------------------------------------------------------
def test_published_configuration_is_applied_without_restart(stack: Stack,
                                                            stub: pb_grpc.RiskMonitorStub) -> None:
    version = stack.sim.publish("risk-monitor", limits_document("v2"))
    wait_until(lambda: stub.GetRiskStatus(pb.GetRiskStatusRequest(), timeout=30)
               .config_document_version == version, timeout=10, message="hot reload")
    assert ready_body(stack)["config"]["version"] == version
    cached = json.loads(stack.cache_path.read_text())
    assert cached["version"] == version and cached["document"] == limits_document("v2")
    metrics = httpx.get(f"{stack.service.rest_url}/metrics", timeout=30).text
    assert f'version="{version}"' in metrics
    # every applied limits version is recorded once, with its document (audit trail)
    limits_version = ready_body(stack)["config"]["limits_version"]
    recorded = ConfigVersionStore(stack.provider.engine).get(limits_version)
    assert recorded is not None and recorded.document == desk_limits()
    # first applied from the limits file at start (same limits), recorded once
    assert recorded.source.split(":")[0] in ("file", "service")


def test_invalid_configuration_is_rejected_and_last_good_kept(
        stack: Stack, stub: pb_grpc.RiskMonitorStub) -> None:
    good = stack.sim.publish("risk-monitor", limits_document("good"))
    wait_until(lambda: ready_body(stack)["config"]["version"] == good,
               message="good version applied")
    before = ready_body(stack)["config"]["rejected"]
    bad = stack.sim.publish("risk-monitor", {"limits": "not a mapping"})
    body = wait_until(lambda: (b := ready_body(stack)) and b["config"]["rejected"] > before
                      and b, message="rejection counted")
    assert body["ready"] is True  # still ready: the last good configuration is in force
    assert body["config"]["version"] == good
    assert body["config"]["last_rejection"].startswith(bad)
    assert stub.GetRiskStatus(pb.GetRiskStatusRequest(), timeout=30) \
        .config_document_version == good
    metrics = httpx.get(f"{stack.service.rest_url}/metrics", timeout=30).text
    rejected = [s for f in text_string_to_metric_families(metrics)
                if f.name == "risk_monitor_config_rejected" for s in f.samples
                if s.name == "risk_monitor_config_rejected_total"]
    assert sum(s.value for s in rejected) >= 1
    # the next valid version is applied again
    fixed = stack.sim.publish("risk-monitor", limits_document("fixed"))
    wait_until(lambda: ready_body(stack)["config"]["version"] == fixed,
               message="recovery after a rejected version")


# -- risk API -------------------------------------------------------------------------------------
NOW = datetime(2025, 10, 1, 12, 0, tzinfo=UTC)


def result(limit_id: str, scope: str, status: LimitStatus, value: float | None,
           breach: float = 100.0) -> LimitResult:
    return LimitResult(limit_id=limit_id, limit_kind="max_notional", scope=scope, status=status,
                       value=value, warn_level=80.0, breach_level=breach,
                       utilisation=None if value is None else value / breach, as_of=NOW,
                       config_version="cfg1", reason="" if value is not None else "venue down")


def raise_alerts(stack: Stack, notifications: list[Notification]) -> None:
    """Enqueue notifications in the outbox, as an evaluator's alert store does."""
    engine = stack.provider.engine
    with write_tx(engine) as conn:
        enqueue_rows(conn, notifications, datetime.now(UTC))


def test_answers_from_the_database_before_any_own_evaluation(
        stack: Stack, stub: pb_grpc.RiskMonitorStub) -> None:
    """What a Dagster run stored is served while this process has not evaluated itself."""
    assert not stack.live.evaluated
    stored = [result("db_limit", "venue:okx", LimitStatus.WARN, 90.0)]
    stack.provider.store.upsert_limit_results(stored)
    stack.provider.store.replace_metrics([MetricValue(EQUITY_METRIC, 1234.5)], NOW)
    stack.provider.store.record_sources([
        SourceStatus(SourceKind.EXCHANGE, "okx", "main", True, datetime.now(UTC))])
    reply = stub.ListLimitStatus(pb.ListLimitStatusRequest(), timeout=30)
    assert reply.evaluation_source == "database"
    assert [(e.limit_id, e.status, e.value) for e in reply.limits] == \
        [("db_limit", pb.LIMIT_STATUS_WARN, 90.0)]
    status = stub.GetRiskStatus(pb.GetRiskStatusRequest(), timeout=30)
    assert status.evaluation_source == "database"
    assert status.status == pb.COMPLIANCE_STATUS_WARNING and status.equity == 1234.5
    assert status.limit_config_version == "cfg1"
    assert [(s.source, s.stale) for s in status.sources] == [("exchange:okx:main", False)]
    metrics = httpx.get(f"{stack.service.rest_url}/metrics", timeout=30).text
    utilisation = [s for f in text_string_to_metric_families(metrics) for s in f.samples
                   if s.name == "risk_monitor_limit_utilisation"
                   and s.labels.get("limit_id") == "db_limit"]
    assert [s.value for s in utilisation] == [pytest.approx(0.9)]


def test_list_limit_status_filters_by_status_and_scope(stack: Stack,
                                                       stub: pb_grpc.RiskMonitorStub) -> None:
    results = [
        result("btc_binance", "venue:binance/instrument:BTC/USDT:USDT", LimitStatus.WARN, 85.0),
        result("venue_binance", "venue:binance", LimitStatus.OK, 10.0),
        result("venue_okx", "venue:okx", LimitStatus.UNKNOWN, None),
        result("portfolio_gross", "portfolio", LimitStatus.BREACH, 120.0),
    ]
    sources = [SourceStatus(SourceKind.EXCHANGE, "binance", "main", True, datetime.now(UTC)),
               SourceStatus(SourceKind.EXCHANGE, "okx", "main", False,
                            datetime.now(UTC) - timedelta(minutes=5), error_code="RM201")]
    publish_evaluation(stack.live, results, as_of=NOW, sources=sources, equity=1000.0,
                       gross_exposure=2500.0, net_exposure=-100.0)
    everything = stub.ListLimitStatus(pb.ListLimitStatusRequest(), timeout=30)
    assert [e.limit_id for e in everything.limits] == sorted(r.limit_id for r in results)
    assert everything.evaluation_source == "in-memory"  # this process's own evaluation

    binance = stub.ListLimitStatus(pb.ListLimitStatusRequest(scope_prefix="venue:binance"),
                                   timeout=30)
    assert {e.limit_id for e in binance.limits} == {"btc_binance", "venue_binance"}

    bad = stub.ListLimitStatus(pb.ListLimitStatusRequest(
        statuses=[pb.LIMIT_STATUS_BREACH, pb.LIMIT_STATUS_UNKNOWN]), timeout=30)
    assert {e.limit_id for e in bad.limits} == {"portfolio_gross", "venue_okx"}
    unknown = next(e for e in bad.limits if e.limit_id == "venue_okx")
    assert not unknown.HasField("value") and not unknown.HasField("utilisation")
    assert unknown.reason == "venue down"

    warn = stub.ListLimitStatus(pb.ListLimitStatusRequest(limit_id="btc_binance"), timeout=30)
    (entry,) = warn.limits
    assert entry.status == pb.LIMIT_STATUS_WARN
    assert entry.value == 85.0 and entry.warn == 80.0 and entry.breach == 100.0
    assert entry.utilisation == pytest.approx(0.85)
    assert entry.as_of.ToDatetime(tzinfo=UTC) == NOW

    status = stub.GetRiskStatus(pb.GetRiskStatusRequest(), timeout=30)
    assert status.status == pb.COMPLIANCE_STATUS_BREACH
    assert (status.equity, status.gross_exposure, status.net_exposure) == (1000.0, 2500.0, -100.0)
    assert dict(status.status_counts) == {"OK": 1, "WARN": 1, "BREACH": 1, "UNKNOWN": 1}
    freshness = {s.source: s for s in status.sources}
    assert freshness["exchange:binance:main"].stale is False
    assert freshness["exchange:okx:main"].stale is True
    assert freshness["exchange:okx:main"].error_code == "RM201"
    # /readyz reports the stale source but stays ready (freshness is not critical)
    body = ready_body(stack)
    wait_until(lambda: "exchange:okx:main" in check(ready_body(stack), "data_freshness")["detail"],
               message="freshness check sees the stale source")
    assert body["ready"] is True


def notification(seq: int, status: LimitStatus = LimitStatus.BREACH) -> Notification:
    return Notification(
        idempotency_key=f"fp{seq}:1:{seq}", fingerprint=f"fp{seq}", kind=NotificationKind.FIRING,
        status=status, severity=AlertSeverity.CRITICAL, limit_id=f"limit{seq}",
        limit_kind="max_notional", scope="portfolio", value=120.0, warn_level=80.0,
        breach_level=100.0, utilisation=1.2, config_version="cfg1", correlation_id=f"c{seq}",
        episode=1, detected_at=NOW, source_event_time=NOW - timedelta(seconds=1))


def test_watch_alerts_streams_new_alerts_heartbeats_and_resumes(
        stack: Stack, stub: pb_grpc.RiskMonitorStub) -> None:
    events: queue.Queue[pb.AlertEvent] = queue.Queue()
    call = stub.WatchAlerts(pb.WatchAlertsRequest(heartbeat_interval_s=0.2), timeout=30)

    def consume() -> None:
        try:
            for event in call:
                events.put(event)
        except grpc.RpcError:
            pass

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    first = events.get(timeout=10)
    assert first.WhichOneof("event") == "heartbeat"  # idle stream still shows it is alive
    raise_alerts(stack, [notification(1), notification(2)])
    alerts: list[pb.AlertEvent] = []
    while len(alerts) < 2:
        event = events.get(timeout=10)
        if event.WhichOneof("event") == "alert":
            alerts.append(event)
    call.cancel()
    thread.join(5)
    assert [a.alert.limit_id for a in alerts] == ["limit1", "limit2"]
    assert [a.alert.idempotency_key for a in alerts] == ["fp1:1:1", "fp2:1:2"]
    assert alerts[0].alert.status == pb.LIMIT_STATUS_BREACH
    assert alerts[0].alert.kind == "firing" and alerts[0].alert.severity == "critical"
    assert alerts[0].alert.source_event_time.ToDatetime(tzinfo=UTC) == NOW - timedelta(seconds=1)
    assert int(alerts[1].cursor) > int(alerts[0].cursor)

    # resume after the first alert: exactly the second one comes (then a heartbeat)
    raise_alerts(stack, [notification(1)])  # re-raising the same key is idempotent: no event
    resumed = stub.WatchAlerts(pb.WatchAlertsRequest(cursor=alerts[0].cursor,
                                                     heartbeat_interval_s=0.2), timeout=10)
    got = next(iter(resumed))
    resumed.cancel()
    assert got.WhichOneof("event") == "alert" and got.alert.limit_id == "limit2"

    with pytest.raises(grpc.RpcError) as info:
        next(iter(stub.WatchAlerts(pb.WatchAlertsRequest(cursor="abc"), timeout=30)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_check_order_fails_closed_without_engine_or_snapshot(
        stub: pb_grpc.RiskMonitorStub) -> None:
    reply = stub.CheckOrder(pb.CheckOrderRequest(
        venue="binance", instrument="BTC/USDT:USDT", side=pb.SIDE_BUY, quantity=0.1), timeout=30)
    assert reply.decision == pb.DECISION_DENY and not reply.allowed
    assert reply.reasons and "fail closed" in reply.reasons[0]
    with pytest.raises(grpc.RpcError) as invalid:  # malformed: refused before any check
        stub.CheckOrder(pb.CheckOrderRequest(venue="binance", instrument="BTC/USDT:USDT",
                                             side=pb.SIDE_BUY, quantity=-1), timeout=30)
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "quantity" in (invalid.value.details() or "")


def test_rest_risk_status_matches_grpc(stack: Stack, stub: pb_grpc.RiskMonitorStub) -> None:
    body = httpx.get(f"{stack.service.rest_url}/v1/risk/status", timeout=30).json()
    grpc_status = stub.GetRiskStatus(pb.GetRiskStatusRequest(), timeout=30)
    assert body["evaluation_source"] == grpc_status.evaluation_source
    assert body["config_document_version"] == grpc_status.config_document_version
    assert pb.ComplianceStatus.Name(grpc_status.status) == f"COMPLIANCE_STATUS_{body['status']}"


def test_registration_hash_follows_the_documented_scheme(stack: Stack) -> None:
    assert stack.service.app is not None
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    try:
        key = f"{stack.prefix}:risk-monitor:{stack.service.app.instance_id}"
        fields = dict(client.hgetall(key))
        ttl_ms = client.pttl(key)
    finally:
        client.close()
    assert fields["grpc_address"] == stack.service.grpc_target
    assert json.loads(fields["venues"]) == ["binance", "okx"]
    assert 0 < ttl_ms <= 3000
    datetime.fromisoformat(str(fields["started_at"]))
