"""No page without a real change: warm-up grace, restarts, keep_firing_for, hysteresis and
per-limit ``for``, driven through the pure planner with an injected clock."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from risk_monitor.application import alert_policy
from risk_monitor.domain.alerts import (
    AlertPolicy,
    AlertRule,
    WarmUp,
    held_status,
    plan_alerts,
    warmup_grace_s,
)
from risk_monitor.domain.coverage import SourceProblem
from risk_monitor.domain.model import (
    AlertState,
    LimitStatus,
    Notification,
    NotificationKind,
    SourceKind,
    SourceStatus,
)
from risk_monitor.platform.settings import Settings
from risk_monitor_tests.fixtures.storage import START, make_result

#: the policy at the default settings (no settings file, no environment)
QUIET = alert_policy(Settings.model_validate({}))


def test_the_default_settings_carry_the_noise_controls() -> None:
    assert (QUIET.keep_firing_for_s, QUIET.hysteresis, QUIET.unknown_for_s) == (120, 0.05, 30)


class Desk:
    """Alert states kept across 'restarts' (the store), fed results at chosen times."""

    def __init__(self) -> None:
        self.states: dict[str, AlertState] = {}
        self.sent: list[Notification] = []

    def step(self, status: str, at: datetime, policy: AlertPolicy, *,
             value: float | None = None, limit_id: str = "max_notional",
             scope: str = "portfolio") -> list[Notification]:
        result = make_result(status, at, value=value, limit_id=limit_id, scope=scope)
        plan = plan_alerts(self.states, [result], at, policy)
        for state in plan.states:
            self.states[state.fingerprint] = state
        self.sent.extend(plan.notifications)
        return plan.notifications

    def kinds(self) -> list[tuple[str, str]]:
        return [(n.kind.value, n.status.value) for n in self.sent]

    def episodes(self) -> set[int]:
        return {n.episode for n in self.sent}


def _flapping(desk: Desk, policy: AlertPolicy, *, minutes: int = 10, period_s: int = 30,
              step_s: int = 10) -> None:
    """The source is down for ``period_s``, back for ``period_s``, again and again."""
    at = START
    for i in range(minutes * 60 // step_s):
        down = (i * step_s // period_s) % 2 == 1
        desk.step("UNKNOWN" if down else "OK", at, policy)
        at += timedelta(seconds=step_s)


@pytest.mark.parametrize("period_s", [30, 60, 90])
def test_a_flapping_source_for_ten_minutes_at_the_defaults_is_at_most_one_episode(period_s: int) -> None:
    desk = Desk()
    _flapping(desk, QUIET, period_s=period_s)
    assert len(desk.episodes()) <= 1
    assert desk.kinds() in ([], [("firing", "UNKNOWN")])  # never resolved while it flaps
    if period_s > QUIET.unknown_for_s:  # down long enough each time: paged, once
        assert desk.kinds() == [("firing", "UNKNOWN")]


def test_a_single_missed_poll_pages_nobody() -> None:
    desk = Desk()
    at = START
    for i in range(40):  # one UNKNOWN evaluation in ten, never two in a row
        desk.step("UNKNOWN" if i % 10 == 5 else "OK", at, QUIET)
        at += timedelta(seconds=10)
    assert desk.sent == []


def test_without_keep_firing_the_same_source_pages_every_flap() -> None:
    desk = Desk()
    _flapping(desk, AlertPolicy())
    assert len(desk.episodes()) == 10  # what the desk saw before: one thread per flap


def test_keep_firing_resolves_once_the_source_stays_back() -> None:
    desk = Desk()
    desk.step("UNKNOWN", START, QUIET)
    (firing,) = desk.step("UNKNOWN", START + timedelta(seconds=30), QUIET)  # unknown_for_s
    assert firing.kind is NotificationKind.FIRING
    desk.step("OK", START + timedelta(seconds=30), QUIET)
    assert desk.step("OK", START + timedelta(seconds=149), QUIET) == []
    (resolved,) = desk.step("OK", START + timedelta(seconds=150), QUIET)
    assert resolved.kind is NotificationKind.RESOLVED and resolved.episode == 1


def _status(venue: str, at: datetime, *, ok: bool = True,
            kind: SourceKind = SourceKind.EXCHANGE) -> SourceStatus:
    return SourceStatus(kind=kind, venue=venue, account="main", ok=ok, as_of=at,
                        error_code=None if ok else "RM200")


def _silent(venue: str) -> SourceProblem:
    """What an evaluation reports for a venue no source has answered for yet."""
    return SourceProblem(None, venue, None, f"{venue}: no data source reported (blind)", None)


def _failed(venue: str, at: datetime) -> SourceProblem:
    return SourceProblem(SourceKind.EXCHANGE, venue, "main", f"{venue}: source failed", at)


def _restart(at: datetime, grace_s: float, *silent: str) -> AlertPolicy:
    """The policy just after a start: ``silent`` venues (default binance) not answered yet."""
    warm_up = WarmUp(until=at + timedelta(seconds=grace_s))
    return replace(QUIET, warm_up=warm_up.seen([], [_silent(v) for v in silent or ("binance",)]))


def test_three_restarts_of_a_calm_desk_page_nothing() -> None:
    desk = Desk()
    at = START
    desk.step("OK", at, QUIET)
    for _ in range(3):  # each start: blind until the sources answer, inside the grace
        policy = _restart(at, grace_s=60)
        desk.step("UNKNOWN", at, policy)
        desk.step("UNKNOWN", at + timedelta(seconds=20), policy)
        desk.step("OK", at + timedelta(seconds=35), policy)
        at += timedelta(minutes=10)
    assert desk.sent == []


def test_a_restart_re_pages_nothing_already_paged_and_unchanged() -> None:
    desk = Desk()
    desk.step("BREACH", START, QUIET)
    assert desk.kinds() == [("firing", "BREACH")]
    restart = START + timedelta(minutes=5)
    policy = _restart(restart, grace_s=60)
    desk.step("UNKNOWN", restart, policy)  # no data yet: not an escalation
    desk.step("BREACH", restart + timedelta(seconds=10), policy)
    assert desk.kinds() == [("firing", "BREACH")]


def test_unknown_that_outlasts_the_grace_is_paged_once() -> None:
    desk = Desk()
    policy = _restart(START, grace_s=60)
    desk.step("UNKNOWN", START, policy)
    assert desk.step("UNKNOWN", START + timedelta(seconds=59), policy) == []
    (firing,) = desk.step("UNKNOWN", START + timedelta(seconds=60), policy)
    assert (firing.kind, firing.status) == (NotificationKind.FIRING, LimitStatus.UNKNOWN)
    assert desk.step("UNKNOWN", START + timedelta(seconds=90), policy) == []


def test_a_source_that_answered_then_failed_inside_the_grace_pages_at_unknown_for() -> None:
    desk = Desk()
    policy = _restart(START, grace_s=600)
    desk.step("UNKNOWN", START, policy)  # not answered yet: held
    answered = replace(policy, warm_up=policy.warm_up.seen(  # type: ignore[union-attr]
        [_status("binance", START + timedelta(seconds=5))], []))
    desk.step("OK", START + timedelta(seconds=5), answered)
    at = START + timedelta(seconds=20)
    failed = replace(answered, warm_up=answered.warm_up.seen(  # type: ignore[union-attr]
        [_status("binance", at, ok=False)], [_failed("binance", at)]))
    assert desk.step("UNKNOWN", at, failed) == []  # unknown_for_s (30 s) still applies
    (firing,) = desk.step("UNKNOWN", at + timedelta(seconds=30), failed)  # grace: 600 s
    assert (firing.kind, firing.status) == (NotificationKind.FIRING, LimitStatus.UNKNOWN)


def test_the_grace_holds_only_what_a_silent_source_can_explain() -> None:
    at = START + timedelta(seconds=40)
    warm_up = WarmUp(until=START + timedelta(seconds=600)).seen(
        [_status("binance", START)], [])  # binance answered once; okx never did
    warm_up = warm_up.seen([_status("binance", at, ok=False)],
                           [_failed("binance", at), _silent("okx")])
    assert [p.venue for p in warm_up.waiting] == ["okx"]
    assert [p.venue for p in warm_up.failing] == ["binance"]

    def held(scope: str, kind: str = "max_notional") -> bool:
        return warm_up.holds(replace(make_result("UNKNOWN", at, scope=scope), limit_kind=kind),
                             at)

    assert held("venue:okx") and held("venue:okx", "data_age")
    assert not held("venue:binance") and not held("venue:binance", "data_age")
    assert not held("portfolio")  # binance's failure can explain it: paged
    assert not held("venue:kraken")  # no silent source explains it: a real UNKNOWN
    assert not warm_up.holds(make_result("UNKNOWN", at, scope="venue:okx"),
                             START + timedelta(seconds=600))  # at most the grace
    assert not WarmUp(until=START + timedelta(seconds=600)).holds(
        make_result("UNKNOWN", at), at)  # before any evaluation: nothing to hold


def test_the_grace_never_holds_a_real_breach() -> None:
    desk = Desk()
    (firing,) = desk.step("BREACH", START, _restart(START, grace_s=60))
    assert firing.status is LimitStatus.BREACH


@pytest.mark.parametrize(("values", "expected"), [
    ([850, 790, 760], [("firing", "WARN")]),  # inside 5 % of the breach level: still WARN
    ([850, 790, 740], [("firing", "WARN"), ("resolved", "OK")]),
    ([1200, 960, 940], [("firing", "BREACH"), ("deescalated", "WARN")]),
])
def test_hysteresis_clears_only_below_the_lower_level(values: Sequence[float],
                                                      expected: list[tuple[str, str]]) -> None:
    desk = Desk()
    policy = replace(QUIET, keep_firing_for_s=0)
    at = START
    for value in values:
        status = "BREACH" if value >= 1000 else "WARN" if value >= 800 else "OK"
        desk.step(status, at, policy, value=value)
        at += timedelta(seconds=30)
    assert desk.kinds() == expected


def test_hysteresis_leaves_the_raw_status_alone_for_lower_is_worse_limits() -> None:
    result = make_result("OK", START, value=1.0)
    lower_is_worse = replace(result, warn_level=2.0, breach_level=1.5, value=2.05,
                             status=LimitStatus.OK)
    assert held_status(lower_is_worse, LimitStatus.WARN, 0.05) is LimitStatus.WARN
    assert held_status(replace(lower_is_worse, value=2.1), LimitStatus.WARN, 0.05) \
        is LimitStatus.OK


def test_a_per_limit_for_keeps_a_new_episode_pending() -> None:
    desk = Desk()
    policy = replace(QUIET, rules={"slow_limit": AlertRule(for_s=60)})
    assert desk.step("WARN", START, policy, limit_id="slow_limit") == []
    assert desk.step("OK", START + timedelta(seconds=30), policy, limit_id="slow_limit") == []
    desk.step("WARN", START + timedelta(seconds=60), policy, limit_id="slow_limit")
    (firing,) = desk.step("WARN", START + timedelta(seconds=120), policy, limit_id="slow_limit")
    assert firing.kind is NotificationKind.FIRING
    assert desk.step("WARN", START, policy)  # other limits keep the policy's default (0 s)


def test_the_default_grace_is_the_slowest_poll_plus_one_budget() -> None:
    assert warmup_grace_s([5.0, 30.0], 60.0) == 90.0


def test_limits_yaml_rules_reach_the_policy_and_keep_old_versions() -> None:
    from risk_monitor.domain.alerts import alert_rules, with_limit_rules
    from risk_monitor.domain.limits import LimitConfig

    plain = {"id": "btc", "kind": "max_notional", "breach": 1000.0}
    tuned = {**plain, "for_s": 60, "keep_firing_for_s": 300, "hysteresis": 0.1,
             "owner": "desk-a", "runbook_url": "https://runbooks.example/btc"}
    before = LimitConfig.model_validate({"limits": [plain]})
    after = LimitConfig.model_validate({"limits": [tuned]})
    assert alert_rules(before) == {}
    assert alert_rules(after) == {"btc": AlertRule(
        for_s=60, keep_firing_for_s=300, hysteresis=0.1, owner="desk-a",
        runbook_url="https://runbooks.example/btc")}
    assert after.limits[0].owner == "desk-a"
    # unset alerting fields stay out of the canonical document: versions did not move
    assert "for_s" not in before.model_dump(mode="json")["limits"][0]
    policy = with_limit_rules(QUIET, after)
    assert (policy.for_s("btc"), policy.keep_firing_s("btc"), policy.hysteresis_of("btc")) \
        == (60, 300, 0.1)
    assert with_limit_rules(QUIET, before) is QUIET
    with pytest.raises(ValueError, match="hysteresis"):
        LimitConfig.model_validate({"limits": [{**plain, "hysteresis": 1.5}]})


def test_notifications_carry_owner_runbook_and_episode_start() -> None:
    desk = Desk()
    policy = replace(QUIET, rules={"max_notional": AlertRule(
        owner="desk-a", runbook_url="https://runbooks.example/notional")})
    (firing,) = desk.step("WARN", START, policy)
    (resolved,) = desk.step("OK", START + timedelta(minutes=5), replace(policy,
                                                                        keep_firing_for_s=0))
    for note in (firing, resolved):
        assert note.context["owner"] == "desk-a"
        assert note.context["runbook_url"] == "https://runbooks.example/notional"
        assert note.context["episode_started_at"] == START.isoformat()


def test_a_breach_pages_on_its_first_reading_at_the_defaults() -> None:
    """The noise controls never delay a breach: from OK and from a notified WARN alike."""
    desk = Desk()
    (first,) = desk.step("BREACH", START, QUIET, value=1200.0)
    assert (first.kind, first.status) == (NotificationKind.FIRING, LimitStatus.BREACH)
    other = Desk()
    other.step("WARN", START, QUIET, value=880.0, limit_id="other")
    (escalated,) = other.step("BREACH", START + timedelta(seconds=10), QUIET, value=1010.0,
                              limit_id="other")
    assert (escalated.kind, escalated.status) == (NotificationKind.ESCALATED, LimitStatus.BREACH)


def test_default_data_age_budgets_tolerate_a_missed_poll() -> None:
    """A calm desk's flaky source misses a poll now and then: at the defaults every source's
    budget outlasts two poll intervals, so one missed poll never reads as stale."""
    settings = Settings.model_validate({})
    md, svc = settings.market_data, settings.service
    for budget, poll in ((md.max_age_s, md.poll_interval_s),
                         (md.exchange_max_age_s, svc.positions_poll_s),
                         (md.custody_max_age_s, svc.custody_poll_s)):
        assert budget >= 2 * poll


def test_warn_for_holds_a_short_warn_but_never_a_breach() -> None:
    """``alerts.warn_for_s``: a WARN of one reading pages nobody, a WARN that lasts pages once,
    and a pending WARN that turns BREACH pages the breach at once."""
    policy = replace(QUIET, warn_for_s=30)
    short = Desk()
    assert short.step("WARN", START, policy, value=850.0) == []
    assert short.step("OK", START + timedelta(seconds=10), policy, value=500.0) == []
    assert short.sent == []
    lasting = Desk()
    assert lasting.step("WARN", START, policy, value=850.0) == []
    assert lasting.step("WARN", START + timedelta(seconds=20), policy, value=850.0) == []
    (warn,) = lasting.step("WARN", START + timedelta(seconds=30), policy, value=850.0)
    assert (warn.kind, warn.status) == (NotificationKind.FIRING, LimitStatus.WARN)
    turning = Desk()
    assert turning.step("WARN", START, policy, value=850.0) == []
    (breach,) = turning.step("BREACH", START + timedelta(seconds=10), policy, value=1200.0)
    assert (breach.kind, breach.status) == (NotificationKind.FIRING, LimitStatus.BREACH)
    (first,) = Desk().step("BREACH", START, policy, value=1200.0)
    assert first.status is LimitStatus.BREACH


def test_warn_for_comes_from_the_settings() -> None:
    settings = Settings.model_validate({"alerts": {"warn_for_s": 45}})
    assert alert_policy(settings).warn_for_s == 45
    assert QUIET.warn_for_s == 0  # default: a WARN pages on its first reading
    with pytest.raises(ValueError, match="warn_for_s"):
        AlertPolicy(warn_for_s=-1)
