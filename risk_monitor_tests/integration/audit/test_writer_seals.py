"""The hot path's writer: one transaction per merged write, sealed from the rows in memory,
keeps every guarantee (issue 10 item 2): every intermediate status in the compliance history,
nothing doubled, and the audit chain verifies, including against a later edit of a row."""

from __future__ import annotations

import time
from datetime import timedelta

from risk_monitor.adapters.sql import Storage
from risk_monitor.adapters.sql.audit_verify import verify
from risk_monitor.adapters.sql.schema import alert_states
from risk_monitor.domain.alerts import AlertPolicy
from risk_monitor.service.writer import AlertWriter, Change
from risk_monitor_tests.fixtures.storage import START, make_result


def _change(status: str, seconds: float, scope: str) -> Change:
    result = make_result(status, START + timedelta(seconds=seconds), scope=scope)
    return Change(result, "tick", time.perf_counter(), {"tick": seconds})


def _write(storage: Storage, *changes: Change) -> AlertWriter:
    writer = AlertWriter(storage, policy=AlertPolicy, persist_interval_s=3600.0)
    writer.submit(changes, {"source": "service", "instance_id": "svc-1"})  # merged: one batch
    writer.start()
    writer.stop(drain_s=30.0)
    assert writer.pending() == 0 and writer.stats.failures == 0
    return writer


def test_a_merged_write_records_every_status_and_its_seals_verify(storage: Storage) -> None:
    writer = _write(storage, _change("WARN", 1, "desk-a"), _change("BREACH", 2, "desk-a"),
                    _change("BREACH", 1, "desk-b"))
    assert writer.stats.transactions == 1 and writer.stats.merged == 1
    history = {(i.scope, i.status.value, i.until is None)
               for i in storage.compliance.intervals(START, START + timedelta(hours=1))}
    assert history == {("desk-a", "WARN", False), ("desk-a", "BREACH", True),
                       ("desk-b", "BREACH", True)}
    desk_a, desk_b = (make_result("OK", START, scope=s).fingerprint for s in ("desk-a", "desk-b"))
    assert sorted((r.fingerprint, r.kind, r.alert_status) for r in storage.outbox.rows()) == \
        sorted([(desk_a, "firing", "BREACH"), (desk_b, "firing", "BREACH")])
    report = verify(storage.engine)
    assert report.ok, report.findings
    # a second write updates the stored states (the version-guarded upsert) and seals again
    _write(storage, _change("OK", 3, "desk-a"))
    assert [r.kind for r in storage.outbox.rows(fingerprint=desk_a)] == ["firing", "resolved"]
    report = verify(storage.engine)
    assert report.ok, report.findings
    with storage.engine.begin() as conn:  # an edit outside the application is caught
        conn.execute(alert_states.update().where(alert_states.c.scope == "desk-b")
                     .values(status="OK"))
    assert not verify(storage.engine).ok
