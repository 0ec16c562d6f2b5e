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
from typing import Any

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
from risk_monitor.domain.audit_chain import versions_digest
from risk_monitor.domain.lineage import LineageDigest
from risk_monitor.platform import code_version as cv
from risk_monitor.service.writer import AlertWriter, Change
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


def _versions(n: int) -> dict[str, Any]:
    """An evaluation's input versions, shaped as the service's (``evaluated_inputs``)."""
    at = (START + timedelta(seconds=n)).isoformat()

    def seen(version: str, rows: int | None, venues: dict[str, Any] | None) -> dict[str, Any]:
        entry: dict[str, Any] = {"data_version": f"{version}{n:04d}", "as_of": at, "rows": rows}
        if venues is not None:
            entry["venues"] = venues
        return entry

    binance = {"binance": {"data_version": f"9828e30f{n:04d}", "as_of": at, "rows": 200}}
    return {"market_prices": seen("8548ba2b", 200, binance),
            "exchange_positions": seen("13151be1", 200, binance),
            "exchange_balances": seen("245d5c86", 1, binance),
            "custodian_balances": seen("b8e1dda3", 0, {}),
            "limit_config": seen("67d0be0c", None, None)}


def _context(n: int) -> dict[str, Any]:
    """The evaluator's context of evaluation ``n`` (``service/evaluator.py``)."""
    versions = _versions(n)
    at = (START + timedelta(seconds=n)).isoformat()
    return {
        "source": "service", "service": "risk-monitor", "instance_id": "load-f5d32c",
        "baseline_evaluated_at": at, "limit_config_version": "cfg-v1",
        "code_version": "git:ffff",  # the evaluator's; the entry names the writer's own
        "inputs": {"exchange:binance:main": {"ok": True, "as_of": at, "rows": 200,
                                             "error_code": None},
                   "market:binance:*": {"ok": True, "as_of": at, "rows": 200,
                                        "error_code": None}},
        "lineage_digest": LineageDigest(versions_digest(versions), versions),
        "data_versions": {k: v["data_version"] for k, v in versions.items()},
    }


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
    contexts = {n: _context(n) for n in {n for n, _ in _WRITES}}
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
