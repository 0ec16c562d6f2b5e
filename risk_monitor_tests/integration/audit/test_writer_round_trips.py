"""The hot path's change transaction on PostgreSQL (issue 10): two round trips (the first
carrying the BEGIN, the second the COMMIT),
writing exactly what the statement-by-statement path writes (SQLite runs that path), down to
the audit chain's hashes; and the delivery record after a post in one statement."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from risk_monitor.adapters.sql import OutboxDispatcher, Storage
from risk_monitor.adapters.sql.alert_change import prepare
from risk_monitor.adapters.sql.audit_hooks import compliance_seal
from risk_monitor.adapters.sql.audit_verify import verify
from risk_monitor.adapters.sql.schema import alert_states, audit_log, compliance_intervals, outbox
from risk_monitor.domain.alerts import AlertPolicy, plan_alerts
from risk_monitor.platform.errors import StorageIntegrityError
from risk_monitor.service.writer import AlertWriter, Change
from risk_monitor_tests.fakes import FakeNotifier
from risk_monitor_tests.fixtures.storage import START, FakeClock, make_result


def _change(status: str, seconds: float, scope: str) -> Change:
    return Change(make_result(status, START + timedelta(seconds=seconds), scope=scope), "tick",
                  time.perf_counter(), {"tick": seconds})


#: merged writes with intermediate statuses, several series per write, resolves
_WRITES = (
    (_change("WARN", 1, "desk-a"), _change("BREACH", 2, "desk-a"), _change("BREACH", 1, "desk-b")),
    (_change("OK", 3, "desk-a"),),
    (_change("WARN", 4, "desk-a"), _change("BREACH", 5, "desk-a"), _change("OK", 6, "desk-b")),
    (_change("OK", 7, "desk-a"), _change("WARN", 8, "desk-b")),
)


def _write_all(storage: Storage, dispatcher: OutboxDispatcher | None = None) -> AlertWriter:
    writer = AlertWriter(storage, policy=AlertPolicy, persist_interval_s=3600.0,
                         delivery=dispatcher)
    try:
        for changes in _WRITES:  # one write each: submitted together, they merge
            writer.submit(changes, {"source": "service", "instance_id": "svc-1"})
            writer._write_changes(*_drain(writer))
    finally:
        writer._drop_connection()
    return writer


def _drain(writer: AlertWriter) -> tuple[dict[str, list[Change]], dict[str, Any]]:
    batch, writer._pending = writer._pending, {}
    return batch, dict(writer._contexts)


def _rows(storage: Storage) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    with storage.engine.connect() as conn:
        for table, key in ((alert_states, "fingerprint"), (outbox, "id"),
                           (compliance_intervals, "id"), (audit_log, "id")):
            found[table.name] = [dict(r._mapping) for r in conn.execute(
                sa.select(table).order_by(table.c[key]))]
    return found


def test_the_two_statement_change_writes_what_the_statement_by_statement_one_does(
        pg_storage: Storage, sqlite_storage: Storage) -> None:
    _write_all(pg_storage)
    _write_all(sqlite_storage)
    pg, lite = _rows(pg_storage), _rows(sqlite_storage)
    assert {t: len(v) for t, v in pg.items()} == {
        "alert_states": 2, "outbox": 7, "compliance_intervals": 9, "audit_log": 30}
    for table in ("alert_states", "outbox", "compliance_intervals", "audit_log"):
        assert pg[table] == lite[table], table  # the same rows, ids and chain hashes
    for storage in (pg_storage, sqlite_storage):
        report = verify(storage.engine)
        assert report.ok, report.findings


def test_one_change_is_two_round_trips(pg_storage: Storage, clock: FakeClock) -> None:
    notifier = FakeNotifier()
    dispatcher = OutboxDispatcher(pg_storage.engine, notifier, clock=clock)
    writer = AlertWriter(pg_storage, policy=AlertPolicy, persist_interval_s=3600.0,
                         delivery=dispatcher)
    statements: list[str] = []
    commits: list[bool] = []

    test_thread = threading.get_ident()

    def counted(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if threading.get_ident() == test_thread:  # not a thread an earlier test left running
            statements.append(statement)

    def committed(_conn: Any) -> None:
        if threading.get_ident() == test_thread:
            commits.append(True)

    writer._conn = pg_storage.engine.connect()
    prepare(writer._conn)  # once per connection: the statements below are prepared ones
    writer._conn.commit()  # prepare's check of pg_prepared_statements began a transaction
    # (unless this pooled connection had them already): the change sets autocommit first
    sa.event.listen(pg_storage.engine, "before_cursor_execute", counted)
    sa.event.listen(pg_storage.engine, "commit", committed)
    try:
        for status, seconds in (("BREACH", 1), ("OK", 2), ("WARN", 3)):
            writer.submit([_change(status, seconds, "desk-a")], {"source": "service"})
            statements.clear()
            commits.clear()
            writer._write_changes(*_drain(writer))
            # BEGIN, the locks and every read (states, intervals, outbox, silences, acks,
            # chain head, reserved ids) in one round trip; states, outbox, compliance, audit,
            # lineage and the COMMIT in one (the connection is in autocommit: psycopg2 sends
            # no BEGIN)
            assert len(statements) == 2, statements
            assert statements[0].startswith("BEGIN;")
            assert statements[1].startswith("EXECUTE risk_monitor_change_write_")
            assert statements[1].rsplit(";", 1)[1].strip() == "COMMIT"
            assert not commits  # no transaction of SQLAlchemy's (nor psycopg2's) around it
            # the row claimed on insert goes out; its record is one statement, on the
            # records' own autocommit connection: one round trip
            statements.clear()
            commits.clear()
            assert dispatcher._deliver_direct().sent == 1
            assert len(statements) == 1 and not commits, statements
    finally:
        writer._drop_connection()
        dispatcher.repository.close()
        sa.event.remove(pg_storage.engine, "before_cursor_execute", counted)
        sa.event.remove(pg_storage.engine, "commit", committed)
    assert [n.status.value for n in notifier.sent] == ["BREACH", "OK", "WARN"]
    assert [r.status for r in pg_storage.outbox.rows()] == ["sent"] * 3
    report = verify(pg_storage.engine)
    assert report.ok, report.findings


def test_the_statements_are_prepared_once_per_connection(pg_storage: Storage) -> None:
    """A pooled connection keeps them; one whose flag was lost finds them there."""
    with pg_storage.engine.connect() as conn:
        prepare(conn)
        conn.info.clear()  # as if SQLAlchemy had not seen them (they are still there)
        prepare(conn)
        names = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'risk_monitor_%%'"
        ).scalar_one()
    assert names == 3


def test_a_state_changed_under_the_locks_aborts_the_change_before_its_commit(
        pg_storage: Storage) -> None:
    """The write's checks run in its statement, before the COMMIT of the same message: a
    version-guarded update that found a newer row aborts everything (nothing committed)."""
    writer = AlertWriter(pg_storage, policy=AlertPolicy, persist_interval_s=3600.0)
    writer.submit([_change("BREACH", 1, "desk-a")], {"source": "service"})
    writer._write_changes(*_drain(writer))
    writer._drop_connection()
    before = _rows(pg_storage)
    result = make_result("OK", START + timedelta(seconds=2), scope="desk-a")
    with pg_storage.engine.connect() as conn:
        with pytest.raises(StorageIntegrityError, match="changed under a lock"), \
                pg_storage.alerts.change([result.fingerprint], results=[result],
                                         new_intervals=1, new_notifications=1,
                                         connection=conn) as tx:
            with pg_storage.engine.begin() as rogue:  # writes without taking the lock
                rogue.execute(alert_states.update().values(version=alert_states.c.version + 1))
            states = dict(tx.states)
            plan = plan_alerts(states, [result], result.as_of, AlertPolicy())
            tx.apply(plan.states, plan.notifications)
            intervals = tx.compliance([[result]])
            tx.seal(before=states, states=plan.states, notifications=plan.notifications,
                    context={"source": "service"}, at=result.as_of,
                    extra=[compliance_seal(row) for row in intervals])
        assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1  # rolled back, usable
    after = _rows(pg_storage)
    for table in ("outbox", "compliance_intervals", "audit_log"):
        assert after[table] == before[table], table
    assert [r["version"] for r in after["alert_states"]] == [
        r["version"] + 1 for r in before["alert_states"]]  # the rogue write only
    report = verify(pg_storage.engine)
    assert report.ok, report.findings


def test_an_extended_interval_keeps_its_seal_and_the_timeline_matches(
        pg_storage: Storage, sqlite_storage: Storage) -> None:
    """A status seen again extends the open interval (last sighting, worst utilisation): not
    sealed, its ``audit_hash`` kept; then, in one merged write, extended again and closed.
    (An id reserved for an interval that did not open is a gap on PostgreSQL: ids aside, the
    timelines are the same.)"""
    writes = ((_change("BREACH", 1, "desk-a"),), (_change("BREACH", 2, "desk-a"),),
              (_change("BREACH", 3, "desk-a"), _change("OK", 4, "desk-a")))
    timelines = []
    for storage in (pg_storage, sqlite_storage):
        writer = AlertWriter(storage, policy=AlertPolicy, persist_interval_s=3600.0)
        for changes in writes:
            writer.submit(changes, {"source": "service"})
            writer._write_changes(*_drain(writer))
        writer._drop_connection()
        report = verify(storage.engine)
        assert report.ok, report.findings
        timelines.append([(i.status.value, i.since, i.until, i.last_seen_at)
                          for i in storage.compliance.intervals(START, START + timedelta(1))])
        timelines.append(len(_rows(storage)["audit_log"]))
    assert timelines[0] == timelines[2] == [
        ("BREACH", START + timedelta(seconds=1), START + timedelta(seconds=4),
         START + timedelta(seconds=3)),
        ("OK", START + timedelta(seconds=4), None, START + timedelta(seconds=4))]
    assert timelines[1] == timelines[3]
