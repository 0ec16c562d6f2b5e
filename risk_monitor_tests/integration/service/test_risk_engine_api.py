"""The risk API over the domain engine: a configuration published to the configuration service
changes a limit and the next evaluation uses it; CheckOrder allows, denies per limit kind, and
denies on UNKNOWN (stale or missing data: fail closed). Real gRPC client, real Redis discovery
of the configuration service, one in-process service for the module.

Snapshots use real wall-clock times: the service judges orders at the time it receives them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from risk_monitor.domain.engine import RiskSnapshot
from risk_monitor.domain.limits import load_limit_config
from risk_monitor.domain.model import (
    BALANCE_COLUMNS,
    POSITION_COLUMNS,
    PRICE_COLUMNS,
    Collected,
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
    service_settings,
    wait_until,
)
from risk_monitor_tests.unit.domain.builders import balance, frame, position, quote
from risk_sim.config_service import ConfigServiceSimulator

pytestmark = pytest.mark.integration

BTC = "BTC/USDT:USDT"
MARK = 60_000.0
EQUITY = 1_000_000.0


@dataclass
class Rig:
    sim: ConfigServiceSimulator
    service: ServiceThread
    stub: pb_grpc.RiskMonitorStub

    @property
    def provider(self) -> LiveEvaluation:
        assert self.service.app is not None
        provider = self.service.app.provider
        assert isinstance(provider, DatabaseRiskView) and provider.live is not None
        return provider.live

    def use_limits(self, limits: dict[str, Any]) -> str:
        """Publish a limit document through the configuration service; wait until applied."""
        version = load_limit_config(limits).version
        self.sim.publish("risk-monitor", {"limits": limits})
        wait_until(lambda: self.provider.config is not None
                   and self.provider.config.version == version, timeout=10,
                   message=f"limits {version} applied")
        return version


@pytest.fixture(scope="module")
def rig(redis_url: str, module_postgres_url: str, module_redis_prefix: str,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    prefix = f"{module_redis_prefix}:svc"
    sim = ConfigServiceSimulator(redis_url=redis_url, registry_prefix=prefix,
                                 initial={"risk-monitor": {"limits": desk_limits()}}).start()
    tmp: Path = tmp_path_factory.mktemp("engine")
    settings = service_settings(database_url=module_postgres_url, redis_url=redis_url, tmp=tmp,
                                config_service={"enabled": True, "poll_timeout_s": 5.0},
                                service={"registry_prefix": prefix})
    service = ServiceThread(settings).start()
    channel = grpc.insecure_channel(service.grpc_target)
    try:
        yield Rig(sim, service, pb_grpc.RiskMonitorStub(channel))
    finally:
        channel.close()
        service.stop()
        sim.stop()


def desk(*, btc: float = 10.0, liquidation: float = float("nan"), data_age_s: float = 1.0,
         evaluated_ago_s: float = 0.0, failed: tuple[str, ...] = ()) -> RiskSnapshot:
    """Binance: ``btc`` BTC long at the mark (no unrealized P&L) and 1M USDT; OKX and Fireblocks
    report nothing. Data is ``data_age_s`` old at evaluation time, which was ``evaluated_ago_s``
    before now."""
    now = datetime.now(UTC) - timedelta(seconds=evaluated_ago_s)
    received = now - timedelta(seconds=data_age_s)
    venues = ("binance", "okx")
    positions = [position("binance", BTC, btc, MARK, MARK, liquidation=liquidation,
                          received=received)] if "binance" not in failed else []
    balances = [balance("binance", "USDT", EQUITY, received=received)] \
        if "binance" not in failed else []
    quotes = [quote("binance", BTC, MARK, at=received)] if "binance" not in failed else []

    def status(kind: SourceKind, venue: str, account: str = "main") -> SourceStatus:
        ok = venue not in failed
        return SourceStatus(kind, venue, account, ok, received, error_code=None if ok else "RM201",
                            error=None if ok else "connection refused")

    exchange = tuple(status(SourceKind.EXCHANGE, v) for v in venues)
    market = tuple(status(SourceKind.MARKET, v, "") for v in venues)
    custodian = (status(SourceKind.CUSTODIAN, "fireblocks", "vault-1"),)
    return RiskSnapshot(
        positions=Collected(frame(positions, POSITION_COLUMNS), exchange),
        balances=Collected(frame(balances, BALANCE_COLUMNS), exchange + custodian),
        prices=Collected(frame(quotes, PRICE_COLUMNS), market),
        now=now, start_of_day_equity=EQUITY, peak_equity=EQUITY, max_age_s=60.0,
    )


def order(side: pb.Side = pb.SIDE_BUY, quantity: float = 1.0,
          price: float | None = None) -> pb.CheckOrderRequest:
    request = pb.CheckOrderRequest(venue="binance", account="main", instrument=BTC, side=side,
                                   quantity=quantity, client_order_id="t-1")
    if price is not None:
        request.price = price
    return request


def btc_limit(rig: Rig) -> pb.LimitStatusEntry:
    reply = rig.stub.ListLimitStatus(pb.ListLimitStatusRequest(limit_id="btc-binance-notional"),
                                     timeout=30)
    (entry,) = reply.limits
    return entry


def test_published_limit_change_is_used_by_the_next_evaluation(rig: Rig) -> None:
    rig.use_limits(desk_limits())
    rig.provider.evaluate(desk(btc=15.0))  # 900k notional: WARN under 800k / 1M
    before = btc_limit(rig)
    assert before.status == pb.LIMIT_STATUS_WARN
    assert (before.value, before.warn, before.breach) == (900_000.0, 800_000.0, 1_000_000.0)

    tighter = desk_limits(btc_warn=700_000.0, btc_breach=850_000.0)
    version = load_limit_config(tighter).version
    rig.sim.publish("risk-monitor", {"limits": tighter})
    # the service re-evaluates the last snapshot as soon as the new limits are applied
    wait_until(lambda: btc_limit(rig).breach == 850_000.0, timeout=10, message="new limits used")
    after = btc_limit(rig)
    assert after.status == pb.LIMIT_STATUS_BREACH and after.config_version == version
    assert after.utilisation == pytest.approx(900_000 / 850_000)
    status = rig.stub.GetRiskStatus(pb.GetRiskStatusRequest(), timeout=30)
    assert status.status == pb.COMPLIANCE_STATUS_BREACH
    assert status.limit_config_version == version
    assert status.evaluation_source == "in-memory"
    assert status.equity == pytest.approx(EQUITY)
    assert status.gross_exposure == pytest.approx(900_000.0)

    # and the next evaluation of new data uses it too
    rig.provider.evaluate(desk(btc=13.0))  # 780k: WARN under 700k / 850k
    again = btc_limit(rig)
    assert again.status == pb.LIMIT_STATUS_WARN and again.config_version == version


def test_check_order_allows_within_limits_with_projected_utilisation(rig: Rig) -> None:
    rig.use_limits(desk_limits())
    rig.provider.evaluate(desk())
    reply = rig.stub.CheckOrder(order(quantity=1.0), timeout=30)
    assert reply.decision == pb.DECISION_ALLOW and reply.allowed, list(reply.reasons)
    projected = {p.limit.limit_id: p for p in reply.projected}
    btc = projected["btc-binance-notional"]
    assert btc.limit.value == pytest.approx(660_000.0)
    assert btc.limit.utilisation == pytest.approx(0.66)
    assert btc.current_utilisation == pytest.approx(0.60)
    assert reply.limit_config_version == load_limit_config(desk_limits()).version


# one limit per case, levels between the current value and the value after the order
DENY_CASES: list[tuple[str, dict[str, Any], pb.CheckOrderRequest]] = [
    ("max_notional", {"kind": "max_notional", "scope": {"venue": "binance", "instrument": BTC},
                      "warn": 700_000.0, "breach": 800_000.0}, order(quantity=5.0)),
    ("gross_exposure", {"kind": "gross_exposure", "warn": 700_000.0, "breach": 800_000.0},
     order(quantity=5.0)),
    ("net_exposure", {"kind": "net_exposure", "warn": 700_000.0, "breach": 800_000.0},
     order(quantity=5.0)),
    ("leverage", {"kind": "leverage", "scope": {"venue": "binance"}, "warn": 0.7,
                  "breach": 0.8}, order(quantity=5.0)),
    ("concentration", {"kind": "concentration", "scope": {"asset": "BTC"}, "warn": 70.0,
                       "breach": 80.0}, order(quantity=5.0)),
    # buying 5 at 70k against a 60k mark costs 50k of equity at once
    ("daily_loss", {"kind": "daily_loss", "warn": 30_000.0, "breach": 40_000.0},
     order(quantity=5.0, price=70_000.0)),
    ("drawdown", {"kind": "drawdown", "warn": 3.0, "breach": 4.0},
     order(quantity=5.0, price=70_000.0)),
    # selling 5 at 70k adds 50k of equity held at the venue
    ("counterparty", {"kind": "counterparty", "scope": {"venue": "binance"},
                      "warn": 1_010_000.0, "breach": 1_020_000.0},
     order(side=pb.SIDE_SELL, quantity=5.0, price=70_000.0)),
]


@pytest.mark.parametrize(("kind", "limit", "request_"), DENY_CASES,
                         ids=[c[0] for c in DENY_CASES])
def test_check_order_denies_a_projected_breach(rig: Rig, kind: str, limit: dict[str, Any],
                                               request_: pb.CheckOrderRequest) -> None:
    limit_id = f"only-{kind.replace('_', '-')}"
    rig.use_limits({"venues": ["binance", "okx"], "limits": [{"id": limit_id, **limit}]})
    rig.provider.evaluate(desk())
    (current,) = rig.stub.ListLimitStatus(pb.ListLimitStatusRequest(), timeout=30).limits
    assert current.status in (pb.LIMIT_STATUS_OK, pb.LIMIT_STATUS_WARN)  # not breached yet
    reply = rig.stub.CheckOrder(request_, timeout=30)
    assert reply.decision == pb.DECISION_DENY and not reply.allowed
    assert any(r.startswith(f"DENY {limit_id}") and "BREACH" in r for r in reply.reasons), \
        list(reply.reasons)
    (projected,) = reply.projected
    assert projected.limit.kind == kind and projected.limit.status == pb.LIMIT_STATUS_BREACH
    assert projected.limit.utilisation >= 1.0
    assert projected.current_utilisation < 1.0


def test_check_order_denies_when_liquidation_is_already_too_close(rig: Rig) -> None:
    rig.use_limits({"venues": ["binance", "okx"], "limits": [
        {"id": "liq", "kind": "liquidation_distance",
         "scope": {"venue": "binance", "instrument": BTC}, "warn": 3.0, "breach": 2.0}]})
    rig.provider.evaluate(desk(liquidation=59_000.0))  # 1.67 % away
    reply = rig.stub.CheckOrder(order(quantity=1.0), timeout=30)
    assert not reply.allowed
    (projected,) = reply.projected
    assert projected.limit.kind == "liquidation_distance"
    assert projected.limit.status == pb.LIMIT_STATUS_BREACH


def test_check_order_denies_when_data_grows_too_old_by_order_time(rig: Rig) -> None:
    rig.use_limits({"venues": ["binance", "okx"], "limits": [
        {"id": "age", "kind": "data_age", "scope": {"venue": "binance"}, "warn": 20.0,
         "breach": 30.0}]})
    # 25 s old when evaluated 10 s ago: ~35 s old now, past the 30 s breach level
    rig.provider.evaluate(desk(data_age_s=25.0, evaluated_ago_s=10.0))
    reply = rig.stub.CheckOrder(order(quantity=1.0), timeout=30)
    assert not reply.allowed
    (projected,) = reply.projected
    assert projected.limit.kind == "data_age" and projected.limit.status == pb.LIMIT_STATUS_BREACH
    assert projected.limit.value >= 35.0


def test_check_order_denies_on_stale_data(rig: Rig) -> None:
    rig.use_limits(desk_limits())
    rig.provider.evaluate(desk(data_age_s=1.0, evaluated_ago_s=120.0))  # 2 minutes old now
    reply = rig.stub.CheckOrder(order(quantity=0.01), timeout=30)
    assert reply.decision == pb.DECISION_DENY
    assert any(p.limit.status == pb.LIMIT_STATUS_UNKNOWN for p in reply.projected)
    assert any("UNKNOWN" in r and ("stale" in r or "old" in r) for r in reply.reasons), \
        list(reply.reasons)


def test_check_order_denies_when_the_venue_is_missing(rig: Rig) -> None:
    rig.use_limits(desk_limits())
    rig.provider.evaluate(desk(failed=("binance",)))
    status = rig.stub.GetRiskStatus(pb.GetRiskStatusRequest(), timeout=30)
    assert status.status == pb.COMPLIANCE_STATUS_UNKNOWN  # blind, never "compliant"
    binance = {s.source: s for s in status.sources}["exchange:binance:main"]
    assert not binance.ok and binance.stale and binance.error_code == "RM201"
    reply = rig.stub.CheckOrder(order(quantity=0.01), timeout=30)
    assert reply.decision == pb.DECISION_DENY
    assert reply.reasons
