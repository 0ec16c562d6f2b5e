"""Trading state end to end on real parts: PostgreSQL store + audit chain, the gRPC server with
the bearer-token interceptor, the REST app, the CLI, the Prometheus registry. CheckOrder asks the
state first: HALTED denies everything, REDUCING lets only reductions through."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from click.testing import CliRunner
from prometheus_client import REGISTRY
from starlette.applications import Starlette

from risk_monitor.adapters.sql import Storage
from risk_monitor.adapters.sql.audit_verify import verify
from risk_monitor.adapters.sql.trading_states import SqlTradingStates
from risk_monitor.cli import cli
from risk_monitor.domain.engine import RiskSnapshot
from risk_monitor.domain.model import Collected, SourceKind
from risk_monitor.domain.trading_state import TradingState
from risk_monitor.platform.settings import TradingSettings
from risk_monitor.service.grpc_server import GrpcServer, HealthServicer, RiskMonitorServicer
from risk_monitor.service.health import Readiness
from risk_monitor.service.proto import risk_monitor_pb2 as pb
from risk_monitor.service.proto import risk_monitor_pb2_grpc as pb_grpc
from risk_monitor.service.rest import build_app
from risk_monitor.service.security import Authenticator, ServiceSecurity
from risk_monitor.service.sql_state import DatabaseRiskView
from risk_monitor.service.state import LiveEvaluation
from risk_monitor.service.trading import TradingControl
from risk_monitor_tests.unit.domain.builders import NOW, config, desk, source

OPS_TOKEN = "ops-token-" + "t" * 32
AUTH = (("authorization", f"Bearer {OPS_TOKEN}"),)
BTC = "BTC/USDT:USDT"
VENUES = ["binance", "okx", "fireblocks"]
NOTIONAL = {"id": "btc", "kind": "max_notional", "scope": {"venue": "binance", "instrument": BTC},
            "warn": 800000, "breach": 1000000}
LOSS = {"id": "daily", "kind": "daily_loss", "breach": 100_000}  # the desk has lost ~119k


class Desk:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.live = LiveEvaluation(max_age_s=60)
        self.live.set_limit_config(config(NOTIONAL, venues=VENUES))
        self.live.evaluate(desk(start_of_day_equity=2_600_000, peak_equity=2_700_000))
        self.control = TradingControl(TradingSettings(), SqlTradingStates(storage.engine),
                                      inputs=self.live.latest_inputs, venues=["binance", "okx"],
                                      instance_id="test")
        self.live.trading = self.control
        self.provider = DatabaseRiskView(storage.engine, live=self.live)
        self.security = dataclasses.replace(
            ServiceSecurity.open(), authenticator=Authenticator({"RISK_OPS_TOKEN": OPS_TOKEN}))


@pytest.fixture
def trading_desk(pg_storage: Storage) -> Desk:
    return Desk(pg_storage)


@pytest.fixture
async def stub(trading_desk: Desk) -> AsyncIterator[pb_grpc.RiskMonitorStub]:
    servicer = RiskMonitorServicer(trading_desk.provider, clock=lambda: NOW,
                                   trading=trading_desk.control)
    server = GrpcServer(servicer, HealthServicer(), host="127.0.0.1", port=0,
                        security=trading_desk.security)
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield pb_grpc.RiskMonitorStub(channel)
    finally:
        await channel.close()
        await server.stop(0)


@pytest.fixture
def app(trading_desk: Desk) -> Starlette:
    return build_app(Readiness({}), trading_desk.provider, identity={"service": "t"},
                     security=trading_desk.security, trading=trading_desk.control)


async def rest(app: Starlette, method: str, path: str, body: Any = None,
               token: str | None = OPS_TOKEN) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://rm") as client:
        return await client.request(method, path, headers=headers, json=body)


def order(venue: str, side: pb.Side, qty: float, client_order_id: str = "") -> pb.CheckOrderRequest:
    return pb.CheckOrderRequest(venue=venue, account="main", instrument=BTC, side=side,
                                quantity=qty, client_order_id=client_order_id)


def metric(scope: str) -> float | None:
    return REGISTRY.get_sample_value("risk_monitor_trading_state", {"scope": scope})


def audit(storage: Storage, event: str) -> list[dict[str, Any]]:
    return [r.payload for r in reversed(storage.audit.recent(50, event=event))]


async def test_manual_halt_and_reduce_over_grpc_gate_checkorder_and_are_audited(
        stub: pb_grpc.RiskMonitorStub, trading_desk: Desk, pg_storage: Storage) -> None:
    ok = await stub.CheckOrder(order("binance", pb.SIDE_BUY, 1, "c1"), metadata=AUTH)
    assert ok.allowed and ok.trading_state == pb.TRADING_STATE_ACTIVE
    assert list(ok.reason_codes) == []

    with pytest.raises(grpc.aio.AioRpcError) as refused:  # no token, no change
        await stub.SetTradingState(pb.SetTradingStateRequest(
            scope="global", state=pb.TRADING_STATE_HALTED))
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED

    halted = await stub.SetTradingState(pb.SetTradingStateRequest(
        scope="venue:binance", state=pb.TRADING_STATE_HALTED, reason="exchange incident",
        author="someone-else"), metadata=AUTH)
    in_force = {s.scope: s.state for s in halted.states}
    assert in_force["venue:binance"] == pb.TRADING_STATE_HALTED
    assert in_force["venue:okx"] == pb.TRADING_STATE_ACTIVE
    assert [(m.scope, m.changed_by) for m in halted.manual] == [("venue:binance",
                                                                 "RISK_OPS_TOKEN")]
    denied = await stub.CheckOrder(order("binance", pb.SIDE_SELL, 1, "c2"), metadata=AUTH)
    assert not denied.allowed and list(denied.reason_codes) == ["TRADING_HALTED"]
    assert denied.trading_state == pb.TRADING_STATE_HALTED
    other = await stub.CheckOrder(order("okx", pb.SIDE_BUY, 1, "c3"), metadata=AUTH)
    assert other.allowed  # the other venue trades on
    assert metric("venue:binance") == 2 and metric("venue:okx") == 0

    await stub.SetTradingState(pb.SetTradingStateRequest(
        scope="global", state=pb.TRADING_STATE_REDUCING, reason="end of day"), metadata=AUTH)
    reduce = await stub.CheckOrder(order("okx", pb.SIDE_BUY, 1, "c4"), metadata=AUTH)  # okx -4
    increase = await stub.CheckOrder(order("okx", pb.SIDE_SELL, 1, "c5"), metadata=AUTH)
    assert reduce.allowed and reduce.trading_state == pb.TRADING_STATE_REDUCING
    assert not increase.allowed and list(increase.reason_codes) == ["TRADING_REDUCING"]

    state = await stub.GetTradingState(pb.GetTradingStateRequest(), metadata=AUTH)
    assert {s.scope: s.state for s in state.states}["global"] == pb.TRADING_STATE_REDUCING
    manual_audit = [(p["scope"], p["from"], p["to"], p["actor"])
                    for p in audit(pg_storage, "trading_state.set")]
    assert manual_audit == [("venue:binance", "ACTIVE", "HALTED", "RISK_OPS_TOKEN"),
                            ("global", "ACTIVE", "REDUCING", "RISK_OPS_TOKEN")]
    chain = verify(pg_storage.engine)
    assert chain.ok, chain.findings  # the hash chain holds
    in_force_changes = [(p["scope"], p["to"]) for p in audit(pg_storage, "trading_state.changed")]
    assert in_force_changes == [("venue:binance", "HALTED"), ("global", "REDUCING"),
                                ("venue:okx", "REDUCING")]
    assert chain.entries == 2 + 3

    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.SetTradingState(pb.SetTradingStateRequest(
            scope="desk", state=pb.TRADING_STATE_HALTED), metadata=AUTH)
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "RM610" in (bad.value.details() or "")


async def test_rest_sets_state_and_lists_checked_orders_with_decisions(
        app: Starlette, stub: pb_grpc.RiskMonitorStub, pg_storage: Storage) -> None:
    assert (await rest(app, "GET", "/v1/trading/state", token=None)).status_code == 401
    answer = await rest(app, "POST", "/v1/trading/state",
                        {"scope": "venue:okx", "state": "halted", "reason": "withdrawals"})
    assert answer.status_code == 200, answer.text
    states = {s["scope"]: s for s in answer.json()["states"]}
    assert states["venue:okx"]["state"] == "HALTED" and states["venue:okx"]["origin"] == "manual"
    await stub.CheckOrder(order("okx", pb.SIDE_BUY, 1, "r1"), metadata=AUTH)
    await stub.CheckOrder(order("binance", pb.SIDE_BUY, 1, "r2"), metadata=AUTH)
    checked = (await rest(app, "GET", "/v1/trading/orders?limit=5")).json()["orders"]
    assert [(c["client_order_id"], c["allowed"], c["codes"]) for c in checked] == [
        ("r2", True, []), ("r1", False, ["TRADING_HALTED"])]
    resumed = await rest(app, "POST", "/v1/trading/state", {"scope": "venue:okx",
                                                           "state": "ACTIVE"})
    assert {s["scope"]: s["state"] for s in resumed.json()["states"]}["venue:okx"] == "ACTIVE"
    bad = await rest(app, "POST", "/v1/trading/state", {"scope": "venue:okx", "state": "PAUSED"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "RM610"
    assert [p["actor"] for p in audit(pg_storage, "trading_state.set")] == [
        "RISK_OPS_TOKEN", "RISK_OPS_TOKEN"]


async def test_cli_halt_reaches_the_service_at_its_next_refresh(
        migrated_postgres_url: str, trading_desk: Desk, stub: pb_grpc.RiskMonitorStub) -> None:
    env = {"RISK_MONITOR_DATABASE_URL": migrated_postgres_url, "RISK_MONITOR_CONFIG": None,
           "RISK_MONITOR_AUTHOR": None}
    runner = CliRunner()
    done = runner.invoke(cli, ["trading", "halt", "venue:okx", "--author", "alice",
                               "--reason", "drill"], env=env, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert runner.invoke(cli, ["trading", "halt", "venue:okx"], env=env).exit_code != 0
    shown = runner.invoke(cli, ["trading", "state"], env=env, catch_exceptions=False)
    assert '"changed_by": "alice"' in shown.output
    trading_desk.control.refresh()  # what the service's loop does every trading.refresh_s
    denied = await stub.CheckOrder(order("okx", pb.SIDE_BUY, 1), metadata=AUTH)
    assert list(denied.reason_codes) == ["TRADING_HALTED"] and "alice" in denied.reasons[0]
    resumed = runner.invoke(cli, ["trading", "resume", "venue:okx", "--author", "alice"],
                            env=env, catch_exceptions=False)
    assert resumed.exit_code == 0
    trading_desk.control.refresh()
    assert (await stub.CheckOrder(order("okx", pb.SIDE_BUY, 1), metadata=AUTH)).allowed


async def test_daily_loss_breach_moves_the_desk_to_reducing_automatically_and_back(
        trading_desk: Desk, stub: pb_grpc.RiskMonitorStub, pg_storage: Storage) -> None:
    trading_desk.control.refresh()
    assert metric("global") == 0
    trading_desk.live.set_limit_config(config(NOTIONAL, LOSS, venues=VENUES))  # re-evaluates
    increase = await stub.CheckOrder(order("binance", pb.SIDE_BUY, 1), metadata=AUTH)
    assert not increase.allowed and increase.reason_codes[0] == "TRADING_REDUCING"
    assert "daily BREACH on portfolio" in increase.reasons[0]  # the state speaks first
    reduce = await stub.CheckOrder(order("binance", pb.SIDE_SELL, 1), metadata=AUTH)
    assert reduce.allowed  # binance holds +10 BTC
    changes = trading_desk.control.refresh()
    assert changes["global"][1].state is TradingState.REDUCING
    assert metric("global") == 1
    trading_desk.live.set_limit_config(config(NOTIONAL, venues=VENUES))  # breach gone
    trading_desk.control.refresh()
    assert metric("global") == 0
    automatic = [(p["scope"], p["from"], p["to"], p["origin"])
                 for p in audit(pg_storage, "trading_state.changed") if p["scope"] == "global"]
    assert automatic == [("global", "ACTIVE", "REDUCING", "automatic"),
                         ("global", "REDUCING", "ACTIVE", "automatic")]


async def test_orders_in_flight_count_until_a_newer_position_shows_them(
        stub: pb_grpc.RiskMonitorStub, trading_desk: Desk) -> None:
    """A desk firing orders faster than fills reach the monitor: CheckOrder counts the ones it
    allowed (over real gRPC, concurrently) until the evaluated positions show them."""
    answers = await asyncio.gather(*(
        stub.CheckOrder(order("binance", pb.SIDE_BUY, 1, f"f{n}"), metadata=AUTH)
        for n in range(10)))
    # 10 BTC held at 61,000: six more reach 976k, a seventh would breach 1M
    assert sum(a.allowed for a in answers) == 6
    assert all(list(a.reason_codes) == ["LIMIT_BREACH"] for a in answers if not a.allowed)
    assert REGISTRY.get_sample_value("risk_monitor_pending_orders") == 6
    # the venue's position now shows the 6 BTC, read after the allowances (the clock: NOW)
    base = desk(start_of_day_equity=2_600_000, peak_equity=2_700_000)
    frame = base.positions.frame.copy()
    frame.loc[(frame["venue"] == "binance") & (frame["instrument"] == BTC), "quantity"] = 16
    later = NOW.replace(microsecond=500_000)
    sources = tuple(source(SourceKind.EXCHANGE, s.venue, s.account, as_of=later)
                    for s in base.positions.sources)
    trading_desk.live.evaluate(RiskSnapshot(**{**base.__dict__,
                                              "positions": Collected(frame, sources)}))
    assert not (await stub.CheckOrder(order("binance", pb.SIDE_BUY, 1, "g1"),
                                      metadata=AUTH)).allowed  # 1,037k, counted once
    small = await stub.CheckOrder(order("binance", pb.SIDE_BUY, 0.3, "g2"), metadata=AUTH)
    assert small.allowed  # 994k: the six are in the position, no longer pending
    assert [p.client_order_id for p in trading_desk.control.pending()] == ["g2"]
