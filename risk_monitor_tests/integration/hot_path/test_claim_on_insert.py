"""Claim-on-insert (issue 10): the writer's alert transaction claims its new outbox rows for
this process's dispatcher, which sends them after the commit without a claim round of its own;
a series with an unfinished earlier row keeps the in-order rule (its new row waits for a claim).
On PostgreSQL and SQLite."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from risk_monitor.adapters.sql import OutboxDispatcher, Storage
from risk_monitor.adapters.sql.audit_verify import verify
from risk_monitor.domain.alerts import AlertPolicy
from risk_monitor.service.writer import AlertWriter, Change
from risk_monitor_tests.fakes import FakeNotifier
from risk_monitor_tests.fixtures.storage import START, FakeClock, make_result
from risk_monitor_tests.fixtures.waiting import wait_until


def _change(status: str, seconds: float, scope: str) -> Change:
    return Change(make_result(status, START + timedelta(seconds=seconds), scope=scope), "tick",
                  time.perf_counter(), {})


def _write(storage: Storage, dispatcher: OutboxDispatcher | None, *changes: Change) -> None:
    writer = AlertWriter(storage, policy=AlertPolicy, persist_interval_s=3600.0,
                         delivery=dispatcher, wake=dispatcher.wake if dispatcher else None)
    writer.submit(changes, {"source": "service", "instance_id": "svc-1"})
    writer.start()
    writer.stop(drain_s=30.0)
    assert writer.pending() == 0 and writer.stats.failures == 0


@pytest.fixture
def running(storage: Storage, clock: FakeClock
            ) -> Iterator[tuple[OutboxDispatcher, FakeNotifier, list[Any]]]:
    """A dispatcher thread (poll an hour: only a wake claims) and the claims it made."""
    notifier = FakeNotifier()
    dispatcher = OutboxDispatcher(storage.engine, notifier, clock=clock)
    claims: list[Any] = []
    claim = dispatcher.repository.claim

    def counted(*args: Any, **kwargs: Any) -> Any:
        claims.append(args)
        return claim(*args, **kwargs)

    dispatcher.repository.claim = counted  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.run, args=(stop, 3600.0), daemon=True)
    thread.start()
    wait_until(lambda: claims, message="the dispatcher's first claim round")
    yield dispatcher, notifier, claims
    stop.set()
    dispatcher.wake()
    thread.join(10)


def test_a_change_is_sent_after_its_commit_without_a_claim_round(
        storage: Storage, running: tuple[OutboxDispatcher, FakeNotifier, list[Any]]) -> None:
    dispatcher, notifier, claims = running
    rounds = len(claims)
    _write(storage, dispatcher, _change("BREACH", 1, "desk-a"))
    wait_until(lambda: [r for r in storage.outbox.rows() if r.status == "sent"],
               message="the alert sent and recorded")
    [row] = storage.outbox.rows()
    assert (row.alert_status, row.attempts, row.delivery_ref) == ("BREACH", 1, "fake:1")
    assert [n.status.value for n in notifier.sent] == ["BREACH"]
    assert len(claims) == rounds  # no claim transaction on its way
    report = verify(storage.engine)
    assert report.ok, report.findings


def test_a_series_with_an_unfinished_row_keeps_its_order(storage: Storage,
                                                         clock: FakeClock) -> None:
    notifier = FakeNotifier()
    notifier.down = True  # the first notification fails: its row stays unfinished
    dispatcher = OutboxDispatcher(storage.engine, notifier, clock=clock)
    _write(storage, dispatcher, _change("WARN", 1, "desk-a"))
    assert dispatcher._deliver_direct().retried == 1
    _write(storage, dispatcher, _change("BREACH", 2, "desk-a"), _change("BREACH", 2, "desk-b"))
    desk_a, desk_b = (make_result("OK", START, scope=s).fingerprint for s in ("desk-a", "desk-b"))
    rows = {(r.fingerprint, r.alert_status): r.status for r in storage.outbox.rows()}
    assert rows == {(desk_a, "WARN"): "pending", (desk_a, "BREACH"): "pending",
                    (desk_b, "BREACH"): "sending"}  # only desk-b was claimed on insert
    notifier.down = False
    assert dispatcher._deliver_direct().sent == 1
    clock.advance(300.0)  # past the WARN's retry delay
    assert dispatcher.dispatch_once().sent == 2
    assert [(n.scope, n.status.value) for n in notifier.sent] == [
        ("desk-b", "BREACH"), ("desk-a", "WARN"), ("desk-a", "BREACH")]
