"""Alert store: atomic, idempotent apply; locked planning notifies once under concurrency."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
import sqlalchemy as sa

from risk_monitor.adapters.sql import Storage
from risk_monitor.adapters.sql.schema import alert_states, outbox
from risk_monitor.domain.model import LimitStatus, NotificationKind
from risk_monitor.platform.errors import StorageIntegrityError
from risk_monitor_tests.fixtures.storage import FakeClock, evaluate, make_result, plan
from risk_monitor_tests.fixtures.waiting import wait_until


def _outbox_keys(storage: Storage) -> list[str]:
    return [r.idempotency_key for r in storage.outbox.rows()]


def test_states_round_trip_with_aware_times(storage: Storage, clock: FakeClock) -> None:
    result = make_result("BREACH", clock())
    state, notifications = plan(None, result)
    storage.alerts.apply([state], notifications)

    loaded = storage.alerts.load_states([result.fingerprint, "unknown-fingerprint"])
    assert loaded == {result.fingerprint: state}
    started_at = loaded[result.fingerprint].started_at
    assert started_at is not None and started_at.utcoffset() is not None
    row = storage.outbox.rows()[0]
    assert row.idempotency_key == notifications[0].idempotency_key
    assert (row.status, row.kind, row.alert_status, row.sequence) == (
        "pending", "firing", "BREACH", 1)
    assert row.detected_at == result.as_of
    assert row.source_event_time == result.source_event_time


def test_reapplying_the_same_plan_enqueues_nothing_twice(storage: Storage,
                                                         clock: FakeClock) -> None:
    state, notifications = plan(None, make_result("WARN", clock()))
    storage.alerts.apply([state], notifications)
    storage.alerts.apply([state], notifications)  # e.g. a retried Dagster run
    with storage.alerts.locked([state.fingerprint]) as tx:
        again = tx.apply([state], notifications)
    assert (again.enqueued, again.duplicates) == (0, 1)
    assert _outbox_keys(storage) == [notifications[0].idempotency_key]
    assert storage.alerts.load_states([state.fingerprint])[state.fingerprint] == state


def test_apply_is_atomic(storage: Storage, clock: FakeClock) -> None:
    """A notification that breaks a constraint takes its state change down with it."""
    warn_state, warn = plan(None, make_result("WARN", clock()))
    storage.alerts.apply([warn_state], warn)
    breach_state, breach = plan(warn_state, make_result("BREACH", clock.advance(5)))
    # same (fingerprint, sequence) as the WARN notification under another key: a planning bug
    clash = dataclasses.replace(breach[0], idempotency_key=f"{warn[0].fingerprint}:9:1")
    with pytest.raises(StorageIntegrityError):
        storage.alerts.apply([breach_state], [breach[0], clash])
    assert storage.alerts.load_states([warn_state.fingerprint])[warn_state.fingerprint] == warn_state
    assert _outbox_keys(storage) == [warn[0].idempotency_key]


def test_a_series_walks_through_its_lifecycle(storage: Storage, clock: FakeClock) -> None:
    kinds: list[NotificationKind] = []
    for status in ("OK", "WARN", "WARN", "BREACH", "WARN", "OK", "BREACH"):
        kinds += [n.kind for n in evaluate(storage, make_result(status, clock.advance(10)))]
    assert kinds == [NotificationKind.FIRING, NotificationKind.ESCALATED,
                     NotificationKind.DEESCALATED, NotificationKind.RESOLVED,
                     NotificationKind.FIRING]
    rows = storage.outbox.rows()
    assert [(r.episode, r.sequence) for r in rows] == [(1, 1), (1, 2), (1, 3), (1, 4), (2, 5)]
    (state,) = storage.alerts.all_states()
    assert (state.status, state.episode, state.sequence) == (LimitStatus.BREACH, 2, 5)


def test_apply_refuses_fingerprints_it_did_not_lock(storage: Storage, clock: FakeClock) -> None:
    other = make_result("WARN", clock(), scope="venue:okx")
    state, notifications = plan(None, other)
    with pytest.raises(ValueError, match="not locked"), \
            storage.alerts.locked([make_result("WARN", clock()).fingerprint]) as tx:
        tx.apply([state], notifications)
    assert storage.outbox.rows() == []


def test_a_writer_that_bypasses_the_lock_is_detected(pg_storage: Storage,
                                                    clock: FakeClock) -> None:
    storage = pg_storage
    state, notifications = plan(None, make_result("WARN", clock()))
    storage.alerts.apply([state], notifications)
    with pytest.raises(StorageIntegrityError, match="changed under a lock"), \
            storage.alerts.locked([state.fingerprint]) as tx:
        with storage.engine.begin() as rogue:  # writes without taking the lock
            rogue.execute(alert_states.update().values(version=alert_states.c.version + 1))
        nxt, more = plan(tx.states[state.fingerprint], make_result("BREACH", clock.advance(1)))
        tx.apply([nxt], more)
    assert len(storage.outbox.rows()) == 1


def _lock_waiters(engine: sa.Engine) -> int:
    """PostgreSQL sessions of this database blocked on a lock (the other writer, here)."""
    with engine.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'")).scalar_one())


def _race(storage: Storage, statuses: tuple[str, str], clock: FakeClock) -> None:
    """Two writers plan the same fingerprint at the same moment, as Dagster and the service do.

    On PostgreSQL the first writer inside the lock holds its read-plan-write window open until
    the second is seen blocked on the lock, so the two really overlap whatever the machine's
    load (no timing luck). SQLite cannot show a blocked writer: there the window is only widened.
    """
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    first_inside = threading.Lock()
    postgres = storage.engine.dialect.name == "postgresql"

    def writer(status: str) -> None:
        try:
            result = make_result(status, clock())
            barrier.wait(30)
            with storage.alerts.locked([result.fingerprint]) as tx:
                state, notifications = plan(tx.states.get(result.fingerprint), result)
                if first_inside.acquire(blocking=False):  # the first writer in
                    if postgres:
                        wait_until(lambda: _lock_waiters(storage.engine) >= 1, timeout=60,
                                   message="the second writer blocked on the lock")
                    else:
                        time.sleep(0.05)  # widens the window; no assertion depends on it
                tx.apply([state], notifications)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s,)) for s in statuses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_concurrent_evaluations_of_one_status_notify_once(storage: Storage,
                                                          clock: FakeClock) -> None:
    _race(storage, ("BREACH", "BREACH"), clock)
    rows = storage.outbox.rows()
    assert [(r.kind, r.alert_status, r.sequence) for r in rows] == [("firing", "BREACH", 1)]


def test_concurrent_evaluations_of_two_statuses_stay_in_series(storage: Storage,
                                                               clock: FakeClock) -> None:
    """WARN and BREACH at once: one fires, the other follows it; nothing is lost."""
    _race(storage, ("WARN", "BREACH"), clock)
    rows = storage.outbox.rows()
    assert [r.sequence for r in rows] == [1, 2]
    assert rows[0].kind == "firing"
    assert rows[1].kind in ("escalated", "deescalated")
    (state,) = storage.alerts.all_states()
    assert state.status.value == rows[1].alert_status
    assert state.sequence == 2


def test_locked_blocks_a_second_writer_until_the_first_commits(pg_storage: Storage,
                                                               clock: FakeClock) -> None:
    storage = pg_storage
    fingerprint = make_result("WARN", clock()).fingerprint
    inside = threading.Event()
    release = threading.Event()
    second_entered = threading.Event()

    def first() -> None:
        with storage.alerts.locked([fingerprint]):
            inside.set()
            release.wait(10)

    def second() -> None:
        with storage.alerts.locked([fingerprint]):
            second_entered.set()

    t1 = threading.Thread(target=first)
    t1.start()
    assert inside.wait(10)
    t2 = threading.Thread(target=second)
    t2.start()
    assert not second_entered.wait(0.5)  # still held by the first writer
    release.set()
    assert second_entered.wait(10)
    t1.join(10)
    t2.join(10)


def test_outbox_rows_carry_the_redacted_context(storage: Storage, clock: FakeClock) -> None:
    state, notifications = plan(None, make_result("WARN", clock()))
    leaky = dataclasses.replace(notifications[0], context={
        "run_id": "abc", "slack_token": "xoxb-123456789-abcdefghijk"})
    storage.alerts.apply([state], [leaky])
    with storage.engine.connect() as conn:
        payload = conn.execute(sa.select(outbox.c.payload)).scalar_one()
    assert payload["context"]["run_id"] == "abc"
    assert "xoxb-123456789" not in str(payload)
