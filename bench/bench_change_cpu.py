"""CPU of one hot-path status change between its two round trips: "plan" and "seal".

Drives the real writer (``AlertWriter._write_changes`` → ``_commit_pg`` →
``ChangeTransaction``) on a fresh PostgreSQL database with the shape of the load bench
(``bench_hot_path_load.py``): 200 perpetuals under one ``perp_notional`` limit, one series
crossing per write (OK ↔ BREACH), the evaluator's alert context (source, inputs, data
versions, a ``LineageDigest`` of the evaluation's input versions, the tick), a new
evaluation (context, digest) every ``--per-evaluation`` changes. No dispatcher: the rows
are inserted pending (no claim on insert).

Per change it reads the writer's own step histograms (``risk_monitor_hot_path_write_seconds``:
change_read, change_plan, change_seal, change_write, the figures the service exports; wall
time), the thread CPU of the plan's calls (``plan_alerts``, ``apply``, ``compliance``) and of
the seal (``ChangeTransaction.seal``, sending its statement included) and the writer
thread's CPU for the whole write (``time.thread_time``: less distorted by a loaded machine
than wall time), and prints mean / p50 / p99 in µs. ``--profile``: cProfile of the measured changes (top functions by own time).
Run from the repository root::

    python bench/bench_change_cpu.py --changes 1000
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from risk_monitor.adapters.sql import Storage  # noqa: E402
from risk_monitor.adapters.sql.alert_change import ChangeTransaction  # noqa: E402
from risk_monitor.domain.alerts import AlertPolicy  # noqa: E402
from risk_monitor.domain.model import LimitResult, LimitStatus  # noqa: E402
from risk_monitor.platform.logging import configure_logging  # noqa: E402
from risk_monitor.service import writer as writer_module  # noqa: E402
from risk_monitor.service.writer import AlertWriter, Change  # noqa: E402
from risk_monitor_tests.fixtures.evaluation_context import evaluation_context  # noqa: E402
from risk_monitor_tests.fixtures.services import create_database, drop_database  # noqa: E402

SERIES = 200
START = datetime(2026, 12, 6, 0, 33, tzinfo=UTC)
_STEPS = {"read": writer_module._READ, "plan": writer_module._PLAN,
          "seal": writer_module._SEAL, "write": writer_module._WRITE}
#: thread CPU of the plan's and the seal's calls (``time.thread_time``: what other threads
#: of a loaded machine do is not in it; the seal's includes psycopg2 sending the write)
_CPU = {"plan_cpu": 0.0, "seal_cpu": 0.0}


def _cpu_of(owner: Any, name: str, step: str) -> None:
    """Count the thread CPU of ``owner.name`` into ``_CPU[step]``."""
    original = getattr(owner, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            _CPU[step] += time.thread_time() - started

    setattr(owner, name, timed)


_cpu_of(writer_module, "plan_alerts", "plan_cpu")
_cpu_of(ChangeTransaction, "apply", "plan_cpu")
_cpu_of(ChangeTransaction, "compliance", "plan_cpu")
_cpu_of(ChangeTransaction, "seal", "seal_cpu")


def instrument(i: int) -> str:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return f"ZZ{letters[i // 26]}{letters[i % 26]}/USDT:USDT"


def result(i: int, breach: bool, at: datetime) -> LimitResult:
    value = 1_000_040.0 if breach else 999_959.78
    return LimitResult(
        limit_id="perp_notional", limit_kind="max_notional",
        scope=f"venue:binance|instrument:{instrument(i)}",
        status=LimitStatus.BREACH if breach else LimitStatus.OK, value=value, warn_level=None,
        breach_level=1_000_000.0, utilisation=value / 1_000_000.0, as_of=at,
        config_version="67d0be0c11996b3e", reason="",
        source_event_time=at - timedelta(milliseconds=800), usd_per_unit=1.0)


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"mean {statistics.fmean(ordered):7.0f}  p50 {statistics.median(ordered):7.0f}  "
            f"p99 {p99:7.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=1000, help="changes measured")
    parser.add_argument("--per-evaluation", type=int, default=50,
                        help="changes per evaluation (context, lineage digest)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    configure_logging("WARNING", force=True)  # as the load bench runs the service
    url = create_database("rm_bench_change_cpu")
    storage = Storage.open(url)
    writer = AlertWriter(storage, policy=AlertPolicy, persist_interval_s=3600.0)
    breached = [False] * SERIES
    taken: dict[str, list[float]] = {name: [] for name in (*_STEPS, *_CPU, "cpu")}
    profile = cProfile.Profile() if args.profile else None
    try:
        ctx = evaluation_context(0, START)
        for k in range(SERIES + args.changes):  # the first SERIES changes warm up
            at = START + timedelta(milliseconds=100 * (k + 1))
            if k % args.per_evaluation == 0:
                ctx = evaluation_context(k, at)
            i = (k * 7) % SERIES
            breached[i] = not breached[i]
            tick = {"tick": {"venue": "binance", "instrument": instrument(i),
                             "last": 100.00004 if breached[i] else 99.995978,
                             "event_time_ns": int(at.timestamp() * 1e9)}}
            writer.submit([Change(result(i, breached[i], at), "tick", time.perf_counter(),
                                  tick)], ctx)
            batch, writer._pending = writer._pending, {}
            contexts = {f: writer._contexts[f] for f in batch}
            before = {name: h._sum.get() for name, h in _STEPS.items()}
            before.update(_CPU)
            measured = k >= SERIES
            if profile is not None and measured:
                profile.enable()
            cpu = time.thread_time()
            writer._write_changes(batch, contexts)
            cpu = time.thread_time() - cpu
            if profile is not None:
                profile.disable()
            if measured:
                for name, histogram in _STEPS.items():
                    taken[name].append((histogram._sum.get() - before[name]) * 1e6)
                for name, seconds in _CPU.items():
                    taken[name].append((seconds - before[name]) * 1e6)
                taken["cpu"].append(cpu * 1e6)
    finally:
        writer._drop_connection()
        storage.close()
        drop_database(url)
    print(f"{args.changes} changes of one series each, µs per change "
          f"(a new evaluation every {args.per_evaluation}):")
    for name, label in (("read", "change_read (round trip 1)"), ("plan", "change_plan"),
                        ("seal", "change_seal (CPU before round trip 2)"),
                        ("write", "change_write (round trip 2)"),
                        ("plan_cpu", "plan, thread CPU"),
                        ("seal_cpu", "seal, thread CPU (incl. sending)"),
                        ("cpu", "writer thread CPU, whole write")):
        print(f"  {label:40s} {summary(taken[name])}")
    if profile is not None:
        stats = pstats.Stats(profile)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_callees("_commit_pg|seal|apply|compliance")


if __name__ == "__main__":
    main()
