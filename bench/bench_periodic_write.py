"""CPU of the hot path's periodic write: ``persist_evaluation`` and the compliance sightings.

The service's ``hot-path-periodic`` thread runs, every ``persist_interval_s``, the write of the
latest results, metrics, source coverage and equity (``application.persist_evaluation``), then
the compliance sighting of every series in chunks of ``PERIODIC_CHUNK``
(``application.record_compliance``). Its CPU is taken from the interpreter lock the tick loop
needs, so what counts is the thread's CPU (``time.thread_time``), not the wall time.

Desk: the load bench's (``bench_hot_path_load.py``): 200 perpetuals on one Binance account, one
10,000-contract long each at ~100 USDT, one ``max_notional`` limit per instrument (200 results),
evaluated by the batch engine (``domain.engine.evaluate``). Each round moves the time (5 s, the
bench's ``persist_interval_s``) and every result a little (as at 1k ticks/s); a new full
evaluation (every metric and the equity move) comes every ``--evaluation-every`` rounds (the
service evaluates on polls and heartbeats, seconds apart). The round is written to a fresh
PostgreSQL database (or ``--sqlite``) step by step, then again as one ``persist_evaluation``,
then the compliance sightings in chunks, then once more as the service's periodic writer does
it all (``AlertWriter._write_periodic``: persist, sightings, time-driven alert transitions).
Prints mean / p50 / p99 in ms of thread CPU and wall time per step. Run from the repository root::

    python bench/bench_periodic_write.py --rounds 200
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import math
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from risk_monitor import application  # noqa: E402
from risk_monitor.adapters.sql import Storage  # noqa: E402
from risk_monitor.application import evaluation  # noqa: E402
from risk_monitor.domain.alerts import AlertPolicy  # noqa: E402
from risk_monitor.domain.engine import RiskReport, RiskSnapshot, evaluate  # noqa: E402
from risk_monitor.domain.figures import EVALUATION_METRIC_NAMES  # noqa: E402
from risk_monitor.domain.limits import load_limit_config  # noqa: E402
from risk_monitor.domain.model import (  # noqa: E402
    BALANCE_COLUMNS,
    POSITION_COLUMNS,
    PRICE_COLUMNS,
    Collected,
    LimitResult,
    SourceKind,
    SourceStatus,
)
from risk_monitor.service.writer import PERIODIC_CHUNK, AlertWriter, LiveState  # noqa: E402
from risk_monitor_tests.fixtures.services import create_database, drop_database  # noqa: E402

N = 200
PRICE = 100.0
CONTRACTS = 10_000.0
START = datetime(2026, 12, 6, 0, 33, tzinfo=UTC)
LIMITS = {"venues": ["binance"], "limits": [{
    "id": "perp_notional", "kind": "max_notional",
    "scope": {"venue": "binance", "instrument": "*"}, "breach": 1_000_000.0}]}


def snapshot(now: datetime, move: float) -> RiskSnapshot:
    """The desk at ``now``, instrument i priced ``PRICE * (1 + move * sin(i))``."""
    names = [f"ZZ{i:03d}" for i in range(N)]
    prices = [PRICE * (1 + move * math.sin(i + 1)) for i in range(N)]
    at = pd.Timestamp(now - timedelta(seconds=1))
    positions = pd.DataFrame([{
        "venue": "binance", "account": "main", "instrument": f"{n}/USDT:USDT", "base": n,
        "quote": "USDT", "settle": "USDT", "position_side": "long", "contracts": CONTRACTS,
        "contract_size": 1.0, "quantity": CONTRACTS, "entry_price": PRICE, "mark_price": p,
        "notional": CONTRACTS * p, "unrealized_pnl": CONTRACTS * (p - PRICE),
        "realized_pnl": 0.0, "leverage": 5.0, "liquidation_price": 50.0, "margin_mode": "cross",
        "timestamp": at, "received_at": at} for n, p in zip(names, prices, strict=True)],
        columns=list(POSITION_COLUMNS))
    quotes = pd.DataFrame([{
        "venue": "binance", "instrument": f"{n}/USDT:USDT", "base": n, "quote": "USDT",
        "bid": p, "ask": p, "last": p, "mark": p, "timestamp": at, "received_at": at}
        for n, p in zip(names, prices, strict=True)], columns=list(PRICE_COLUMNS))
    balances = pd.DataFrame([{
        "source_type": "exchange", "venue": "binance", "account": "main", "asset": "USDT",
        "free": 50e6, "used": 0.0, "total": 50e6, "timestamp": at, "received_at": at}],
        columns=list(BALANCE_COLUMNS))
    exchange = (SourceStatus(SourceKind.EXCHANGE, "binance", "main", True, now, rows=N),)
    market = (SourceStatus(SourceKind.MARKET, "binance", "", True, now, rows=N),)
    return RiskSnapshot(positions=Collected(positions, exchange),
                        balances=Collected(balances, exchange),
                        prices=Collected(quotes, market), now=now,
                        start_of_day_equity=None, peak_equity=None,
                        max_age_s=60.0, max_future_skew_s=5.0)


def moved(results: list[LimitResult], k: int, at: datetime) -> list[LimitResult]:
    """Every result re-measured at ``at`` with a slightly different value (a tick each)."""
    out = []
    for i, r in enumerate(results):
        value = None if r.value is None else r.value * (1 + 1e-4 * math.sin(k + i))
        out.append(replace(r, value=value, as_of=at, source_event_time=at,
                           utilisation=None if value is None else value / r.breach_level))
    return out


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    return (f"mean {statistics.fmean(values):7.2f}  p50 {statistics.median(values):7.2f}  "
            f"p99 {p99:7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="measured rounds")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--evaluation-every", type=int, default=1, metavar="K",
                        help="a new full evaluation every K rounds (1: every round)")
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    parser.add_argument("--profile", action="store_true", help="cProfile of the measured rounds")
    args = parser.parse_args()
    config = load_limit_config(LIMITS)
    report: RiskReport = evaluate(snapshot(START, 0.01), config)
    tmp = tempfile.TemporaryDirectory()
    url = f"sqlite:///{tmp.name}/bench.db" if args.sqlite else create_database("rm_bench_periodic")
    storage = Storage.open(url)
    risk = storage.risk_state
    metrics = evaluation.evaluation_metrics(report.state, report.exposures)
    steps: dict[str, Callable[[list[LimitResult], datetime], object]] = {
        "upsert_limit_results": lambda rs, at: risk.upsert_limit_results(rs, prune_before=at),
        "evaluation_metrics": lambda rs, at: evaluation.evaluation_metrics(
            report.state, report.exposures),
        "replace_metrics": lambda rs, at: risk.replace_metrics(
            metrics, at, names=EVALUATION_METRIC_NAMES),
        "record_sources": lambda rs, at: risk.record_sources(report.state.sources),
        "record_equity": lambda rs, at: evaluation.record_equity(storage, report.state, at),
    }
    writer = AlertWriter(storage, policy=AlertPolicy, persist_interval_s=3600.0)
    cpu: dict[str, list[float]] = {name: [] for name in (*steps, "persist", "compliance_chunk",
                                                         "periodic_write")}
    wall: dict[str, list[float]] = {name: [] for name in cpu}
    profile = cProfile.Profile() if args.profile else None
    print(f"{len(report.results)} results, {len(metrics)} metrics, "
          f"{len(report.state.sources)} sources; {'SQLite' if args.sqlite else 'PG'}; "
          f"code of {Path(application.__file__).resolve().parent.parent}; load {os.getloadavg()[0]:.2f}")
    try:
        for k in range(args.warmup + args.rounds):
            at = START + timedelta(seconds=5 * (k + 1))
            if k % args.evaluation_every == 0:  # untimed: the service's evaluation thread
                report = evaluate(snapshot(at, 0.01 * (1 + 0.01 * math.sin(k))), config)
                metrics = evaluation.evaluation_metrics(report.state, report.exposures)
            results = moved(list(report.results), k, at)
            measured = k >= args.warmup
            if profile is not None and measured:
                profile.enable()
            for name, step in steps.items():  # the steps of persist_evaluation, one by one
                c0, w0 = time.thread_time(), time.perf_counter()
                step(results, at)
                if measured:
                    cpu[name].append((time.thread_time() - c0) * 1e3)
                    wall[name].append((time.perf_counter() - w0) * 1e3)
            c0, w0 = time.thread_time(), time.perf_counter()
            application.persist_evaluation(storage, state=report.state,
                                           exposures=report.exposures, results=results,
                                           as_of=at + timedelta(milliseconds=1))
            if measured:
                cpu["persist"].append((time.thread_time() - c0) * 1e3)
                wall["persist"].append((time.perf_counter() - w0) * 1e3)
            for start in range(0, len(results), PERIODIC_CHUNK):
                c0, w0 = time.thread_time(), time.perf_counter()
                application.record_compliance(storage, results[start:start + PERIODIC_CHUNK])
                if measured:
                    cpu["compliance_chunk"].append((time.thread_time() - c0) * 1e3)
                    wall["compliance_chunk"].append((time.perf_counter() - w0) * 1e3)
            # the writer's whole round, as the service runs it (``results()`` copies the list)
            current = moved(list(report.results), k, at + timedelta(milliseconds=2))
            state = LiveState(report, functools.partial(list, current), {"trigger": "periodic"})
            c0, w0 = time.thread_time(), time.perf_counter()
            writer._write_periodic(state)
            if measured:
                cpu["periodic_write"].append((time.thread_time() - c0) * 1e3)
                wall["periodic_write"].append((time.perf_counter() - w0) * 1e3)
            if profile is not None:
                profile.disable()
    finally:
        storage.close()
        if not args.sqlite:
            drop_database(url)
        tmp.cleanup()
    print(f"{args.rounds} rounds, ms per call (thread CPU | wall):")
    for name, taken in cpu.items():
        print(f"  {name:22s} cpu {summary(taken)} | wall {summary(wall[name])}")
    if profile is not None:
        stats = pstats.Stats(profile)
        stats.sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
