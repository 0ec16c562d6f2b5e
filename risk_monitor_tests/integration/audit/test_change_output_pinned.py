"""The hot path's change writes the very same bytes whatever its planning and sealing cost:
every audit hash, entry payload, lineage digest and outbox payload of a representative run
of changes (a service's alert context: lineage digest, inputs, data versions, the tick) is
pinned here, as the code wrote them before its CPU was cut (``bench/bench_change_cpu.py``).
A hash that moves breaks ``audit verify`` of old rows against new ones: a change of format
is a migration, not a side effect."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from risk_monitor.adapters.sql import Storage
from risk_monitor.adapters.sql.audit_verify import verify
from risk_monitor.adapters.sql.schema import (
    alert_states,
    audit_log,
    compliance_intervals,
    evaluation_lineage,
    outbox,
)
from risk_monitor.domain.alerts import AlertPolicy
from risk_monitor.platform import code_version as cv
from risk_monitor.service.writer import AlertWriter, Change
from risk_monitor_tests.fixtures.evaluation_context import evaluation_context
from risk_monitor_tests.fixtures.storage import START, make_result

#: what the pinned rows hash to (module docstring); a new value means new bytes in the store
PINNED = {
    "alert_states":
        "19d749b268fdd4587fb3009228cc21fe20ff03ae0d55552854c180ef99d421ea",
    "outbox":
        "d009fb7a3ccebbdc80304a495dc47faa30971dd6029c40c076849c77d4448083",
    "compliance_intervals":
        "39615342ce04b9fb66c2ad51f53fcd9a29457c173b0604c94dd4b7ca70dacb9b",
    "audit_log":
        "e99f5ee118ec7dc52bf4b46579e5b6967ef560bcbb0301b81d34d570230c2206",
    "evaluation_lineage":
        "9b445b8503e3361189ec2cf5a2b50593ebc303b8b8bb6907a3239cf0031c4eb5",
}
#: the columns pinned: what is sealed or names a seal (ids included: the chain's order)
_COLUMNS = {
    alert_states: ("fingerprint", "limit_id", "scope", "status", "severity", "started_at",
                   "episode", "sequence", "correlation_id", "audit_hash"),
    outbox: ("id", "idempotency_key", "payload", "audit_hash"),
    compliance_intervals: ("id", "limit_id", "scope", "status", "since", "until",
                           "config_version", "audit_hash"),
    audit_log: ("id", "at", "event", "correlation_id", "run_id", "payload", "prev_hash",
                "entry_hash", "subject", "row_digest"),
    evaluation_lineage: ("digest", "recorded_at", "versions"),
}


@pytest.fixture
def fixed_code_version(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Entries name the code that wrote them: a fixed name, so the bytes are the same at
    every commit."""
    monkeypatch.setenv(cv.ENV_VAR, "git:0123456789abcdef0123456789abcdef01234567")
    cv.code_version.cache_clear()
    yield
    cv.code_version.cache_clear()


def _change(status: str, seconds: float, scope: str) -> Change:
    at = START + timedelta(seconds=seconds)
    return Change(make_result(status, at, scope=scope), "tick", time.perf_counter(),
                  {"tick": {"venue": "binance", "instrument": scope, "last": 99.995978 + seconds,
                            "event_time_ns": int(at.timestamp() * 1e9)}})


#: (evaluation, changes written at once): merged writes with intermediate statuses, several
#: series per write, resolves, a second evaluation's context
_WRITES = (
    (0, (_change("WARN", 1, "desk-a"), _change("BREACH", 2, "desk-a"),
         _change("BREACH", 1, "desk-b"))),
    (0, (_change("OK", 3, "desk-a"),)),
    (1, (_change("WARN", 4, "desk-a"), _change("BREACH", 5, "desk-a"),
         _change("OK", 6, "desk-b"))),
    (1, (_change("OK", 7, "desk-a"), _change("WARN", 8, "desk-b"))),
    (2, (_change("BREACH", 9, "desk-b"),)),
)


def _pinned(storage: Storage) -> dict[str, str]:
    found: dict[str, str] = {}
    with storage.engine.connect() as conn:
        for table, columns in _COLUMNS.items():
            key = table.c[columns[0]]
            rows = [[r[c] for c in columns] for r in conn.execute(
                sa.select(*[table.c[c] for c in columns]).order_by(key)).mappings()]
            text = json.dumps(rows, sort_keys=True, default=str)
            found[table.name] = hashlib.sha256(text.encode()).hexdigest()
    return found


def test_a_run_of_changes_writes_the_pinned_bytes(
        pg_storage: Storage, fixed_code_version: None) -> None:
    writer = AlertWriter(pg_storage, policy=AlertPolicy, persist_interval_s=3600.0)
    contexts = {n: evaluation_context(n, START + timedelta(seconds=n)) for n in {n for n, _ in _WRITES}}
    try:
        for n, changes in _WRITES:
            writer.submit(changes, contexts[n])
            batch, writer._pending = writer._pending, {}
            writer._write_changes(batch, dict(writer._contexts))
    finally:
        writer._drop_connection()
    report = verify(pg_storage.engine)
    assert report.ok, report.findings
    assert _pinned(pg_storage) == PINNED
