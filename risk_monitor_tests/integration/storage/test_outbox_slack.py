"""Outbox + Slack notifier against the real slack_sdk and the Slack simulator.

Each test drives the dispatcher with a fake clock (``dispatch_once``), so backoff and leases are
exercised without sleeping; the Slack side is the real ``WebClient`` over HTTP.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from risk_monitor.adapters.file_sink import FileSink
from risk_monitor.adapters.notifiers import SlackNotifier
from risk_monitor.adapters.prometheus import StoredMetricsCollector
from risk_monitor.adapters.sql import BackoffPolicy, OutboxDispatcher, Storage
from risk_monitor.platform.errors import ConfigError
from risk_monitor.platform.logging import configure_logging
from risk_monitor.platform.settings import load_settings
from risk_monitor_tests.fixtures.storage import FakeClock, evaluate, make_result
from risk_sim.slack import SlackSimulator

TOKEN_ENV = "RISK_MONITOR_TEST_SLACK_TOKEN"
NO_JITTER = BackoffPolicy(initial_s=1.0, max_s=30.0, jitter=0.0)


@pytest.fixture
def notifier(slack_sim: SlackSimulator, monkeypatch: pytest.MonkeyPatch) -> SlackNotifier:
    monkeypatch.setenv(TOKEN_ENV, slack_sim.token)
    settings = load_settings(slack={"token_env": TOKEN_ENV, "base_url": slack_sim.api_base,
                                    "timeout_s": 2},
                             alerts={"dagster_ui_url": "http://dagster.test:3000"})
    return SlackNotifier.from_settings(settings)


def _dispatcher(storage: Storage, notifier: Any, clock: FakeClock, **kwargs: Any
                ) -> OutboxDispatcher:
    kwargs.setdefault("backoff", NO_JITTER)
    return OutboxDispatcher(storage.engine, notifier, clock=clock, notifier_name="slack",
                            **kwargs)


def _meta(message: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = message["params"]["metadata"]["event_payload"]
    return payload


def _states(slack_sim: SlackSimulator) -> list[dict[str, Any]]:
    """One message per alert state: without the escalation's copy in the critical channel."""
    return [m for m in slack_sim.messages if m["params"].get("metadata")]


def _series(storage: Storage, clock: FakeClock, statuses: list[str], *,
            scope: str = "portfolio") -> None:
    for status in statuses:
        evaluate(storage, make_result(status, clock.advance(1), scope=scope))


def _drain(dispatcher: OutboxDispatcher, clock: FakeClock, rounds: int = 20) -> None:
    for _ in range(rounds):
        clock.advance(60)
        if dispatcher.dispatch_once(50).claimed == 0:
            return


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream, force=True)
    yield stream
    configure_logging("INFO", force=True)


def test_warn_breach_resolved_posts_once_then_threads_and_updates(
        storage: Storage, clock: FakeClock, notifier: SlackNotifier,
        slack_sim: SlackSimulator) -> None:
    _series(storage, clock, ["WARN", "BREACH", "OK"])
    result = _dispatcher(storage, notifier, clock).dispatch_once(10)
    assert (result.sent, result.retried, result.failed) == (3, 0, 0)

    messages = _states(slack_sim)
    root, *replies = messages
    assert [_meta(m)["kind"] for m in messages] == ["firing", "escalated", "resolved"]
    assert [_meta(m)["status"] for m in messages] == ["WARN", "BREACH", "OK"]
    assert root["thread_ts"] is None and root["channel"] == slack_sim.channel_id("#risk-alerts")
    assert all(r["thread_ts"] == root["ts"] and r["channel"] == root["channel"] for r in replies)
    assert len(root["updates"]) == 2  # the first message shows the current state
    assert "RESOLVED" not in root["text"] and root["text"].startswith(":white_check_mark: OK")
    assert ":rotating_light: BREACH" in replies[0]["text"]
    # Block Kit content: value vs levels, utilisation, links to the run and the asset
    blocks = json.dumps(root["blocks"])
    assert "http://dagster.test:3000/runs/run-1" in blocks
    assert "http://dagster.test:3000/assets/limit_status" in blocks
    first = json.dumps(replies[0]["blocks"])
    assert "120.0%" in first and "1,000" in first and "cfg-v1" in first

    rows = storage.outbox.rows()
    assert [r.status for r in rows] == ["sent"] * 3
    assert rows[0].delivery_ref == f"{root['channel']}:{root['ts']}"
    assert all(r.notified_at is not None for r in rows)
    assert storage.alerts.message_ref(rows[0].fingerprint) == rows[0].delivery_ref
    feed = storage.outbox.recent(2)  # the service's alert feed: newest first
    assert [(row.kind, n.kind.value) for row, n in feed] == [("resolved", "resolved"),
                                                             ("escalated", "escalated")]
    assert feed[0][1].context["run_id"] == "run-1"
    # nothing left to send: a second dispatch sends nothing twice
    assert _dispatcher(storage, notifier, clock).dispatch_once(10).claimed == 0
    assert len(_states(slack_sim)) == 3


