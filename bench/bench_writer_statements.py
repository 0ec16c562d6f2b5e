"""Statements and writer CPU per status change of the hot path's writer (issue 10 item 2).

Runs ``AlertWriter._write_changes`` on a fresh PostgreSQL database: ``--series`` series cross
OK → BREACH → OK ``--rounds`` times, one series per write (the bench's shape at 1k ticks/s:
~10 crossings/s, mostly one per write) and then all series in one merged write. Counts the SQL
round trips (an executemany of an UPDATE is one per row with psycopg2) and the writer thread's
CPU per write (``time.thread_time``, less distorted by load than wall time). Run from the
repository root: ``python bench/bench_writer_statements.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from risk_monitor.adapters.sql import Storage  # noqa: E402
from risk_monitor.adapters.sql.audit_verify import verify  # noqa: E402
from risk_monitor.domain.alerts import AlertPolicy  # noqa: E402
from risk_monitor.domain.model import LimitResult, LimitStatus  # noqa: E402
from risk_monitor.service.writer import AlertWriter, Change  # noqa: E402
from risk_monitor_tests.fixtures.services import create_database, drop_database  # noqa: E402


def result(i: int, status: LimitStatus, at: datetime) -> LimitResult:
    value = {LimitStatus.OK: 500.0, LimitStatus.BREACH: 1200.0}[status]
    return LimitResult(limit_id="perp_notional", limit_kind="max_notional",
                       scope=f"binance:SYM{i:03d}", status=status, value=value, warn_level=None,
                       breach_level=1000.0, utilisation=value / 1000.0, as_of=at,
                       config_version="cfg-v1", reason="", source_event_time=at)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--series", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    url = create_database("rm_bench_writer")
    storage = Storage.open(url)
    counts = {"round_trips": 0}

    @sa.event.listens_for(storage.engine, "before_cursor_execute")
    def _count(conn: Any, cursor: Any, statement: str, params: Any, context: Any,
               executemany: bool) -> None:
        many = executemany and not statement.lstrip().upper().startswith("INSERT")
        counts["round_trips"] += len(params) if many else 1

    writer = AlertWriter(storage, policy=AlertPolicy, persist_interval_s=3600.0)
    at = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    single_trips: list[int] = []
    single_cpu: list[float] = []
    single_wall: list[float] = []
    status = LimitStatus.OK
    try:
        for _ in range(args.rounds):
            status = LimitStatus.BREACH if status is LimitStatus.OK else LimitStatus.OK
            for i in range(args.series):
                at += timedelta(milliseconds=10)
                change = Change(result(i, status, at), "tick", time.perf_counter(), {})
                counts["round_trips"] = 0
                cpu, wall = time.thread_time(), time.perf_counter()
                writer._write_changes({change.result.fingerprint: [change]}, {
                    change.result.fingerprint: {"source": "hot_path"}})
                single_cpu.append(time.thread_time() - cpu)
                single_wall.append(time.perf_counter() - wall)
                single_trips.append(counts["round_trips"])
        status = LimitStatus.BREACH if status is LimitStatus.OK else LimitStatus.OK
        at += timedelta(milliseconds=10)
        batch = {}
        for i in range(args.series):
            change = Change(result(i, status, at), "tick", time.perf_counter(), {})
            batch[change.result.fingerprint] = [change]
        counts["round_trips"] = 0
        cpu = time.thread_time()
        writer._write_changes(batch, {fp: {"source": "hot_path"} for fp in batch})
        merged_cpu = time.thread_time() - cpu
        merged_trips = counts["round_trips"]
        report = verify(storage.engine)
        single_cpu.sort()
        single_wall.sort()
        print(f"load average {os.getloadavg()[0]:.1f} (loaded machine)")
        print(f"one status change per write: {min(single_trips)}-{max(single_trips)} round "
              f"trips, writer CPU p50 {single_cpu[len(single_cpu) // 2] * 1e3:.2f} ms, "
              f"mean {sum(single_cpu) / len(single_cpu) * 1e3:.2f} ms "
              f"({len(single_cpu)} writes); wall p50 "
              f"{single_wall[len(single_wall) // 2] * 1e3:.2f} ms, p99 "
              f"{single_wall[int(len(single_wall) * 0.99)] * 1e3:.2f} ms")
        print(f"{args.series} status changes in one merged write: {merged_trips} round trips, "
              f"writer CPU {merged_cpu * 1e3:.2f} ms")
        print(f"audit chain ok={report.ok} entries={report.entries} rows={report.rows_checked}")
    finally:
        storage.close()
        drop_database(url)


if __name__ == "__main__":
    main()
