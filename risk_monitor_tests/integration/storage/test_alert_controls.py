"""Silences and acknowledgements stored, consulted by the dispatcher, audited.

Real PostgreSQL and SQLite (the ``storage`` fixture), the real slack_sdk against the Slack
simulator; the dispatcher runs on a fake clock (``dispatch_once``), nothing sleeps.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from risk_monitor.adapters.alert_messages import METADATA_EVENT_TYPE, NOTE_EVENT_TYPE
from risk_monitor.adapters.notifiers import SlackNotifier
from risk_monitor.adapters.prometheus import StoredMetricsCollector
from risk_monitor.adapters.sql import BackoffPolicy, OutboxDispatcher, Storage
from risk_monitor.adapters.sql.alert_controls import SqlAlertControls
from risk_monitor.domain.model import Notification, NotificationKind
from risk_monitor.platform.errors import AlertControlError
from risk_monitor.platform.settings import load_settings
from risk_monitor_tests.fixtures.storage import FakeClock, evaluate, make_result
from risk_sim.slack import SlackSimulator

TOKEN_ENV = "RISK_MONITOR_TEST_SLACK_TOKEN"


@pytest.fixture
def notifier(slack_sim: SlackSimulator, monkeypatch: pytest.MonkeyPatch) -> SlackNotifier:
    monkeypatch.setenv(TOKEN_ENV, slack_sim.token)
    settings = load_settings(slack={"token_env": TOKEN_ENV, "base_url": slack_sim.api_base,
                                    "timeout_s": 2})
    return SlackNotifier.from_settings(settings)


@pytest.fixture
def controls(storage: Storage, clock: FakeClock) -> SqlAlertControls:
    return SqlAlertControls(storage.engine, clock=clock)


def _dispatch(storage: Storage, notifier: Any, clock: FakeClock) -> Any:
    dispatcher = OutboxDispatcher(storage.engine, notifier, clock=clock, notifier_name="slack",
                                  backoff=BackoffPolicy(jitter=0.0))
    return dispatcher.dispatch_once(50)


def _posts(slack_sim: SlackSimulator) -> list[dict[str, Any]]:
    """One message per alert state (without the escalation's copy to another channel)."""
    return [m for m in slack_sim.messages
            if (m["params"].get("metadata") or {}).get("event_type") == METADATA_EVENT_TYPE]


def _repeat(storage: Storage, previous: Notification, clock: FakeClock) -> Notification:
    """Enqueue a REPEAT of ``previous`` (still firing after the repeat interval)."""
    with storage.alerts.locked([previous.fingerprint]) as tx:
        state = tx.states.get(previous.fingerprint)
        assert state is not None
        sequence = state.sequence + 1
        note = dataclasses.replace(
            previous, kind=NotificationKind.REPEAT, detected_at=clock.advance(3600),
            idempotency_key=f"{previous.fingerprint}:{previous.episode}:{sequence}")
        tx.apply([dataclasses.replace(state, sequence=sequence)], [note])
    return note


def test_a_silence_holds_matching_notifications_and_keeps_them(
        storage: Storage, clock: FakeClock, controls: SqlAlertControls,
        notifier: SlackNotifier, slack_sim: SlackSimulator) -> None:
    silence = controls.add_silence(["venue=binance"], ends_at=clock() + timedelta(hours=1),
                                   created_by="ops_token", comment="binance maintenance")
    evaluate(storage, make_result("BREACH", clock.advance(1), scope="venue:binance"))
    evaluate(storage, make_result("WARN", clock.advance(1), scope="venue:okx"))
    result = _dispatch(storage, notifier, clock)

    assert (result.sent, result.suppressed) == (1, 1)
    (post,) = _posts(slack_sim)
    assert post["params"]["metadata"]["event_payload"]["status"] == "WARN"
    rows = {r.fingerprint: r for r in storage.outbox.rows()}
    held = next(r for r in rows.values() if r.status == "suppressed")
    assert held.suppressed_by == f"silence:{silence.id}" and held.delivery_ref is None
    assert storage.outbox.counts()["suppressed"] == 1
    registry = CollectorRegistry()
    registry.register(StoredMetricsCollector(storage.engine, clock=clock))  # type: ignore[arg-type]
    assert registry.get_sample_value("risk_monitor_alerts_total",
                                     {"severity": "critical", "outcome": "suppressed"}) == 1
    # the alert itself is recorded: state BREACH, the row kept for the audit trail
    assert storage.alerts.load_states([held.fingerprint])[held.fingerprint].status.value \
        == "BREACH"
    events = [r.event for r in storage.audit.recent(10)]
    assert "silence_created" in events and "alert_notification_suppressed" in events

    # after unsilence the next change goes out; what was held stays held (not re-sent)
    controls.expire_silence(silence.id, by="ops_token")
    evaluate(storage, make_result("OK", clock.advance(1), scope="venue:binance"))
    result = _dispatch(storage, notifier, clock)
    assert (result.sent, result.suppressed) == (1, 0)
    assert [p["params"]["metadata"]["event_payload"]["status"] for p in _posts(slack_sim)] \
        == ["WARN", "OK"]
    assert storage.audit.recent(1, event="silence_expired")[0].payload["actor"] == "ops_token"


def test_an_acknowledgement_stops_repeats_until_the_status_changes(
        storage: Storage, clock: FakeClock, controls: SqlAlertControls,
        notifier: SlackNotifier, slack_sim: SlackSimulator) -> None:
    (firing,) = evaluate(storage, make_result("WARN", clock.advance(1)))
    assert _dispatch(storage, notifier, clock).sent == 1
    acked = controls.acknowledge(firing.correlation_id, by="alice_token", comment="on it")
    assert (acked.ack.fingerprint, acked.ack.episode, acked.ack.status.value) == \
        (firing.fingerprint, firing.episode, "WARN")

    _repeat(storage, firing, clock)
    result = _dispatch(storage, notifier, clock)
    assert (result.sent, result.suppressed) == (0, 1)
    assert storage.outbox.rows(status="suppressed")[0].suppressed_by == "ack:alice_token"
    # the thread says who owns it, once (later dispatches do not repeat the note)
    _dispatch(storage, notifier, clock)
    (root,) = _posts(slack_sim)
    notes = [m for m in slack_sim.messages if "Acknowledged by" in m["text"]]
    assert len(notes) == 1 and notes[0]["thread_ts"] == root["ts"]
    assert "alice_token" in notes[0]["text"] and "on it" in notes[0]["text"]

    # a change of status always goes out, and ends the acknowledgement
    evaluate(storage, make_result("BREACH", clock.advance(1)))
    assert _dispatch(storage, notifier, clock).sent == 1
    assert controls.current_acknowledgements() == []
    assert len(_posts(slack_sim)) == 2

    (audit,) = storage.audit.recent(10, event="alert_acknowledged")
    assert audit.correlation_id == firing.correlation_id
    assert audit.payload["actor"] == "alice_token" and audit.payload["comment"] == "on it"


def test_bad_requests_are_refused_and_write_nothing(
        storage: Storage, clock: FakeClock, controls: SqlAlertControls) -> None:
    with pytest.raises(AlertControlError, match="unknown label"):
        controls.add_silence(["desk=a"], ends_at=clock() + timedelta(hours=1),
                             created_by="x", comment="y")
    with pytest.raises(AlertControlError, match="comment"):
        controls.add_silence(["venue=okx"], ends_at=clock() + timedelta(hours=1),
                             created_by="x", comment=" ")
    with pytest.raises(AlertControlError, match="future"):
        controls.add_silence(["venue=okx"], starts_at=clock() - timedelta(hours=2),
                             ends_at=clock() - timedelta(hours=1), created_by="x", comment="y")
    with pytest.raises(AlertControlError, match="no alert"):
        controls.acknowledge("nope", by="x")
    with pytest.raises(AlertControlError, match="no silence"):
        controls.expire_silence("nope", by="x")
    evaluate(storage, make_result("WARN", clock.advance(1)))
    evaluate(storage, make_result("OK", clock.advance(1)))
    fingerprint = storage.outbox.rows()[0].fingerprint
    with pytest.raises(AlertControlError, match="nothing to acknowledge"):
        controls.acknowledge(fingerprint, by="x")
    assert controls.silences() == [] and controls.acknowledgements() == []
    assert storage.audit.recent(10, event="silence_created") == []


def test_a_silence_is_said_once_in_the_thread_of_each_firing_alert_it_holds(
        storage: Storage, clock: FakeClock, controls: SqlAlertControls,
        notifier: SlackNotifier, slack_sim: SlackSimulator) -> None:
    evaluate(storage, make_result("WARN", clock.advance(1), scope="venue:okx"))
    evaluate(storage, make_result("WARN", clock.advance(1), scope="venue:binance"))
    assert _dispatch(storage, notifier, clock).sent == 2
    silence = controls.add_silence(["venue=okx"], ends_at=clock() + timedelta(hours=2),
                                   created_by="carol", comment="okx maintenance")
    _dispatch(storage, notifier, clock)
    _dispatch(storage, notifier, clock)  # said once, not at every dispatch

    def notes() -> list[dict[str, Any]]:
        return [m for m in slack_sim.messages if "Silenced by" in m["text"]]

    (okx_root,) = [m for m in _posts(slack_sim)
                   if m["params"]["metadata"]["event_payload"]["scope"] == "venue:okx"]
    (note,) = notes()  # binance's thread is not silenced: no note there
    assert note["thread_ts"] == okx_root["ts"]
    assert note["params"]["metadata"]["event_type"] == NOTE_EVENT_TYPE  # not an alert state
    assert all(word in note["text"] for word in ("carol", "okx maintenance", silence.id))

    # the escalation is held by the silence; the thread was told already (same episode)
    evaluate(storage, make_result("BREACH", clock.advance(1), scope="venue:okx"))
    result = _dispatch(storage, notifier, clock)
    assert (result.sent, result.suppressed) == (0, 1)
    assert len(notes()) == 1


class _Crash(Exception):
    """The process dies between posting a thread note and recording it."""


def test_a_thread_note_posted_before_a_crash_is_adopted_not_posted_again(
        storage: Storage, clock: FakeClock, controls: SqlAlertControls,
        notifier: SlackNotifier, slack_sim: SlackSimulator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    (firing,) = evaluate(storage, make_result("WARN", clock.advance(1), scope="venue:okx"))
    assert _dispatch(storage, notifier, clock).sent == 1
    controls.acknowledge(firing.correlation_id, by="erin", comment="hedging")
    silence = controls.add_silence(["venue=okx"], ends_at=clock() + timedelta(hours=2),
                                   created_by="carol", comment="okx maintenance")

    def crash(*_: Any, **__: Any) -> None:
        raise _Crash

    for recorder in ("mark_noted", "mark_silence_noted"):  # each note: posted, not recorded
        with monkeypatch.context() as patch:
            patch.setattr(SqlAlertControls, recorder, crash)
            with pytest.raises(_Crash):
                _dispatch(storage, notifier, clock)

    def notes(word: str) -> list[dict[str, Any]]:
        return [m for m in slack_sim.messages if word in m["text"]]

    assert len(notes("Acknowledged by")) == 1 and len(notes("Silenced by")) == 1
    # a new dispatcher (after the restart) finds both notes in the thread and records them
    fresh = SlackNotifier(notifier.client, notifier.channels,
                          dagster_ui_url=notifier.dagster_ui_url)
    _dispatch(storage, fresh, clock)
    _dispatch(storage, fresh, clock)
    (ack_note,), (silence_note,) = notes("Acknowledged by"), notes("Silenced by")
    (root,) = _posts(slack_sim)
    assert ack_note["thread_ts"] == silence_note["thread_ts"] == root["ts"]
    assert controls.unnoted_acknowledgements() == []
    assert controls.unnoted_silences(clock()) == []
    keys = {m["params"]["metadata"]["event_payload"]["idempotency_key"]
            for m in (ack_note, silence_note)}
    assert keys == {f"ack:{firing.fingerprint}:{firing.episode}:WARN",
                    f"silence:{silence.id}:{firing.fingerprint}:{firing.episode}"}


def test_the_application_role_may_use_the_alert_controls(pg_storage: Storage) -> None:
    """PostgreSQL: ``risk_monitor_app`` (the service's role) can silence, acknowledge, note and
    push to the Alertmanager sink (docs/storage-and-alerting.md "Database roles")."""
    with pg_storage.engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL ROLE risk_monitor_app")
        for table in ("alert_silences", "alert_acknowledgements", "alert_silence_notes",
                      "sink_deliveries"):
            conn.exec_driver_sql(f"SELECT count(*) FROM {table}")
        conn.exec_driver_sql(
            "INSERT INTO alert_acknowledgements (fingerprint, episode, status, acked_by, "
            "acked_at, comment) VALUES ('f', 1, 'WARN', 'erin', now(), '')")  # its sequence too
        conn.exec_driver_sql(
            "INSERT INTO alert_silence_notes VALUES ('s', 'f', 1, 'C1:1.0', now())")
        conn.exec_driver_sql("DELETE FROM alert_silence_notes")
