"""The routing tree (``slack.routes``) through the outbox, the real slack_sdk client and the
Slack simulator: a venue's route receives that venue's alerts, nested routes split it by
severity (an escalation is posted to the nested critical route with a link back to the thread,
and that route hears the episode's later de-escalation and resolve), ``continue`` copies an alert
to a further route, and everything else takes the default route.
"""

from __future__ import annotations

from typing import Any

import pytest

from risk_monitor.adapters.notifiers import SlackNotifier
from risk_monitor.adapters.sql import BackoffPolicy, OutboxDispatcher, Storage
from risk_monitor.application.alerting import raise_alerts
from risk_monitor.domain.alerts import AlertPolicy
from risk_monitor.domain.model import LimitResult
from risk_monitor.platform.errors import ConfigError, NotifierConfigError
from risk_monitor.platform.settings import load_settings
from risk_monitor_tests.fixtures.storage import FakeClock, evaluate, make_result
from risk_sim.slack import SlackSimulator

pytestmark = pytest.mark.integration

TOKEN_ENV = "RISK_MONITOR_TEST_SLACK_TOKEN"
OKX = "venue:okx|instrument:BTC/USDT:USDT"
BINANCE = "venue:binance|instrument:BTC/USDT:USDT"
ROUTES: list[dict[str, Any]] = [
    {"matchers": ['venue="okx"'], "channel": "#okx-desk", "continue": True, "routes": [
        {"matchers": ['severity="critical"'], "channel": "#okx-critical"}]},
    {"matchers": ['venue="okx"', 'severity="warning"'], "channel": "#desk-warnings"},
]


def _notifier(slack_sim: SlackSimulator, monkeypatch: pytest.MonkeyPatch,
              routes: list[dict[str, Any]]) -> SlackNotifier:
    monkeypatch.setenv(TOKEN_ENV, slack_sim.token)
    settings = load_settings(slack={"token_env": TOKEN_ENV, "base_url": slack_sim.api_base,
                                    "timeout_s": 2, "routes": routes})
    return SlackNotifier.from_settings(settings)


def _deliver(storage: Storage, notifier: SlackNotifier, clock: FakeClock) -> None:
    dispatcher = OutboxDispatcher(storage.engine, notifier, clock=clock, notifier_name="slack",
                                  backoff=BackoffPolicy(initial_s=1.0, max_s=30.0, jitter=0.0))
    result = dispatcher.dispatch_once(50)
    assert (result.retried, result.failed) == (0, 0)


def _states(slack_sim: SlackSimulator, channel: str) -> list[tuple[str, str]]:
    """(kind, status) of the alert states posted in ``channel`` (copies carry no metadata)."""
    found = []
    for message in slack_sim.messages_in(channel):
        meta = (message["params"].get("metadata") or {}).get("event_payload")
        found.append((meta["kind"], meta["status"]) if meta else ("copy", ""))
    return found


