"""Measure the alert write path and outbox delivery on PostgreSQL and SQLite.

Run: ``RISK_MONITOR_LOG_LEVEL=WARNING python bench/bench_storage.py``
(needs the local PostgreSQL). 300 evaluations through ``locked`` over 50 fingerprints, alternating
WARN and OK every 50 (300 notifications), then drained into the Slack simulator with the real
``WebClient``. Figures are quoted in docs/storage-and-alerting.md.
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from slack_sdk import WebClient

from risk_monitor.adapters.notifiers import SlackNotifier
from risk_monitor.adapters.sql import OutboxDispatcher, Storage
from risk_monitor.platform.logging import configure_logging
from risk_sim.slack import SlackSimulator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test fixtures build the desk
from risk_monitor_tests.fixtures.services import create_database, drop_database
from risk_monitor_tests.fixtures.storage import evaluate, make_result

EVALUATIONS = 300
FINGERPRINTS = 50


def bench(name: str, url: str, sim: SlackSimulator) -> None:
    storage = Storage.open(url)
    try:
        latencies: list[float] = []
        for i in range(EVALUATIONS):
            status = "WARN" if (i // FINGERPRINTS) % 2 == 0 else "OK"
            result = make_result(status, datetime.now(UTC), scope=f"s{i % FINGERPRINTS}")
            started = time.perf_counter()
            evaluate(storage, result)
            latencies.append((time.perf_counter() - started) * 1000)
        notifier = SlackNotifier(WebClient(token=sim.token, base_url=sim.api_base),
                                 {"info": "#i", "warning": "#w", "critical": "#c"},
                                 dagster_ui_url="http://127.0.0.1:3000")
        dispatcher = OutboxDispatcher(storage.engine, notifier)
        started = time.perf_counter()
        sent = 0
        while (result_ := dispatcher.dispatch_once(100)).claimed:
            sent += result_.sent
        elapsed = time.perf_counter() - started
        latencies.sort()
        p50 = latencies[len(latencies) // 2]
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        print(f"{name}: locked evaluate+apply p50={p50:.2f} ms p99={p99:.2f} ms; "
              f"{sent} notifications delivered in {elapsed:.2f} s "
              f"({elapsed / max(sent, 1) * 1000:.2f} ms each)")
    finally:
        storage.close()


def main() -> None:
    configure_logging("WARNING")
    with SlackSimulator() as sim:
        pg_url = create_database("rm_bench")
        try:
            bench("postgresql", pg_url, sim)
        finally:
            drop_database(pg_url)
        sim.reset()
        with tempfile.TemporaryDirectory() as tmp:
            bench("sqlite", f"sqlite:///{tmp}/bench.db", sim)


if __name__ == "__main__":
    main()