def test_a_missing_token_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch,
                                                  slack_sim: SlackSimulator) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    settings = load_settings(slack={"token_env": TOKEN_ENV, "base_url": slack_sim.api_base})
    with pytest.raises(ConfigError, match=TOKEN_ENV):
        SlackNotifier.from_settings(settings)


def test_severity_routes_the_channel(storage: Storage, clock: FakeClock,
                                     notifier: SlackNotifier, slack_sim: SlackSimulator) -> None:
    _series(storage, clock, ["BREACH"])
    _dispatcher(storage, notifier, clock).dispatch_once(10)
    (message,) = slack_sim.messages
    assert message["channel"] == slack_sim.channel_id("#risk-critical")


@pytest.mark.parametrize("outage", ["error_5xx", "ratelimited"])
def test_outage_delays_alerts_and_loses_none(
        storage: Storage, clock: FakeClock, notifier: SlackNotifier,
        slack_sim: SlackSimulator, outage: str) -> None:
    scopes = [f"venue:v{i}" for i in range(4)]
    for scope in scopes:
        _series(storage, clock, ["WARN", "BREACH"], scope=scope)
    dispatcher = _dispatcher(storage, notifier, clock)

    slack_sim.set_outage(outage, retry_after=7)  # type: ignore[arg-type]
    for _ in range(5):  # minutes of outage, retried with backoff
        result = dispatcher.dispatch_once(50)
        assert result.sent == 0
        clock.advance(60)
    assert slack_sim.messages == []
    rows = storage.outbox.rows()
    assert {r.status for r in rows} == {"pending"}
    assert max(r.attempts for r in rows) >= 2
    assert all(r.last_error_code == "RM400" for r in rows if r.attempts)

    slack_sim.set_outage("none")
    _drain(dispatcher, clock)
    messages = _states(slack_sim)
    assert len(messages) == 2 * len(scopes)  # every alert, none twice
    keys = [_meta(m)["idempotency_key"] for m in messages]
    assert len(set(keys)) == len(keys)
    for scope in scopes:  # in order within each series, threaded under its first message
        series = [m for m in messages if _meta(m)["scope"] == scope]
        assert [_meta(m)["kind"] for m in series] == ["firing", "escalated"]
        assert series[1]["thread_ts"] == series[0]["ts"]
    assert storage.outbox.counts() == {"pending": 0, "sending": 0, "sent": 8, "failed": 0,
                                       "suppressed": 0}


def test_retry_after_is_honoured(storage: Storage, clock: FakeClock, notifier: SlackNotifier,
                                 slack_sim: SlackSimulator) -> None:
    _series(storage, clock, ["WARN"])
    dispatcher = _dispatcher(storage, notifier, clock)
    slack_sim.set_outage("ratelimited", retry_after=7, count=1)
    start = clock()
    assert dispatcher.dispatch_once(10).retried == 1
    (row,) = storage.outbox.rows()
    assert (row.next_attempt_at - start).total_seconds() >= 7  # not the 1 s of plain backoff
    clock.advance(5)
    assert dispatcher.dispatch_once(10).claimed == 0  # not due yet
    clock.advance(3)
    assert dispatcher.dispatch_once(10).sent == 1
    assert len(slack_sim.messages) == 1


