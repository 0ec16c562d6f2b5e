"""Alert lifecycle sequences (Alertmanager semantics), dedup and idempotency."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta

import pytest

from risk_monitor.adapters.alert_messages import headroom_text, headroom_usd
from risk_monitor.domain.alerts import AlertPlan, AlertPolicy, correlation_id_for, plan_alerts
from risk_monitor.domain.engine import evaluate
from risk_monitor.domain.model import (
    AlertSeverity,
    AlertState,
    LimitResult,
    LimitStatus,
    NotificationKind,
    alert_fingerprint,
)
from risk_monitor_tests.unit.domain.builders import NOW, desk, result
from risk_monitor_tests.unit.domain.builders import config as limits_config

FP = alert_fingerprint("btc-notional", "venue:binance|instrument:BTC/USDT:USDT")


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


class Series:
    """Feeds results one evaluation at a time, keeping the returned states like a store."""

    def __init__(self, policy: AlertPolicy | None = None) -> None:
        self.policy = policy or AlertPolicy()
        self.states: dict[str, AlertState] = {}
        self.sent: list = []

    def run(self, results: Sequence[LimitResult], now: datetime, **kwargs: object) -> AlertPlan:
        plan = plan_alerts(self.states, results, now, self.policy, **kwargs)  # type: ignore[arg-type]
        self.states.update({s.fingerprint: s for s in plan.states})
        self.sent.extend(plan.notifications)
        return plan

    def step(self, status: str, seconds: float, **kwargs: object) -> AlertPlan:
        return self.run([result(status, at(seconds), **kwargs)], at(seconds))  # type: ignore[arg-type]


def kinds(plan: AlertPlan) -> list[NotificationKind]:
    return [n.kind for n in plan.notifications]


def test_ok_warn_breach_ok_gives_firing_escalated_resolved_once_each() -> None:
    s = Series()
    assert kinds(s.step("OK", 0)) == []
    firing = s.step("WARN", 10)
    assert kinds(firing) == [NotificationKind.FIRING]
    assert firing.notifications[0].severity is AlertSeverity.WARNING
    escalated = s.step("BREACH", 20)
    assert kinds(escalated) == [NotificationKind.ESCALATED]
    assert escalated.notifications[0].severity is AlertSeverity.CRITICAL
    resolved = s.step("OK", 30)
    assert kinds(resolved) == [NotificationKind.RESOLVED]
    note = resolved.notifications[0]
    assert note.severity is AlertSeverity.CRITICAL  # episode's highest: same channel
    assert note.status is LimitStatus.OK
    assert [n.kind for n in s.sent] == [
        NotificationKind.FIRING, NotificationKind.ESCALATED, NotificationKind.RESOLVED]
    assert [n.idempotency_key for n in s.sent] == [f"{FP}:1:1", f"{FP}:1:2", f"{FP}:1:3"]
    assert len({n.correlation_id for n in s.sent}) == 1
    assert s.sent[0].correlation_id == correlation_id_for(FP, 1, at(10))
    state = s.states[FP]
    assert state.status is LimitStatus.OK and state.started_at is None and state.episode == 1


def test_re_evaluating_the_same_results_notifies_nothing() -> None:
    s = Series()
    for status, seconds in [("WARN", 0), ("BREACH", 5), ("OK", 9)]:
        results = [result(status, at(seconds))]
        first = s.run(results, at(seconds))
        assert len(first.notifications) == 1
        again = s.run(results, at(seconds))
        assert again.notifications == []
        later = s.run([result(status, at(seconds + 1))], at(seconds + 1))
        assert later.notifications == []


def test_a_new_episode_has_a_new_correlation_id_and_episode_number() -> None:
    s = Series()
    s.step("BREACH", 0)
    s.step("OK", 10)
    s.step("BREACH", 20)
    first, _, second = s.sent
    assert (first.episode, second.episode) == (1, 2)
    assert first.correlation_id != second.correlation_id
    assert second.idempotency_key == f"{FP}:2:3"  # sequence keeps counting per series


def test_repeat_only_after_repeat_interval() -> None:
    s = Series(AlertPolicy(repeat_interval_s=3600))
    assert kinds(s.step("BREACH", 0)) == [NotificationKind.FIRING]
    assert kinds(s.step("BREACH", 600)) == []
    assert kinds(s.step("BREACH", 3599)) == []
    assert kinds(s.step("BREACH", 3600)) == [NotificationKind.REPEAT]
    assert kinds(s.step("BREACH", 3700)) == []
    assert kinds(s.step("BREACH", 7200)) == [NotificationKind.REPEAT]


def test_group_wait_delays_first_notice() -> None:
    s = Series(AlertPolicy(group_wait_s=30))
    assert kinds(s.step("WARN", 0)) == []
    assert kinds(s.step("BREACH", 10)) == []  # still waiting, now worse
    plan = s.step("BREACH", 30)
    assert kinds(plan) == [NotificationKind.FIRING]
    assert plan.notifications[0].status is LimitStatus.BREACH
    assert plan.notifications[0].severity is AlertSeverity.CRITICAL
    assert kinds(s.step("OK", 40)) == [NotificationKind.RESOLVED]


def test_group_wait_episode_that_clears_early_sends_nothing() -> None:
    s = Series(AlertPolicy(group_wait_s=30))
    s.step("WARN", 0)
    s.step("BREACH", 10)
    s.step("OK", 20)
    assert s.sent == []
    assert s.states[FP].status is LimitStatus.OK


def test_no_resolve_notice_when_disabled() -> None:
    s = Series(AlertPolicy(send_resolved=False))
    s.step("BREACH", 0)
    assert kinds(s.step("OK", 10)) == []
    assert kinds(s.step("BREACH", 20)) == [NotificationKind.FIRING]  # a fresh episode


def test_deescalation_and_unknown_alerts() -> None:
    s = Series()
    firing = s.step("UNKNOWN", 0)
    assert kinds(firing) == [NotificationKind.FIRING]
    assert firing.notifications[0].severity is AlertSeverity.CRITICAL
    assert firing.notifications[0].value is None
    assert kinds(s.step("BREACH", 5)) == [NotificationKind.ESCALATED]  # critical changed nature
    deesc = s.step("WARN", 10)
    assert kinds(deesc) == [NotificationKind.DEESCALATED]
    assert deesc.notifications[0].severity is AlertSeverity.WARNING
    assert kinds(s.step("UNKNOWN", 15)) == [NotificationKind.ESCALATED]
    resolved = s.step("OK", 20)
    assert resolved.notifications[0].severity is AlertSeverity.CRITICAL


def test_notifications_carry_times_levels_and_context() -> None:
    s = Series()
    src = at(-3)
    plan = s.run([result("BREACH", at(0), source_event_time=src)], at(0),
                 context={"run_id": "r-1", "data_versions": {"prices": "abc"}})
    note = plan.notifications[0]
    assert note.detected_at == at(0) and note.source_event_time == src
    assert note.context == {"run_id": "r-1", "data_versions": {"prices": "abc"},
                            "episode_started_at": note.detected_at.isoformat()}
    assert (note.warn_level, note.breach_level, note.value) == (800000.0, 1000000.0, 1100000.0)
    assert note.utilisation == pytest.approx(1.1)
    assert note.config_version == "v1" and note.limit_kind == "max_notional"
    assert note.fingerprint == FP


def test_older_evaluation_does_not_undo_a_newer_one() -> None:
    s = Series()
    s.step("BREACH", 10)
    stale = s.run([result("OK", at(5))], at(5))
    assert stale.notifications == [] and stale.states == []
    assert s.states[FP].status is LimitStatus.BREACH


def test_series_are_independent() -> None:
    s = Series()
    a = result("BREACH", at(0), limit_id="a", scope="portfolio")
    b = result("WARN", at(0), limit_id="b", scope="venue:okx")
    c = result("OK", at(0), limit_id="c", scope="venue:okx")
    plan = s.run([a, b, c], at(0))
    assert len(plan.states) == 3
    assert sorted((n.limit_id, n.kind) for n in plan.notifications) == [
        ("a", NotificationKind.FIRING), ("b", NotificationKind.FIRING)]


def test_duplicate_results_for_one_series_are_refused() -> None:
    with pytest.raises(ValueError, match="two results"):
        plan_alerts({}, [result("OK", NOW), result("WARN", NOW)], NOW)


def test_resolve_missing_series_when_asked() -> None:
    s = Series(AlertPolicy(resolve_missing=True))
    s.run([result("BREACH", at(0), limit_id="gone", scope="instrument:DOGE/USDT:USDT")], at(0))
    plan = s.run([result("OK", at(10))], at(10))
    assert kinds(plan) == [NotificationKind.RESOLVED]
    assert plan.notifications[0].limit_id == "gone"
    assert "no longer evaluated" in plan.notifications[0].reason
    keep = Series()  # default: a partial evaluation leaves other series alone
    keep.run([result("BREACH", at(0), limit_id="other", scope="portfolio")], at(0))
    assert keep.run([result("OK", at(10))], at(10)).notifications == []


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        AlertPolicy(repeat_interval_s=0)
    with pytest.raises(ValueError):
        AlertPolicy(group_wait_s=-1)


def test_results_carry_the_usd_of_one_unit_into_the_notification() -> None:
    """The evaluation's own denominator travels on the result and the notification, so the
    message gives %/x headroom in USD without recomputing equity; where no USD figure exists
    (data age, liquidation distance) it is None and the message says so."""
    cfg = limits_config(
        {"id": "dd", "kind": "drawdown", "warn": 10, "breach": 20},
        {"id": "lev", "kind": "leverage", "warn": 0.5, "breach": 0.8},
        {"id": "cp", "kind": "counterparty", "scope": {"venue": "okx"}, "breach": 1e6},
        {"id": "age", "kind": "data_age", "scope": {"venue": "okx"}, "warn": 30, "breach": 60},
        venues=["binance", "okx", "fireblocks"])
    found = {r.limit_id: r for r in evaluate(desk(), cfg).results}
    assert found["dd"].usd_per_unit == pytest.approx(24_810)  # peak (= equity) / 100
    assert found["lev"].usd_per_unit == pytest.approx(2_481_000)  # equity
    assert found["cp"].usd_per_unit == 1.0 and found["age"].usd_per_unit is None
    notes = {n.limit_id: n for n in plan_alerts(
        {}, [dataclasses.replace(r, status=LimitStatus.WARN) for r in found.values()],
        found["dd"].as_of).notifications}
    assert headroom_usd(notes["dd"]) == pytest.approx(20 * 24_810)  # equity that may be lost
    assert headroom_text(notes["dd"]).endswith("≈ 496,200 USD of equity loss")
    assert headroom_text(notes["lev"]).endswith("≈ 213,800 USD of gross notional")
    assert headroom_text(notes["cp"]) == "629,000 USD"
    assert "no USD figure: a data age" in headroom_text(notes["age"])
