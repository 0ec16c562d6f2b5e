"""The committing thread posts the alerts it claimed on insert itself (``deliver_claimed``,
issue 10): with a healthy Slack the writer's thread posts, no hand-off; a Slack that holds its
answer costs that thread at most the inline cap, later changes still commit, the held post is
retried through the dispatcher's path and adopted (one message, never two). Real slack_sdk
client (``KeepAliveWebClient``) against the Slack simulator; PostgreSQL and SQLite."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from risk_monitor.adapters.notifiers import SlackNotifier
from risk_monitor.adapters.slack_transport import KeepAliveWebClient
from risk_monitor.adapters.sql import OutboxDispatcher, Storage
from risk_monitor.adapters.sql.alert_change import ChangeTransaction
from risk_monitor.adapters.sql.dispatch_policy import INLINE_MAX_SEND_S, InlinePosts
from risk_monitor.domain.alerts import AlertPolicy
from risk_monitor.service.writer import AlertWriter, Change
from risk_monitor_tests.fakes import FakeNotifier
from risk_monitor_tests.fixtures.storage import START, FakeClock, make_result
from risk_monitor_tests.fixtures.waiting import wait_until
from risk_sim.slack import SlackSimulator

CHANNELS = {"info": "#risk-info", "warning": "#risk-alerts", "critical": "#risk-critical"}


class ThreadRecordingNotifier(SlackNotifier):
    """The real Slack notifier, remembering which thread made each post."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.threads: list[str] = []

    def send(self, notification: Any, previous_ref: str | None) -> str:
        self.threads.append(threading.current_thread().name)
        return super().send(notification, previous_ref)


def _change(status: str, seconds: float, scope: str) -> Change:
    return Change(make_result(status, START + timedelta(seconds=seconds), scope=scope), "tick",
                  time.perf_counter(), {})


@pytest.fixture
def service(storage: Storage, clock: FakeClock, slack_sim: SlackSimulator
            ) -> Iterator[tuple[AlertWriter, OutboxDispatcher, ThreadRecordingNotifier]]:
    """A running writer and dispatcher posting to the simulator (the dispatcher's poll an
    hour: after its first claim round, only a wake claims)."""
    client = KeepAliveWebClient(token=slack_sim.token, base_url=slack_sim.api_base, timeout=30)
    notifier = ThreadRecordingNotifier(client, CHANNELS, dagster_ui_url="http://dagster.test")
    dispatcher = OutboxDispatcher(storage.engine, notifier, clock=clock)
    claimed: list[int] = []
    claim = dispatcher.repository.claim

    def counted(*args: Any, **kwargs: Any) -> Any:
        found = claim(*args, **kwargs)
        claimed.append(len(found))
        return found

    dispatcher.repository.claim = counted  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.run, args=(stop, 3600.0), daemon=True,
                              name="outbox-dispatcher")
    thread.start()
    wait_until(lambda: claimed, message="the dispatcher's first claim round done")
    writer = AlertWriter(storage, policy=AlertPolicy, persist_interval_s=3600.0,
                         delivery=dispatcher, wake=dispatcher.wake)
    writer.start()
    yield writer, dispatcher, notifier
    writer.stop(drain_s=30.0)
    stop.set()
    dispatcher.wake()
    thread.join(10)
    client.close()


def _posts(slack_sim: SlackSimulator) -> list[tuple[str, str]]:
    """(scope, status) of every alert message Slack accepted (metadata: one per state)."""
    found = []
    for message in slack_sim.messages:
        payload = (message.get("metadata") or {}).get("event_payload") or {}
        if payload:
            found.append((payload["scope"], payload["status"]))
    return found


def _sent(storage: Storage) -> list[tuple[str, int]]:
    return [(r.alert_status, r.attempts) for r in storage.outbox.rows() if r.status == "sent"]


def _committing_thread(storage: Storage) -> str:
    """The thread that builds the post: on PostgreSQL the post-ahead thread, while the commit
    is in flight (its bytes sent by the committing thread once committed); elsewhere the
    committing thread itself, after the commit."""
    return "outbox-post-ahead_0" if storage.engine.dialect.name == "postgresql" \
        else "hot-path-writer"