def test_a_failed_attempt_holds_back_the_rest_of_its_series(
        storage: Storage, clock: FakeClock, notifier: SlackNotifier,
        slack_sim: SlackSimulator) -> None:
    _series(storage, clock, ["WARN", "BREACH", "OK"])
    dispatcher = _dispatcher(storage, notifier, clock)
    slack_sim.set_outage("error_5xx", count=1)  # only the first call fails
    result = dispatcher.dispatch_once(10)
    assert (result.sent, result.retried, result.deferred) == (0, 1, 2)
    assert slack_sim.messages == []
    _drain(dispatcher, clock)
    assert [_meta(m)["kind"] for m in _states(slack_sim)] == ["firing", "escalated", "resolved"]


def test_invalid_auth_keeps_the_alert_and_is_visible(
        storage: Storage, clock: FakeClock, notifier: SlackNotifier,
        slack_sim: SlackSimulator, log_stream: io.StringIO, tmp_path: Path) -> None:
    _series(storage, clock, ["BREACH"])
    slack_sim.set_outage("invalid_auth")
    fallback = tmp_path / "fallback.jsonl"
    dispatcher = _dispatcher(storage, notifier, clock, fallback=FileSink(fallback))
    result = dispatcher.dispatch_once(10)
    assert (result.sent, result.retried, result.failed) == (0, 1, 0)
    (row,) = storage.outbox.rows()
    assert (row.status, row.last_error_code) == ("pending", "RM402")
    assert "invalid_auth" in (row.last_error or "")
    assert row.fallback_ref is not None and row.fallback_ref.startswith("file:fallback.jsonl:")
    assert not dispatcher.notifier_up
    (line,) = fallback.read_text().splitlines()
    assert json.loads(line)["idempotency_key"] == row.idempotency_key

    registry = CollectorRegistry()
    registry.register(StoredMetricsCollector(storage.engine, clock=clock))
    families = {f.name: f for f in
                text_string_to_metric_families(generate_latest(registry).decode())}
    failed = [s.value for s in families["risk_monitor_alerts"].samples
              if s.labels == {"severity": "critical", "outcome": "failed"}]
    assert failed == [0.0]  # not given up

    lines = [json.loads(line) for line in log_stream.getvalue().splitlines() if line]
    events = [line["event"] for line in lines]
    assert "alert notification failed for good" not in events
    refused = [line for line in lines if line["event"].startswith("notifier refuses")]
    assert len(refused) == 1 and refused[0]["error_code"] == "RM402"
    assert slack_sim.token not in log_stream.getvalue()


def test_a_crash_between_send_and_mark_adopts_the_earlier_post(
        storage: Storage, clock: FakeClock, notifier: SlackNotifier,
        slack_sim: SlackSimulator) -> None:
    _series(storage, clock, ["BREACH"])
    crashed = _dispatcher(storage, notifier, clock, lease_s=10)
    (entry,) = crashed.repository.claim(10, clock(), crashed.lease_s)
    posted = notifier.send(entry.notification, None)  # delivered ... and the process dies here
    assert storage.outbox.rows()[0].status == "sending"

    restarted = _dispatcher(storage, notifier, clock, lease_s=10)
    assert restarted.dispatch_once(10).claimed == 0  # the lease still protects the claim
    clock.advance(11)
    assert restarted.dispatch_once(10).sent == 1  # adopted, not posted again
    keys = [_meta(m)["idempotency_key"] for m in slack_sim.messages]
    assert keys == [entry.notification.idempotency_key]
    (row,) = storage.outbox.rows()
    assert (row.status, row.attempts, row.delivery_ref) == ("sent", 2, posted)
    assert storage.alerts.message_ref(row.fingerprint) == posted  # the thread root too
    # the crashed dispatcher's late mark cannot overwrite the new outcome
    assert not crashed.repository.mark_sent(entry, "C0:0", clock(), thread_root=True)


