"""Statements and writer CPU per status change of the hot path's writer (issue 10 item 2).

Runs ``AlertWriter._write_changes`` on a fresh PostgreSQL database: ``--series`` series cross
OK → BREACH → OK ``--rounds`` times, one series per write (the bench's shape at 1k ticks/s:
~10 crossings/s, mostly one per write) and then all series in one merged write. Counts the SQL
round trips (an executemany of an UPDATE is one per row with psycopg2) and the writer thread's
CPU per write (``time.thread_time``, less distorted by load than wall time). A transaction
SQLAlchemy commits costs two round trips more than its statements (psycopg2's BEGIN, the
COMMIT); on PostgreSQL a change is two round trips in all (``adapters/sql/alert_change.py``:
the BEGIN travels with the first message, the COMMIT with the second; the connection's first
change also prepares the statements, once: "2-6"). Run from the repository root:
``python bench/bench_writer_statements.py``.

``--deliver N``: the stretch a status change takes from the writer to Slack (issue 10: change
handed to the writer → Slack simulator received), ``N`` changes per path, one at a time, the
paths interleaved change by change so the machine's load hits them alike: ``claim-round``
(the outbox row inserted pending, the dispatcher woken, its claim transaction, then the stock
slack-sdk client: a new connection per call), ``claim-on-insert`` (the row claimed in the
change's transaction and handed to the dispatcher; keep-alive Slack client) and the same with
``durable_alert_commit: false`` (no WAL flush wait). Writer and dispatcher run as threads
with a real ``SlackNotifier`` against the Slack simulator.
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
    parser.add_argument("--deliver", type=int, default=0, metavar="N")
    args = parser.parse_args()
    if args.deliver:
        deliver(args.deliver)
        return
    url = create_database("rm_bench_writer")
    storage = Storage.open(url)
    counts = {"round_trips": 0, "commits": 0}

    @sa.event.listens_for(storage.engine, "before_cursor_execute")
    def _count(conn: Any, cursor: Any, statement: str, params: Any, context: Any,
               executemany: bool) -> None:
        many = executemany and not statement.lstrip().upper().startswith("INSERT")
        counts["round_trips"] += len(params) if many else 1

    @sa.event.listens_for(storage.engine, "commit")
    def _commit(conn: Any) -> None:
        counts["commits"] += 1

    writer = AlertWriter(storage, policy=AlertPolicy, persist_interval_s=3600.0)
    at = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    single_trips: list[int] = []
    single_commits: list[int] = []
    single_cpu: list[float] = []
    single_wall: list[float] = []
    status = LimitStatus.OK
    try:
        for _ in range(args.rounds):
            status = LimitStatus.BREACH if status is LimitStatus.OK else LimitStatus.OK
            for i in range(args.series):
                at += timedelta(milliseconds=10)
                change = Change(result(i, status, at), "tick", time.perf_counter(), {})
                counts["round_trips"] = counts["commits"] = 0
                cpu, wall = time.thread_time(), time.perf_counter()
                writer._write_changes({change.result.fingerprint: [change]}, {
                    change.result.fingerprint: {"source": "hot_path"}})
                single_cpu.append(time.thread_time() - cpu)
                single_wall.append(time.perf_counter() - wall)
                single_trips.append(counts["round_trips"])
                single_commits.append(counts["commits"])
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
        trips = [t + 2 * c for t, c in zip(single_trips, single_commits, strict=True)]
        print(f"one status change per write: {min(trips)}-{max(trips)} round trips "
              f"({max(single_trips)} statements + {max(single_commits)} COMMIT and psycopg2's "
              "BEGIN each), writer CPU p50 "
              f"{single_cpu[len(single_cpu) // 2] * 1e3:.2f} ms, "
              f"mean {sum(single_cpu) / len(single_cpu) * 1e3:.2f} ms "
              f"({len(single_cpu)} writes); wall p50 "
              f"{single_wall[len(single_wall) // 2] * 1e3:.2f} ms, p99 "
              f"{single_wall[int(len(single_wall) * 0.99)] * 1e3:.2f} ms")
        print(f"{args.series} status changes in one merged write: {merged_trips} statements, "
              f"writer CPU {merged_cpu * 1e3:.2f} ms")
        print(f"audit chain ok={report.ok} entries={report.entries} rows={report.rows_checked}")
    finally:
        storage.close()
        drop_database(url)


def deliver(samples: int) -> None:
    """Change → Slack received per path (module docstring, ``--deliver``)."""
    import threading

    from slack_sdk import WebClient

    from risk_monitor.adapters.notifiers import SlackNotifier
    from risk_monitor.adapters.slack_transport import KeepAliveWebClient
    from risk_monitor.adapters.sql import OutboxDispatcher
    from risk_sim.slack import SlackSimulator

    channels = {"info": "#risk-info", "warning": "#risk-alerts", "critical": "#risk-critical"}
    url = create_database("rm_bench_deliver")
    storage = Storage.open(url)
    sim = SlackSimulator(token="xoxb-bench").start()
    stop = threading.Event()
    paths: dict[str, tuple[AlertWriter, int]] = {}
    try:
        for index, (name, keep_alive, claim, durable) in enumerate((
                ("claim-round", False, False, True), ("claim-on-insert", True, True, True),
                ("claim-on-insert, async commit", True, True, False))):
            client = (KeepAliveWebClient if keep_alive else WebClient)(
                token="xoxb-bench", base_url=sim.api_base, timeout=10)
            dispatcher = OutboxDispatcher(storage.engine, SlackNotifier(
                client, channels, dagster_ui_url="http://127.0.0.1:1"))
            threading.Thread(target=dispatcher.run, args=(stop, 1.0), daemon=True).start()
            writer = AlertWriter(storage, policy=AlertPolicy, persist_interval_s=3600.0,
                                 wake=dispatcher.wake, durable=durable,
                                 delivery=dispatcher if claim else None)
            writer.start()
            paths[name] = (writer, index)
        took: dict[str, list[float]] = {name: [] for name in paths}
        status = LimitStatus.OK
        for _ in range(samples):
            status = LimitStatus.BREACH if status is LimitStatus.OK else LimitStatus.OK
            for name, (writer, index) in paths.items():
                seen = len(sim.messages)
                at = datetime.now(UTC)
                writer.submit([Change(result(index, status, at), "tick", time.perf_counter(),
                                      {})], {"source": "hot_path"})
                deadline = time.monotonic() + 30
                while len(sim.messages) == seen and time.monotonic() < deadline:
                    time.sleep(0.0002)
                took[name].append(sim.messages[-1]["received_at"] - at.timestamp())
                time.sleep(0.02)
        print(f"load average {os.getloadavg()}; {samples} changes per path, interleaved")
        for name, values in took.items():
            values.sort()
            print(f"{name}: change → Slack received p50 {values[len(values) // 2] * 1e3:.1f} ms,"
                  f" p90 {values[int(len(values) * 0.9)] * 1e3:.1f} ms, max "
                  f"{values[-1] * 1e3:.1f} ms")
    finally:
        stop.set()
        for writer, _ in paths.values():
            writer.stop(5.0)
        sim.stop()
        storage.close()
        drop_database(url)


if __name__ == "__main__":
    main()
