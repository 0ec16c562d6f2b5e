"""In-memory risk state, the alert feed, readiness aggregation and proto conversions."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from risk_monitor.domain.model import (
    AlertSeverity,
    LimitResult,
    LimitStatus,
    Notification,
    NotificationKind,
    SourceKind,
    SourceStatus,
)
from risk_monitor.service.grpc_server import limit_entry
from risk_monitor.service.health import CheckResult, Readiness
from risk_monitor.service.proto import risk_monitor_pb2 as pb
from risk_monitor.service.state import NO_EVALUATION, LiveEvaluation, OrderRequest
from risk_monitor_tests.fixtures.service import publish_evaluation

NOW = datetime(2025, 10, 1, 12, 0, tzinfo=UTC)


def result(status: LimitStatus, value: float | None) -> LimitResult:
    return LimitResult(limit_id="l", limit_kind="max_notional", scope="portfolio",
                       status=status, value=value, warn_level=None, breach_level=100.0,
                       utilisation=None if value is None else value / 100, as_of=NOW,
                       config_version="v")


def note(i: int) -> Notification:
    return Notification(
        idempotency_key=f"k{i}", fingerprint="f", kind=NotificationKind.FIRING,
        status=LimitStatus.BREACH, severity=AlertSeverity.CRITICAL, limit_id="l",
        limit_kind="max_notional", scope="portfolio", value=1.0, warn_level=None,
        breach_level=1.0, utilisation=1.0, config_version="v", correlation_id="c",
        episode=1, detected_at=NOW, source_event_time=None)


def test_no_evaluation_is_unknown_and_orders_are_denied() -> None:
    state = LiveEvaluation()
    view = state.risk_view(NOW)
    assert view.status == "UNKNOWN" and view.evaluation_source == NO_EVALUATION
    assert view.equity is None
    decision = state.check_order(OrderRequest("binance", "main", "BTC/USDT:USDT", "buy", 1.0),
                                 NOW)
    assert not decision.allowed and "fail closed" in decision.reasons[0]


@pytest.mark.parametrize(("order", "word"), [
    (OrderRequest("binance", "main", "BTC/USDT:USDT", "hold", 1.0), "side"),
    (OrderRequest("binance", "main", "BTC/USDT:USDT", "buy", 0.0), "quantity"),
    (OrderRequest("binance", "main", "BTC/USDT:USDT", "buy", math.nan), "quantity"),
    (OrderRequest("binance", "main", "BTC/USDT:USDT", "buy", 1.0, price=-5), "price"),
    (OrderRequest("", "main", "BTC/USDT:USDT", "buy", 1.0), "venue"),
])
def test_malformed_orders_are_denied(order: OrderRequest, word: str) -> None:
    decision = LiveEvaluation().check_order(order, NOW)
    assert not decision.allowed and word in decision.reasons[0]


def test_view_reflects_results_and_staleness() -> None:
    state = LiveEvaluation(max_age_s=60)
    publish_evaluation(
        state, [result(LimitStatus.OK, 10.0), result(LimitStatus.WARN, 90.0)], as_of=NOW,
        sources=[SourceStatus(SourceKind.EXCHANGE, "binance", "main", True, NOW),
                 SourceStatus(SourceKind.MARKET, "okx", "main", True, NOW - timedelta(minutes=5))],
        equity=float("nan"))
    view = state.risk_view(NOW + timedelta(seconds=30))
    assert view.status == "WARNING" and view.equity is None  # NaN never travels as a number
    stale = {s.key: s.stale for s in view.sources}
    assert stale == {"exchange:binance:main": False, "market:okx:main": True}
    assert view.limit_config_version == "v"


def test_source_staleness_follows_each_kinds_budget_like_the_domain() -> None:
    """The API's "stale" is the engine's rule: an exchange poll has its own, longer budget."""
    state = LiveEvaluation(max_age_s=10, budgets={SourceKind.MARKET: 10.0,
                                                     SourceKind.EXCHANGE: 120.0})
    publish_evaluation(state, [result(LimitStatus.OK, 1.0)], as_of=NOW, sources=[
        SourceStatus(SourceKind.EXCHANGE, "binance", "main", True, NOW),
        SourceStatus(SourceKind.MARKET, "binance", "*", True, NOW)])
    stale = {s.key: s.stale for s in state.risk_view(NOW + timedelta(seconds=60)).sources}
    assert stale == {"exchange:binance:main": False, "market:binance:*": True}


async def test_readiness_critical_and_optional_checks() -> None:
    outcome = {"db": True, "fresh": False}

    async def db() -> CheckResult:
        return CheckResult("db", outcome["db"], True)

    async def fresh() -> CheckResult:
        return CheckResult("fresh", outcome["fresh"], False, "stale")

    async def crash() -> CheckResult:
        raise RuntimeError("boom")

    flips: list[bool] = []
    readiness = Readiness({"db": db, "fresh": fresh}, interval_s=10)
    readiness.on_change(flips.append)
    assert await readiness.run_once() is True
    assert readiness.as_dict()["status"] == "degraded"  # ready, optional check failing
    outcome["db"] = False
    assert await readiness.run_once() is False
    outcome["db"] = True
    await readiness.run_once()
    assert flips == [True, False, True]
    readiness.start_draining()
    assert readiness.ready is False and readiness.as_dict()["status"] == "draining"

    broken = Readiness({"crash": crash}, interval_s=10)
    assert await broken.run_once() is False
    assert "boom" in broken.results["crash"].detail


def test_limit_entry_leaves_unknown_numbers_unset() -> None:
    unknown = limit_entry(result(LimitStatus.UNKNOWN, None))
    assert unknown.status == pb.LIMIT_STATUS_UNKNOWN
    assert not unknown.HasField("value") and not unknown.HasField("utilisation")
    assert not unknown.HasField("warn") and not unknown.HasField("source_event_time")
    nan = limit_entry(result(LimitStatus.UNKNOWN, math.nan))
    assert not nan.HasField("value")
    known = limit_entry(result(LimitStatus.OK, 0.0))
    assert known.HasField("value") and known.value == 0.0  # a real zero stays a zero


class TickSource:
    """What the per-tick evaluator publishes: its current results and their time."""

    def __init__(self, results: list[LimitResult], as_of: datetime) -> None:
        self.current, self.as_of = results, as_of

    def results(self) -> list[LimitResult]:
        return list(self.current)


def test_tick_results_are_read_when_a_reader_asks() -> None:
    state = LiveEvaluation()
    publish_evaluation(state, [result(LimitStatus.OK, 1.0)], as_of=NOW)
    source = TickSource([result(LimitStatus.BREACH, 150.0)], NOW + timedelta(seconds=1))
    state.publish_tick_results(source)
    assert [r.status for r in state.limit_results()] == [LimitStatus.BREACH]
    assert state.risk_view(NOW).as_of == NOW + timedelta(seconds=1)
    source.current, source.as_of = [result(LimitStatus.WARN, 90.0)], NOW + timedelta(seconds=2)
    state.publish_tick_results(source)  # the next tick
    assert [r.value for r in state.limit_results()] == [90.0]
    assert state.risk_view(NOW).as_of == NOW + timedelta(seconds=2)


def test_a_tick_publish_never_waits_for_a_running_evaluation(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The tick loop publishes on every tick; a full evaluation (tens of ms) runs meanwhile
    in the evaluation thread and must not hold it (it once did: 20-26 ms tick stalls)."""
    import threading

    from risk_monitor.service import state as state_module

    running, release = threading.Event(), threading.Event()

    def evaluate(snapshot: object, config: object) -> object:
        running.set()
        release.wait(30)
        raise RuntimeError("released")

    monkeypatch.setattr(state_module, "evaluate", evaluate)
    state = LiveEvaluation()
    publish_evaluation(state, [result(LimitStatus.OK, 1.0)], as_of=NOW)
    state.set_limit_config(object())  # type: ignore[arg-type]

    def evaluate_in_thread() -> None:
        with pytest.raises(RuntimeError):
            state.evaluate(object())  # type: ignore[arg-type]

    evaluation = threading.Thread(target=evaluate_in_thread, daemon=True)
    evaluation.start()
    assert running.wait(10)
    published: list[list[LimitResult]] = []

    def tick() -> None:
        state.publish_tick_results(TickSource([result(LimitStatus.BREACH, 150.0)], NOW))
        published.append(state.limit_results())

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    ticker.join(5)
    try:
        assert published and published[0][0].status is LimitStatus.BREACH
        assert evaluation.is_alive()  # still evaluating: the tick did not wait for it
    finally:
        release.set()
        evaluation.join(10)