def test_a_healthy_slack_is_posted_to_by_the_committing_thread(
        storage: Storage, slack_sim: SlackSimulator,
        service: tuple[AlertWriter, OutboxDispatcher, ThreadRecordingNotifier]) -> None:
    writer, _, notifier = service
    writer.submit([_change("BREACH", 1, "desk-a")], {"source": "service"})
    wait_until(lambda: _sent(storage), message="the alert posted and recorded")
    assert notifier.threads == [_committing_thread(storage)]  # not the dispatcher's thread
    assert _posts(slack_sim) == [("desk-a", "BREACH")]
    assert _sent(storage) == [("BREACH", 1)]


@pytest.mark.parametrize("storage", ["postgresql"], indirect=True)  # prepared there only
def test_a_post_prepared_before_a_commit_that_fails_is_never_sent(
        storage: Storage, slack_sim: SlackSimulator, monkeypatch: pytest.MonkeyPatch,
        service: tuple[AlertWriter, OutboxDispatcher, ThreadRecordingNotifier]) -> None:
    """The post is built while the commit is in flight; the commit fails (here right after
    the post was prepared, before the write went out): nothing reaches Slack, the change is
    written again and posted once."""
    writer, _, notifier = service
    seal = ChangeTransaction.seal
    failed: list[bool] = []

    def failing_once(self: ChangeTransaction, **kwargs: Any) -> int:
        prepare = kwargs["before_write"]

        def prepare_then_fail() -> None:
            prepare()
            if not failed:
                failed.append(True)
                raise ConnectionError("the database went away before the write")

        return seal(self, **{**kwargs, "before_write": prepare_then_fail})

    monkeypatch.setattr(ChangeTransaction, "seal", failing_once)
    writer.submit([_change("BREACH", 1, "desk-a")], {"source": "service"})
    wait_until(lambda: _sent(storage), timeout=10.0,
               message="the change written again after the failure, posted and recorded")
    assert failed and notifier.threads == ["outbox-post-ahead_0"] * 2  # prepared twice
    assert _posts(slack_sim) == [("desk-a", "BREACH")]  # the aborted one never went out
    assert _sent(storage) == [("BREACH", 1)]


def test_a_slack_holding_its_answer_does_not_block_later_commits_nor_double_post(
        storage: Storage, clock: FakeClock, slack_sim: SlackSimulator,
        service: tuple[AlertWriter, OutboxDispatcher, ThreadRecordingNotifier]) -> None:
    writer, dispatcher, notifier = service
    slack_sim.hang_after_accept(count=1, seconds=60.0)  # accepted, the answer held a minute
    writer.submit([_change("BREACH", 1, "desk-a")], {"source": "service"})
    wait_until(lambda: [r for r in storage.outbox.rows() if r.status == "pending"],
               timeout=10.0, message="the held post given up (inline cap) and rescheduled")
    writer.submit([_change("BREACH", 2, "desk-b")], {"source": "service"})
    wait_until(lambda: ("desk-b", "BREACH") in _posts(slack_sim), timeout=10.0,
               message="a later change committed and posted while Slack still holds the "
                       "first answer")
    assert notifier.threads == [_committing_thread(storage), "outbox-dispatcher"]  # handed off
    clock.advance(300.0)  # past the held post's retry delay
    dispatcher.wake()
    wait_until(lambda: len(_sent(storage)) == 2, timeout=10.0,
               message="the held post retried and adopted")
    assert sorted(_sent(storage)) == [("BREACH", 1), ("BREACH", 2)]
    assert sorted(_posts(slack_sim)) == [("desk-a", "BREACH"), ("desk-b", "BREACH")]


def test_a_failing_or_slow_notifier_is_posted_to_by_the_dispatchers_thread() -> None:
    notifier = FakeNotifier()  # cannot cap its posts: never on the committing thread
    assert InlinePosts(0.25).bound(notifier, healthy=True) is None
    client = KeepAliveWebClient(token="xoxb-t", base_url="http://127.0.0.1:9/api/")
    slack = SlackNotifier(client, CHANNELS, dagster_ui_url="http://dagster.test")
    fast = InlinePosts(0.25)
    assert fast.bound(slack, healthy=True) is not None
    assert fast.bound(slack, healthy=False) is None  # refuses our configuration
    assert InlinePosts(None).bound(slack, healthy=True) is None  # switched off
    slow = InlinePosts(0.25)
    for _ in range(10):
        slow.sent(INLINE_MAX_SEND_S * 5)
    assert slow.bound(slack, healthy=True) is None
    failing = InlinePosts(0.25)
    failing.failed()
    assert failing.bound(slack, healthy=True) is None