def test_a_venue_route_receives_its_venues_alerts(
        pg_storage: Storage, clock: FakeClock, slack_sim: SlackSimulator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    notifier = _notifier(slack_sim, monkeypatch, ROUTES)
    for status in ("WARN", "BREACH", "OK"):
        evaluate(pg_storage, make_result(status, clock.advance(1), scope=OKX))
        evaluate(pg_storage, make_result(status, clock.advance(1), scope=BINANCE))
        _deliver(pg_storage, notifier, clock)

    # okx: the thread lives in the venue's route, every state once, in order
    assert _states(slack_sim, "#okx-desk") == [
        ("firing", "WARN"), ("escalated", "BREACH"), ("resolved", "OK")]
    root = slack_sim.messages_in("#okx-desk")[0]
    assert all(m["thread_ts"] == root["ts"] for m in slack_sim.messages_in("#okx-desk")[1:])
    # the escalation goes to the nested critical route too, linking back to the thread, and
    # that route hears the resolve
    escalated, resolved_there = slack_sim.messages_in("#okx-critical")
    assert "escalated from" in escalated["text"] and "[resolved]" in resolved_there["text"]
    # continue: the okx WARN also matched the next sibling route, which got a copy, and then
    # hears how the episode went on: the escalation and the resolve
    assert _states(slack_sim, "#desk-warnings") == [("copy", "")] * 3
    warned, escalated_copy, resolved = slack_sim.messages_in("#desk-warnings")
    assert ":warning: WARN" in warned["text"] and "[escalated]" in escalated_copy["text"]
    assert "[resolved]" in resolved["text"]
    # binance matches no route: the default route, by severity
    assert _states(slack_sim, "#risk-alerts") == [
        ("firing", "WARN"), ("escalated", "BREACH"), ("resolved", "OK")]
    assert _states(slack_sim, "#risk-critical") == [("copy", "")] * 2  # escalation, resolve
    assert {m["channel"] for m in slack_sim.messages} == {
        slack_sim.channel_id(c) for c in ("#okx-desk", "#okx-critical", "#desk-warnings",
                                          "#risk-alerts", "#risk-critical")}


def test_a_breach_first_seen_on_the_venue_posts_to_the_nested_route(
        pg_storage: Storage, clock: FakeClock, slack_sim: SlackSimulator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    notifier = _notifier(slack_sim, monkeypatch, ROUTES)
    evaluate(pg_storage, make_result("BREACH", clock.advance(1), scope=OKX))
    _deliver(pg_storage, notifier, clock)
    assert _states(slack_sim, "#okx-critical") == [("firing", "BREACH")]
    assert slack_sim.messages_in("#okx-desk") == [] and slack_sim.messages_in("#desk-warnings") \
        == []


def test_a_bad_route_is_refused_at_start(slack_sim: SlackSimulator,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"slack\.routes\[0\]\.matchers"):
        _notifier(slack_sim, monkeypatch, [{"matchers": ["region=eu"], "channel": "#eu"}])


def test_each_route_copy_is_delivered_exactly_once(
        pg_storage: Storage, clock: FakeClock, slack_sim: SlackSimulator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy that fails (here: the bot is not in the channel yet) fails the delivery, so the
    outbox retries it; the retry adopts the primary post and the copy already made, and posts
    only the missing copy: every route holds the alert once."""
    routes: list[dict[str, Any]] = [
        {"matchers": ['venue="okx"'], "channel": "#okx-desk", "continue": True},
        {"matchers": ['venue="okx"'], "channel": "#desk-warnings", "continue": True},
        {"matchers": ['venue="okx"'], "channel": "#okx-audit"},
    ]
    notifier = _notifier(slack_sim, monkeypatch, routes)
    joined = ["#okx-desk", "#desk-warnings", "#risk-alerts", "#risk-critical", "#risk-info"]
    slack_sim.set_channels(joined)  # not #okx-audit yet
    dispatcher = _dispatcher(pg_storage, notifier, clock)
    evaluate(pg_storage, make_result("WARN", clock.advance(1), scope=OKX))
    first = dispatcher.dispatch_once(50)
    assert (first.sent, first.retried + first.failed) == (0, 1)
    assert (len(slack_sim.messages_in("#okx-desk")), len(slack_sim.messages_in("#desk-warnings"))
            ) == (1, 1)
    assert pg_storage.outbox.rows()[0].status != "sent"  # the alert is not delivered yet

    slack_sim.set_channels([*joined, "#okx-audit"])  # the bot joined #okx-audit
    clock.advance(60)
    assert dispatcher.dispatch_once(50).sent == 1
    assert _states(slack_sim, "#okx-desk") == [("firing", "WARN")]
    assert _states(slack_sim, "#desk-warnings") == [("copy", "")]
    assert _states(slack_sim, "#okx-audit") == [("copy", "")]
    (row,) = pg_storage.outbox.rows()
    assert row.status == "sent"
    assert row.delivery_ref == (f"{slack_sim.channel_id('#okx-desk')}:"
                                f"{slack_sim.messages_in('#okx-desk')[0]['ts']}")
    clock.advance(60)
    assert dispatcher.dispatch_once(50).sent == 0
    assert len(slack_sim.messages) == 3


def test_an_escalation_copy_to_the_critical_route_is_retried_once(
        pg_storage: Storage, clock: FakeClock, slack_sim: SlackSimulator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The escalation's post to the critical route fails after the thread reply went out:
    the retry adopts the reply and posts the critical copy once."""
    notifier = _notifier(slack_sim, monkeypatch, [])
    dispatcher = _dispatcher(pg_storage, notifier, clock)
    evaluate(pg_storage, make_result("WARN", clock.advance(1), scope=BINANCE))
    assert dispatcher.dispatch_once(50).sent == 1
    slack_sim.set_channels(["#risk-alerts", "#risk-info"])  # not in #risk-critical yet
    evaluate(pg_storage, make_result("BREACH", clock.advance(1), scope=BINANCE))
    assert dispatcher.dispatch_once(50).sent == 0
    assert _states(slack_sim, "#risk-alerts") == [("firing", "WARN"), ("escalated", "BREACH")]
    slack_sim.set_channels(["#risk-alerts", "#risk-info", "#risk-critical"])
    clock.advance(60)
    assert dispatcher.dispatch_once(50).sent == 1
    clock.advance(60)
    assert dispatcher.dispatch_once(50).sent == 0
    assert _states(slack_sim, "#risk-alerts") == [("firing", "WARN"), ("escalated", "BREACH")]
    (escalated,) = slack_sim.messages_in("#risk-critical")
    assert "escalated from" in escalated["text"]
    # a crash after both posts (the outbox never heard): the retry adopts both, posts nothing
    (row, breach), *_ = [(r, n) for r, n in pg_storage.outbox.recent()
                         if n.status.value == "BREACH"]
    root = f"{slack_sim.channel_id('#risk-alerts')}:{slack_sim.messages_in('#risk-alerts')[0]['ts']}"
    assert notifier.find_sent(breach, root) == row.delivery_ref == \
        f"{escalated['channel']}:{escalated['ts']}"
    assert len(slack_sim.messages) == 3


@pytest.mark.parametrize("posted", ["primary only", "primary and every copy"])
def test_a_crash_mid_delivery_leaves_every_route_copy_once(
        posted: str, pg_storage: Storage, clock: FakeClock, slack_sim: SlackSimulator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A dispatcher dies after Slack took the primary post (and maybe its copies) but before
    the outbox recorded anything: once the lease expires, the next dispatcher adopts what is
    there and posts only what is missing. No route loses the alert, none gets it twice."""
    routes: list[dict[str, Any]] = [
        {"matchers": ['venue="okx"'], "channel": "#okx-desk", "continue": True},
        {"matchers": ['venue="okx"'], "channel": "#treasury"},
    ]
    notifier = _notifier(slack_sim, monkeypatch, routes)
    dispatcher = _dispatcher(pg_storage, notifier, clock, lease_s=10.0)
    evaluate(pg_storage, make_result("BREACH", clock.advance(1), scope=OKX))
    # the crashed attempt: claimed, posted, never marked
    (entry,) = dispatcher.repository.claim(50, clock(), dispatcher.lease_s)
    if posted == "primary only":
        joined = ["#okx-desk", "#risk-alerts", "#risk-critical", "#risk-info"]
        slack_sim.set_channels(joined)  # the copy fails: the attempt stops after the primary
        with pytest.raises(NotifierConfigError):  # and the process dies here
            notifier.send(entry.notification, None)
        slack_sim.set_channels([*joined, "#treasury"])
    else:
        notifier.send(entry.notification, None)
    assert len(slack_sim.messages_in("#okx-desk")) == 1
    assert dispatcher.dispatch_once(50).sent == 0  # still leased to the dead dispatcher

    clock.advance(11)  # the lease expired
    assert dispatcher.dispatch_once(50).sent == 1
    assert _states(slack_sim, "#okx-desk") == [("firing", "BREACH")]
    assert _states(slack_sim, "#treasury") == [("copy", "")]
    (row,) = pg_storage.outbox.rows()
    assert (row.status, row.attempts) == ("sent", 2)
    clock.advance(60)
    assert dispatcher.dispatch_once(50).sent == 0
    assert len(slack_sim.messages) == 2


def _dispatcher(storage: Storage, notifier: SlackNotifier, clock: FakeClock,
                **options: Any) -> OutboxDispatcher:
    return OutboxDispatcher(storage.engine, notifier, clock=clock, notifier_name="slack",
                            backoff=BackoffPolicy(initial_s=1.0, max_s=30.0, jitter=0.0),
                            **options)


def _crash_mid_delivery(crash: str, dispatcher: OutboxDispatcher, notifier: SlackNotifier,
                        slack_sim: SlackSimulator, clock: FakeClock, *, thread: str,
                        joined: list[str], copy_to: str) -> None:
    """The crashed attempt: the pending row claimed and posted (in part: the copy to
    ``copy_to`` fails when the bot is only in ``joined``), never marked; then the lease
    expires. Nothing for ``crash == "none"``."""
    if crash == "none":
        return
    (entry,) = dispatcher.repository.claim(50, clock(), dispatcher.lease_s)
    first = slack_sim.messages_in(thread)[0]
    root = f"{first['channel']}:{first['ts']}"
    if crash == "after the thread reply":
        slack_sim.set_channels(joined)  # the copy fails, and the process dies there
        with pytest.raises(NotifierConfigError):
            notifier.send(entry.notification, root)
        slack_sim.set_channels([*joined, copy_to])
    else:
        notifier.send(entry.notification, root)
    clock.advance(11)  # the lease expired


def _raise(storage: Storage, result: LimitResult) -> None:
    """The real planner (``raise_alerts``): messages with the episode's start and length."""
    raise_alerts(storage, [result], now=result.as_of, policy=AlertPolicy(), context={})


CONTINUE_ROUTES: list[dict[str, Any]] = [
    {"matchers": ['venue="okx"'], "channel": "#okx-desk", "continue": True},
    {"matchers": ['venue="okx"'], "channel": "#treasury"},
]


@pytest.mark.parametrize("crash", ["none", "after the thread reply", "after every post"])
def test_a_continue_route_hears_the_escalation_and_the_resolve_once(
        crash: str, pg_storage: Storage, clock: FakeClock, slack_sim: SlackSimulator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A channel that got the episode's first message (a ``continue`` copy) also gets its
    escalation and its resolve (with the episode's length), each once, with the outbox's
    guarantees: a dispatcher that dies after the resolve's thread reply (or after every post)
    leaves the next one to adopt what Slack holds and post only what is missing."""
    notifier = _notifier(slack_sim, monkeypatch, CONTINUE_ROUTES)
    dispatcher = _dispatcher(pg_storage, notifier, clock, lease_s=10.0)
    for status in ("WARN", "BREACH"):
        _raise(pg_storage, make_result(status, clock.advance(1), scope=OKX))
        assert dispatcher.dispatch_once(50).sent == 1
    clock.advance(120)
    _raise(pg_storage, make_result("OK", clock(), scope=OKX))
    _crash_mid_delivery(crash, dispatcher, notifier, slack_sim, clock, thread="#okx-desk",
                        joined=["#okx-desk", "#risk-alerts", "#risk-critical", "#risk-info"],
                        copy_to="#treasury")
    assert dispatcher.dispatch_once(50).sent == 1
    clock.advance(60)
    assert dispatcher.dispatch_once(50).sent == 0

    assert _states(slack_sim, "#okx-desk") == [
        ("firing", "WARN"), ("escalated", "BREACH"), ("resolved", "OK")]
    assert _states(slack_sim, "#treasury") == [("copy", "")] * 3
    first, escalated, resolved = slack_sim.messages_in("#treasury")
    assert ":warning: WARN [firing]" in first["text"]
    assert ":rotating_light: BREACH [escalated]" in escalated["text"]
    assert "OK [resolved]" in resolved["text"] and "episode lasted 2m 01s" in resolved["text"]
    assert all(not m["thread_ts"] for m in slack_sim.messages_in("#treasury"))  # unthreaded
    assert all(r.status == "sent" for r in pg_storage.outbox.rows())


def test_a_channel_that_did_not_get_the_first_message_hears_nothing_later(
        pg_storage: Storage, clock: FakeClock, slack_sim: SlackSimulator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Only breaches are copied to the treasury: a WARN episode that resolves is never said
    there, and repeats stay in the thread."""
    routes: list[dict[str, Any]] = [
        {"matchers": ['venue="okx"'], "channel": "#okx-desk", "continue": True},
        {"matchers": ['venue="okx"', 'severity="critical"'], "channel": "#treasury"},
    ]
    notifier = _notifier(slack_sim, monkeypatch, routes)
    for status in ("WARN", "OK"):
        evaluate(pg_storage, make_result(status, clock.advance(1), scope=OKX))
        _deliver(pg_storage, notifier, clock)
    assert _states(slack_sim, "#okx-desk") == [("firing", "WARN"), ("resolved", "OK")]
    assert slack_sim.messages_in("#treasury") == []


@pytest.mark.parametrize("crash", ["none", "after the thread reply", "after every post"])
def test_the_critical_channel_of_an_escalation_hears_how_the_episode_ends_once(
        crash: str, pg_storage: Storage, clock: FakeClock, slack_sim: SlackSimulator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """WARN -> BREACH -> WARN -> OK with the default routes: the critical channel that got the
    escalation's copy also hears the de-escalation and the resolve, each once, unthreaded;
    a dispatcher that dies after the resolve's thread reply (or after every post) leaves the
    next one to adopt what Slack holds and post only what is missing."""
    notifier = _notifier(slack_sim, monkeypatch, [])
    dispatcher = _dispatcher(pg_storage, notifier, clock, lease_s=10.0)
    for status in ("WARN", "BREACH", "WARN"):
        _raise(pg_storage, make_result(status, clock.advance(1), scope=BINANCE))
        assert dispatcher.dispatch_once(50).sent == 1
    clock.advance(120)
    _raise(pg_storage, make_result("OK", clock(), scope=BINANCE))
    _crash_mid_delivery(crash, dispatcher, notifier, slack_sim, clock, thread="#risk-alerts",
                        joined=["#risk-alerts", "#risk-info"], copy_to="#risk-critical")
    assert dispatcher.dispatch_once(50).sent == 1
    clock.advance(60)
    assert dispatcher.dispatch_once(50).sent == 0

    assert _states(slack_sim, "#risk-alerts") == [
        ("firing", "WARN"), ("escalated", "BREACH"), ("deescalated", "WARN"), ("resolved", "OK")]
    assert _states(slack_sim, "#risk-critical") == [("copy", "")] * 3
    escalated, deescalated, resolved = slack_sim.messages_in("#risk-critical")
    assert "escalated from" in escalated["text"]
    assert ":warning: WARN [deescalated]" in deescalated["text"]
    assert "OK [resolved]" in resolved["text"] and "episode lasted 2m 02s" in resolved["text"]
    assert all(not m["thread_ts"] for m in slack_sim.messages_in("#risk-critical"))
    assert all(r.status == "sent" for r in pg_storage.outbox.rows())


def test_an_episode_that_never_escalated_says_nothing_in_the_critical_channel(
        pg_storage: Storage, clock: FakeClock, slack_sim: SlackSimulator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """WARN -> OK stays in the warning thread; a BREACH-first episode lives in the critical
    channel already and gets no copy of its resolve there."""
    notifier = _notifier(slack_sim, monkeypatch, [])
    for status in ("WARN", "OK"):
        evaluate(pg_storage, make_result(status, clock.advance(1), scope=BINANCE))
        evaluate(pg_storage, make_result("BREACH" if status == "WARN" else status,
                                         clock.advance(1), scope=OKX))
        _deliver(pg_storage, notifier, clock)
    assert _states(slack_sim, "#risk-alerts") == [("firing", "WARN"), ("resolved", "OK")]
    assert _states(slack_sim, "#risk-critical") == [("firing", "BREACH"), ("resolved", "OK")]