def test_a_crashed_threaded_reply_is_adopted_from_the_thread(
        storage: Storage, clock: FakeClock, notifier: SlackNotifier,
        slack_sim: SlackSimulator) -> None:
    _series(storage, clock, ["WARN"])
    dispatcher = _dispatcher(storage, notifier, clock, lease_s=10)
    assert dispatcher.dispatch_once(10).sent == 1
    _series(storage, clock, ["BREACH"])
    (entry,) = dispatcher.repository.claim(10, clock(), dispatcher.lease_s)
    root = storage.alerts.message_ref(entry.fingerprint)
    notifier.send(entry.notification, root)  # the reply is in the thread; the mark is lost
    clock.advance(11)
    assert dispatcher.dispatch_once(10).sent == 1
    assert [_meta(m)["kind"] for m in _states(slack_sim)] == ["firing", "escalated"]
    assert storage.outbox.counts()["sent"] == 2


def test_the_reply_goes_first_and_a_failed_root_edit_retries_without_a_second_reply(
        storage: Storage, clock: FakeClock, notifier: SlackNotifier,
        slack_sim: SlackSimulator) -> None:
    """A later state is posted in its thread before the thread's first message is edited; an
    edit that fails (5xx) fails the delivery, whose retry adopts the reply and edits again."""
    _series(storage, clock, ["WARN"])
    dispatcher = _dispatcher(storage, notifier, clock)
    assert dispatcher.dispatch_once(10).sent == 1
    _series(storage, clock, ["BREACH"])
    slack_sim.faults.add("http_error", "/api/chat.update", count=1, status=503)
    assert dispatcher.dispatch_once(10).retried == 1
    root, reply = _states(slack_sim)
    assert reply["thread_ts"] == root["ts"] and not root["updates"]
    clock.advance(60)
    assert dispatcher.dispatch_once(10).sent == 1
    assert len(_states(slack_sim)) == 2  # the reply adopted, not posted again
    assert len(root["updates"]) == 1 and ":rotating_light: BREACH" in root["text"]
    calls = [(r["method"], r["status"]) for r in slack_sim.requests
             if r["method"] in ("chat.postMessage", "chat.update")]
    assert calls[:3] == [("chat.postMessage", 200), ("chat.postMessage", 200),
                         ("chat.update", 503)]
    assert ("chat.update", 200) in calls[3:]
    assert [r.status for r in storage.outbox.rows()] == ["sent", "sent"]


def test_a_lost_thread_root_starts_a_new_message(
        storage: Storage, clock: FakeClock, notifier: SlackNotifier,
        slack_sim: SlackSimulator) -> None:
    _series(storage, clock, ["WARN"])
    dispatcher = _dispatcher(storage, notifier, clock)
    dispatcher.dispatch_once(10)
    slack_sim.reset()  # the workspace forgot the message: chat.update says message_not_found
    _series(storage, clock, ["BREACH"])
    assert dispatcher.dispatch_once(10).sent == 1
    # the reply went first, into the gone thread (Slack accepts it and shows it nowhere); the
    # state is then posted as a new message, which the delivery records
    orphan, message = slack_sim.messages
    assert orphan["thread_ts"] is not None
    assert message["thread_ts"] is None and _meta(message)["kind"] == "escalated"
    sent = storage.outbox.rows(limit=10)[-1]
    assert sent.delivery_ref == f"{message['channel']}:{message['ts']}"


def test_an_episode_begun_in_the_file_sink_continues_in_slack(
        storage: Storage, clock: FakeClock, notifier: SlackNotifier,
        slack_sim: SlackSimulator, tmp_path: Path) -> None:
    """Slack configured mid-episode: the file ref is no thread root; nothing is rejected."""
    _series(storage, clock, ["WARN"])
    _dispatcher(storage, FileSink(tmp_path / "alerts.jsonl"), clock).dispatch_once(10)
    _series(storage, clock, ["BREACH"])
    assert _dispatcher(storage, notifier, clock).dispatch_once(10).sent == 1
    (message,) = slack_sim.messages
    assert message["thread_ts"] is None and _meta(message)["kind"] == "escalated"


