"""The audit log is a hash chain: `audit verify` catches edits, deletions, forgeries and a
consistent rewrite of the whole chain (through the anchors), on PostgreSQL and on SQLite."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from risk_monitor import application
from risk_monitor.adapters.audit_anchors import append_file_anchor, read_file_anchors
from risk_monitor.adapters.sql import Storage
from risk_monitor.adapters.sql.audit_log import COVERAGE, content_hash
from risk_monitor.adapters.sql.audit_verify import verify
from risk_monitor.adapters.sql.schema import alert_states, audit_log
from risk_monitor.domain.alerts import AlertPolicy
from risk_monitor.domain.audit_chain import GENESIS_HASH
from risk_monitor.platform.errors import RiskMonitorError
from risk_monitor_tests.fixtures.storage import make_result

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CONTEXT = {"run_id": "run-x", "source": "dagster", "limit_config_version": "cfg-v1"}


def _history(storage: Storage) -> str:
    """Config applied, one series WARN -> BREACH, another WARN, compliance recorded."""
    storage.config_versions.record("cfg-v1", {"limits": [{"id": "max_notional"}]},
                                   source="file", applied_at=T0)
    policy = AlertPolicy()
    for minutes, status in ((0, "WARN"), (1, "BREACH")):
        at = T0 + timedelta(minutes=minutes)
        results = [make_result(status, at), make_result("WARN", at, scope="venue:okx")]
        application.raise_alerts(storage, results, now=at, policy=policy,
                               context={**CONTEXT, "run_id": f"run-{minutes}"})
        application.record_compliance(storage, results)
    return make_result("BREACH", T0).fingerprint


@contextlib.contextmanager
def tampering(storage: Storage) -> Iterator[sa.Connection]:
    """A connection as an attacker with the owner's rights: audit_log's append-only trigger is
    out of the way (disabled on PostgreSQL for this transaction only, dropped on SQLite)."""
    with storage.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
            yield conn
            conn.exec_driver_sql("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
        else:
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_update")
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_delete")
            yield conn


def _entries(storage: Storage, conn: sa.Connection | None = None) -> list[dict[str, Any]]:
    if conn is None:
        with storage.engine.connect() as own:
            return _entries(storage, own)
    return [dict(r._mapping) for r in conn.execute(sa.select(audit_log).order_by(audit_log.c.id))]


def test_an_untouched_store_verifies(storage: Storage) -> None:
    _history(storage)
    report = verify(storage.engine)
    assert report.ok, [f.describe() for f in report.findings]
    events = [e["event"] for e in _entries(storage)]
    assert events[0] == "config.applied"
    assert {"alert.firing", "alert.escalated", "alert_state.changed",
            "compliance.interval"} <= set(events)
    assert report.head == storage.audit.head()
    assert report.rows_checked >= 6  # 2 states, 3 notifications, intervals, 1 config version
    with storage.engine.connect() as conn:
        for name, coverage in COVERAGE.items():
            hashes = conn.execute(sa.select(coverage.table.c.audit_hash)).scalars().all()
            assert hashes and all(hashes), name  # every covered row carries its seal


def test_audit_rows_refuse_update_and_delete(storage: Storage) -> None:
    _history(storage)
    for statement in (audit_log.update().values(event="edited"), audit_log.delete()):
        with pytest.raises((sa.exc.DBAPIError, RiskMonitorError)), storage.engine.begin() as c:
            c.execute(statement)
    assert verify(storage.engine).ok


def test_editing_an_alert_status_is_caught_and_names_the_alert(storage: Storage) -> None:
    fingerprint = _history(storage)
    with storage.engine.begin() as conn:
        conn.execute(alert_states.update().where(alert_states.c.fingerprint == fingerprint)
                     .values(status="WARN"))
    report = verify(storage.engine)
    assert not report.ok
    first = report.first
    assert first is not None and first.check == "coverage"
    assert first.subject == f"alert_states:{fingerprint}"
    assert "edited outside the application" in first.problem
    assert first.alert is not None and fingerprint in first.alert
    assert first.entry_id is not None  # the entry that sealed the BREACH


def test_deleting_an_audit_row_is_caught(storage: Storage) -> None:
    _history(storage)
    victim = _entries(storage)[3]
    with tampering(storage) as conn:
        conn.execute(audit_log.delete().where(audit_log.c.id == victim["id"]))
    report = verify(storage.engine)
    assert not report.ok
    first = report.first
    assert first is not None and first.check == "chain"
    assert first.entry_id is not None and first.entry_id > victim["id"]
    assert "link broken" in first.problem
    if victim["subject"]:  # the row it sealed has lost its seal
        assert any(f.subject == victim["subject"] for f in report.findings)


def test_a_forged_audit_row_is_caught(storage: Storage) -> None:
    fingerprint = _history(storage)
    head = storage.audit.head()
    forged = {"at": T0 + timedelta(minutes=5), "event": "alert_state.changed",
              "correlation_id": None, "run_id": None, "subject": f"alert_states:{fingerprint}",
              "row_digest": "f" * 64, "payload": {"status": "OK"}}
    entry = content_hash(head.hash, forged["at"], forged["event"], None, None,
                         forged["subject"], forged["row_digest"], forged["payload"])
    with tampering(storage) as conn:  # a perfectly chained entry, written outside the app
        conn.execute(audit_log.insert().values(**forged, prev_hash=head.hash, entry_hash=entry))
    report = verify(storage.engine)
    assert not report.ok
    assert report.first is not None and report.first.entry_id == head.id + 1
    assert report.first.subject == f"alert_states:{fingerprint}"


def test_a_row_inserted_outside_the_application_is_caught(storage: Storage) -> None:
    _history(storage)
    with storage.engine.begin() as conn:
        row = dict(conn.execute(sa.select(alert_states).limit(1)).one()._mapping)
        row.update(fingerprint="f" * 64, audit_hash=None)
        conn.execute(alert_states.insert().values(**row))
    report = verify(storage.engine)
    assert [f.subject for f in report.findings] == [f"alert_states:{'f' * 64}"]
    assert "inserted outside the application" in report.findings[0].problem


def _rewrite_chain(storage: Storage, fingerprint: str) -> None:
    """What a careful attacker does: edit the alert, then recompute every seal and hash."""
    with tampering(storage) as conn:
        conn.execute(alert_states.update().where(alert_states.c.fingerprint == fingerprint)
                     .values(status="WARN"))
        state = conn.execute(sa.select(alert_states)
                             .where(alert_states.c.fingerprint == fingerprint)).one()._mapping
        subject = f"alert_states:{fingerprint}"
        entries = _entries(storage, conn)
        last_seal = max(e["id"] for e in entries if e["subject"] == subject)
        prev = GENESIS_HASH
        renamed: dict[str, str] = {}
        for e in entries:
            digest = COVERAGE["alert_states"].digest(state) if e["id"] == last_seal \
                else e["row_digest"]
            new = content_hash(prev, e["at"], e["event"], e["correlation_id"], e["run_id"],
                               e["subject"], digest, e["payload"])
            conn.execute(audit_log.update().where(audit_log.c.id == e["id"])
                         .values(prev_hash=prev, entry_hash=new, row_digest=digest))
            renamed[e["entry_hash"]] = new
            prev = new
        for coverage in COVERAGE.values():
            t = coverage.table
            for key, old in conn.execute(sa.select(t.c[coverage.key], t.c.audit_hash)).all():
                conn.execute(t.update().where(t.c[coverage.key] == key)
                             .values(audit_hash=renamed[old]))


def test_a_consistent_rewrite_of_the_whole_chain_is_caught_by_the_anchors(
        storage: Storage, tmp_path: Path) -> None:
    fingerprint = _history(storage)
    anchors_file = tmp_path / "anchors.jsonl"
    append_file_anchor(anchors_file, storage.audit.head(), source="test", at=T0)
    assert verify(storage.engine, read_file_anchors(anchors_file)).ok
    _rewrite_chain(storage, fingerprint)
    assert verify(storage.engine).ok  # the chain alone cannot tell ...
    report = verify(storage.engine, read_file_anchors(anchors_file))  # ... the anchor can
    assert not report.ok
    assert [f.check for f in report.findings] == ["anchor"]
    assert "chain rewritten" in report.findings[0].problem


def test_concurrent_writers_keep_the_chain_linear(pg_storage: Storage) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def write(worker: int) -> None:
        try:
            barrier.wait(10)
            for i in range(25):
                pg_storage.audit.record("test.append", T0, f"w{worker}-{i}", {"i": i})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    report = verify(pg_storage.engine)
    assert report.ok, [f.describe() for f in report.findings]
    assert report.entries == 100
