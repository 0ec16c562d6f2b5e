"""gRPC acknowledge / silence RPCs: the real grpc.aio server with the bearer-token interceptor on
the real PostgreSQL store; the dispatcher then holds back what they cover (Slack simulator)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import grpc
import pytest

from risk_monitor.adapters.notifiers import SlackNotifier
from risk_monitor.adapters.sql import OutboxDispatcher, Storage
from risk_monitor.platform.settings import load_settings
from risk_monitor.service.grpc_server import GrpcServer, HealthServicer, RiskMonitorServicer
from risk_monitor.service.proto import risk_monitor_pb2 as pb
from risk_monitor.service.proto import risk_monitor_pb2_grpc as pb_grpc
from risk_monitor.service.security import Authenticator, ServiceSecurity
from risk_monitor.service.sql_state import DatabaseRiskView
from risk_monitor_tests.fixtures.storage import FakeClock, evaluate, make_result
from risk_sim.slack import SlackSimulator

OPS_TOKEN = "ops-token-" + "y" * 32
AUTH = (("authorization", f"Bearer {OPS_TOKEN}"),)
SLACK_TOKEN_ENV = "RISK_MONITOR_TEST_SLACK_TOKEN"


@pytest.fixture
async def stub(pg_storage: Storage) -> AsyncIterator[pb_grpc.RiskMonitorStub]:
    security = dataclasses.replace(ServiceSecurity.open(),
                                   authenticator=Authenticator({"RISK_OPS_TOKEN": OPS_TOKEN}))
    server = GrpcServer(RiskMonitorServicer(DatabaseRiskView(pg_storage.engine)), HealthServicer(),
                        host="127.0.0.1", port=0, security=security)
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield pb_grpc.RiskMonitorStub(channel)
    finally:
        await channel.close()
        await server.stop(0)


async def test_rpcs_need_a_token(stub: pb_grpc.RiskMonitorStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ListAlertControls(pb.ListAlertControlsRequest())
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_silence_and_ack_over_grpc_hold_notifications_keep_records_and_audit(
        stub: pb_grpc.RiskMonitorStub, pg_storage: Storage, clock: FakeClock,
        slack_sim: SlackSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SLACK_TOKEN_ENV, slack_sim.token)
    settings = load_settings(slack={"token_env": SLACK_TOKEN_ENV,
                                    "base_url": slack_sim.api_base, "timeout_s": 2})
    dispatcher = OutboxDispatcher(pg_storage.engine, SlackNotifier.from_settings(settings),
                                  notifier_name="slack")  # real clock: the silence starts now

    silence = await stub.CreateSilence(pb.CreateSilenceRequest(
        matchers=["venue=okx"], duration_seconds=3600, comment="okx maintenance",
        author="someone-else"), metadata=AUTH)  # a claimed author is ignored with a token
    assert silence.created_by == "RISK_OPS_TOKEN" and silence.active

    evaluate(pg_storage, make_result("BREACH", clock.advance(1), scope="venue:okx"))
    (firing,) = evaluate(pg_storage, make_result("WARN", clock.advance(1),
                                                 scope="venue:binance"))
    result = await asyncio.to_thread(dispatcher.dispatch_once, 10)
    assert (result.sent, result.suppressed) == (1, 1)

    ack = await stub.AcknowledgeAlert(pb.AcknowledgeAlertRequest(
        key=firing.correlation_id, comment="hedging"), metadata=AUTH)
    assert ack.acked_by == "RISK_OPS_TOKEN" and ack.fingerprint == firing.fingerprint
    assert ack.status == pb.LIMIT_STATUS_WARN

    listed = await stub.ListAlertControls(pb.ListAlertControlsRequest(), metadata=AUTH)
    assert [s.id for s in listed.silences] == [silence.id]
    assert [a.fingerprint for a in listed.acknowledgements] == [firing.fingerprint]

    ended = await stub.ExpireSilence(pb.ExpireSilenceRequest(id=silence.id), metadata=AUTH)
    assert not ended.active and ended.HasField("expired_at")

    assert sorted(r.status for r in pg_storage.outbox.rows()) == ["sent", "suppressed"]
    audit = [(r.event, r.payload.get("actor")) for r in pg_storage.audit.recent(20)
             if r.event in ("silence_created", "alert_acknowledged", "silence_expired")]
    assert audit == [("silence_expired", "RISK_OPS_TOKEN"),
                     ("alert_acknowledged", "RISK_OPS_TOKEN"),
                     ("silence_created", "RISK_OPS_TOKEN")]


async def test_bad_requests_get_clear_status_codes(stub: pb_grpc.RiskMonitorStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.AcknowledgeAlert(pb.AcknowledgeAlertRequest(key="nope"), metadata=AUTH)
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    assert "RM410" in (missing.value.details() or "")
    for request in [pb.CreateSilenceRequest(matchers=["venue=okx"], comment="c"),
                    pb.CreateSilenceRequest(matchers=["venue=okx"], duration_seconds=-5,
                                            comment="c"),
                    pb.CreateSilenceRequest(matchers=["desk=a"], duration_seconds=60,
                                            comment="c"),
                    pb.CreateSilenceRequest(matchers=["venue=okx"], duration_seconds=60)]:
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.CreateSilence(request, metadata=AUTH)
        assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    listed = await stub.ListAlertControls(
        pb.ListAlertControlsRequest(include_inactive=True), metadata=AUTH)
    assert list(listed.silences) == [] and list(listed.acknowledgements) == []
