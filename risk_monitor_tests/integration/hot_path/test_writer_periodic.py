"""The periodic write runs beside the change transactions (issue 10, the tail): a change never
queues behind it. A periodic chunk holds only its own series, leaves out those with a change
pending (their change records them, newer), and a change of a held series waits for that one
chunk, then is written."""

from __future__ import annotations

import time
from datetime import timedelta

from risk_monitor.adapters.sql import Storage
from risk_monitor.domain.alerts import AlertPolicy
from risk_monitor.domain.engine import evaluate
from risk_monitor.domain.model import LimitResult, LimitStatus
from risk_monitor.service.writer import AlertWriter, Change, LiveState
from risk_monitor_tests.fixtures.storage import START, make_result
from risk_monitor_tests.fixtures.waiting import wait_until
from risk_monitor_tests.unit.domain.builders import desk
from risk_monitor_tests.unit.domain.test_engine import DEFAULT


def _change(result: LimitResult) -> Change:
    return Change(result, "tick", time.perf_counter(), {})


def _stored(storage: Storage) -> dict[str, LimitStatus]:
    return {s.fingerprint: s.status for s in storage.alerts.all_states()}


def test_a_change_of_another_series_commits_while_a_periodic_chunk_holds_its_series(
        pg_storage: Storage) -> None:
    held_result = make_result("BREACH", START, scope="desk-held")
    free_result = make_result("BREACH", START, scope="desk-free")
    writer = AlertWriter(pg_storage, policy=AlertPolicy, persist_interval_s=3600.0)
    writer.start()
    try:
        with writer._series([held_result.fingerprint]) as held:
            assert held == [held_result.fingerprint]
            writer.submit([_change(held_result)], {})  # first: it would be written first
            writer.submit([_change(free_result)], {})
            wait_until(lambda: free_result.fingerprint in _stored(pg_storage), timeout=30,
                       message="the free series' change committed beside the chunk")
            assert held_result.fingerprint not in _stored(pg_storage)  # waits for the chunk
            assert writer.pending() >= 1
        wait_until(lambda: _stored(pg_storage).get(held_result.fingerprint)
                   is LimitStatus.BREACH, timeout=30, message="written once released")
    finally:
        writer.stop(drain_s=30.0)
    assert writer.stats.failures == 0


def test_a_chunk_leaves_out_series_with_a_change_pending(pg_storage: Storage) -> None:
    pending = make_result("WARN", START, scope="desk-pending")
    quiet = make_result("OK", START, scope="desk-quiet")
    writer = AlertWriter(pg_storage, policy=AlertPolicy, persist_interval_s=3600.0)
    # not started: the change stays pending
    writer.submit([_change(pending)], {})
    with writer._series([pending.fingerprint, quiet.fingerprint]) as held:
        assert held == [quiet.fingerprint]
        assert writer._takeable()  # not held: its change goes on beside the chunk
        writer.submit([_change(quiet)], {})
        batch, _ = writer._take_pending()
        assert list(batch) == [pending.fingerprint]  # the held series' change stays pending
    assert writer._takeable()  # until the chunk is released


def test_periodic_writes_and_changes_together_keep_every_status(pg_storage: Storage) -> None:
    """Periodic writes every 20 ms over 60 series while each series changes status: the
    stored state of every series ends at its last change (never an older status)."""
    report = evaluate(desk(start_of_day_equity=2_481_000, peak_equity=2_481_000), DEFAULT)
    scopes = [f"desk-{i}" for i in range(60)]
    current = {s: make_result("OK", START, scope=s) for s in scopes}
    writer = AlertWriter(pg_storage, policy=AlertPolicy, persist_interval_s=0.02)
    writer.start()
    try:
        writer.submit_state(LiveState(report, lambda: list(current.values()), {}))
        for step, status in enumerate(("WARN", "BREACH", "OK", "BREACH")):
            for scope in scopes:
                result = make_result(status, START + timedelta(seconds=step + 1), scope=scope)
                current[scope] = result
                writer.submit([_change(result)], {})
            # let some periodic chunks interleave with the changes of this step
            wait_until(lambda: writer.pending() == 0, timeout=30)
        wait_until(lambda: writer.pending() == 0, timeout=30)
    finally:
        writer.stop(drain_s=30.0)
    assert writer.stats.failures == 0
    stored = _stored(pg_storage)
    assert {current[s].fingerprint: stored.get(current[s].fingerprint) for s in scopes} == {
        current[s].fingerprint: LimitStatus.BREACH for s in scopes}