def test_two_dispatchers_deliver_each_alert_once_in_order(
        pg_storage: Storage, clock: FakeClock, notifier: SlackNotifier,
        slack_sim: SlackSimulator) -> None:
    storage = pg_storage
    scopes = [f"asset:A{i}" for i in range(12)]
    for scope in scopes:
        _series(storage, clock, ["WARN", "BREACH", "OK"], scope=scope)
    dispatchers = [_dispatcher(storage, notifier, clock, max_workers=2) for _ in range(2)]
    errors: list[BaseException] = []

    def work(d: OutboxDispatcher) -> None:
        try:
            for _ in range(40):
                d.dispatch_once(5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(d,)) for d in dispatchers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    messages = _states(slack_sim)
    keys = [_meta(m)["idempotency_key"] for m in messages]
    assert len(keys) == 3 * len(scopes) and len(set(keys)) == len(keys)
    for scope in scopes:
        series = [_meta(m)["kind"] for m in messages if _meta(m)["scope"] == scope]
        assert series == ["firing", "escalated", "resolved"]


def test_run_loop_delivers_until_stopped(storage: Storage, notifier: SlackNotifier,
                                         slack_sim: SlackSimulator, clock: FakeClock) -> None:
    dispatcher = OutboxDispatcher(storage.engine, notifier, notifier_name="slack")  # real clock
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.run, args=(stop, 0.05), daemon=True)
    thread.start()
    try:
        clock.set(clock().replace(year=2020))  # evaluations in the past: due at once
        _series(storage, clock, ["WARN", "BREACH"])
        dispatcher.wake()
        slack_sim.wait_for_messages(3, timeout=10)  # and the escalation's critical copy
        assert [_meta(m)["kind"] for m in _states(slack_sim)] == ["firing", "escalated"]
    finally:
        stop.set()
        dispatcher.wake()
        thread.join(10)
    assert not thread.is_alive()


def test_the_domain_planner_through_store_outbox_and_slack(
        storage: Storage, clock: FakeClock, notifier: SlackNotifier,
        slack_sim: SlackSimulator) -> None:
    """The real lifecycle planner, planning under the store's lock, delivered to Slack."""
    from risk_monitor.domain.alerts import plan_alerts

    for status in ("OK", "WARN", "WARN", "BREACH", "BREACH", "OK", "OK"):
        result = make_result(status, clock.advance(15))
        with storage.alerts.locked([result.fingerprint]) as tx:
            alert_plan = plan_alerts(tx.states, [result], clock(), context={"run_id": "r-7"})
            tx.apply(alert_plan.states, alert_plan.notifications)
    assert _dispatcher(storage, notifier, clock).dispatch_once(10).sent == 3
    posted = [(_meta(m)["kind"], _meta(m)["status"]) for m in _states(slack_sim)]
    assert posted == [("firing", "WARN"), ("escalated", "BREACH"), ("resolved", "OK")]
    root = slack_sim.messages[0]
    assert root["channel"] == slack_sim.channel_id("#risk-alerts")
    assert len(root["updates"]) == 2


def test_the_token_never_reaches_the_logs_even_at_debug(
        storage: Storage, clock: FakeClock, notifier: SlackNotifier,
        slack_sim: SlackSimulator) -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream, force=True)
    try:
        _series(storage, clock, ["WARN", "BREACH"])
        slack_sim.set_outage("error_5xx", count=1)
        _drain(_dispatcher(storage, notifier, clock), clock)
    finally:
        configure_logging("INFO", force=True)
    logged = stream.getvalue()
    assert "alert notification sent" in logged and "slack_sdk" in logged  # library debug too
    assert slack_sim.token not in logged
    assert len(_states(slack_sim)) == 2
