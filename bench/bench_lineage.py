"""What the lineage record adds to the hot path's evaluation -> committed-alert stage.

Run: ``RISK_MONITOR_LOG_LEVEL=WARNING python bench/bench_lineage.py`` (needs the local
PostgreSQL; also runs on SQLite). Two costs, each timed alone, per alerting evaluation:

* ``input_versions``: content data versions of a desk-sized snapshot (200 quotes, 60 positions,
  exchange + custodian balances), the same hash the Dagster assets use;
* ``seal``: the audit entries written inside the alert transaction (chain lock, head read, one
  entry per notification and per changed alert state, the row's ``audit_hash``).

``TRANSITIONS`` alerting evaluations alternate WARN / OK over 50 series. Figures are quoted in
docs/benchmarks.md ("Lineage and audit chain"). ``cpu (process)`` is the process CPU time of
the whole iteration (hash + lock + plan + apply + seal + commit): on a busy machine wall time
mostly measures waiting for a core.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from risk_monitor.adapters.sql import Storage
from risk_monitor.adapters.sql.audit_hooks import seal_alert_transaction
from risk_monitor.domain.engine import RiskSnapshot
from risk_monitor.domain.lineage import input_versions
from risk_monitor.domain.model import Collected, SourceKind, SourceStatus
from risk_monitor.platform.logging import configure_logging

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test fixtures build data
from risk_monitor_tests.fixtures.services import create_database, drop_database
from risk_monitor_tests.fixtures.storage import make_result, plan

TRANSITIONS = 200
SERIES = 50
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _collected(kind: SourceKind, venue: str, frame: pd.DataFrame) -> Collected:
    return Collected(frame=frame, sources=(SourceStatus(kind=kind, venue=venue, account="main",
                                                        ok=True, as_of=T0, rows=len(frame)),))


def desk_snapshot() -> RiskSnapshot:
    quotes = pd.DataFrame({"venue": "binance", "instrument": [f"S{i}/USDT:USDT" for i in range(200)],
                           "last": [100.0 + i for i in range(200)], "timestamp": T0})
    positions = pd.DataFrame({"venue": "binance", "instrument": [f"S{i}/USDT:USDT" for i in range(60)],
                              "contracts": [1.5 * i for i in range(60)]})
    balances = pd.DataFrame({"venue": ["binance", "fireblocks"], "asset": ["USDT", "BTC"],
                             "total": [1e6, 12.0]})
    return RiskSnapshot(
        positions=_collected(SourceKind.EXCHANGE, "binance", positions),
        balances=Collected(frame=balances, sources=(
            SourceStatus(kind=SourceKind.EXCHANGE, venue="binance", account="main", ok=True,
                         as_of=T0, rows=1),
            SourceStatus(kind=SourceKind.CUSTODIAN, venue="fireblocks", account="main", ok=True,
                         as_of=T0, rows=1))),
        prices=_collected(SourceKind.MARKET, "binance", quotes), now=T0)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench(name: str, url: str) -> None:
    storage = Storage.open(url)
    snapshot = desk_snapshot()
    hashing: list[float] = []
    sealing: list[float] = []
    cpu: list[float] = []
    try:
        for i in range(TRANSITIONS):
            status = "WARN" if (i // SERIES) % 2 == 0 else "OK"
            at = T0 + timedelta(seconds=i)
            result = make_result(status, at, scope=f"s{i % SERIES}")
            started, cpu_started = time.perf_counter(), time.process_time()
            context = {"source": "service", "instance_id": "bench",
                       "input_data_versions": input_versions(snapshot, "cfg-v1")}
            hashing.append((time.perf_counter() - started) * 1000)
            with storage.alerts.locked([result.fingerprint]) as tx:
                before = dict(tx.states)
                state, notes = plan(tx.states.get(result.fingerprint), result)
                tx.apply([state], notes)
                started = time.perf_counter()
                seal_alert_transaction(tx.connection, before=before, states=[state],
                                       notifications=notes, context=context, at=at)
                sealing.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - cpu_started) * 1000)
        total = [h + s for h, s in zip(hashing, sealing, strict=True)]
        for label, values in (("input_versions", hashing), ("seal", sealing), ("sum", total),
                              ("cpu (process)", cpu)):
            print(f"{name:<10} {label:<15} p50 {statistics.median(values):6.3f} ms  "
                  f"p99 {pct(values, 0.99):6.3f} ms  (n={len(values)})")
    finally:
        storage.close()


def main() -> None:
    configure_logging("WARNING")
    url = create_database("rm_bench_lineage")
    try:
        bench("postgresql", url)
    finally:
        drop_database(url)
    with tempfile.TemporaryDirectory() as directory:
        bench("sqlite", f"sqlite:///{directory}/bench.db")


if __name__ == "__main__":
    main()
