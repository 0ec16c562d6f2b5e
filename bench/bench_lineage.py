"""What the lineage record adds to the hot path's evaluation -> committed-alert stage.

Run (PostgreSQL on 127.0.0.1, like the tests; also runs on SQLite)::

    RISK_MONITOR_LOG_LEVEL=WARNING python bench/bench_lineage.py            # 3 runs x 300
    RISK_MONITOR_LOG_LEVEL=WARNING python bench/bench_lineage.py --runs 1 -n 100
    RISK_MONITOR_LOG_LEVEL=WARNING python bench/bench_lineage.py --runs 1 --profile  # where

``--profile`` runs cProfile over exactly what "added, measured directly" times (the context and
the version row's write) and prints the top functions; its figures then include the profiler's
overhead (about 2x): take the figures from a run without it.

The stage, per alerting evaluation, as the service runs it, **with** and **without** lineage on
the same workload (interleaved, alternating which goes first):

* **context** (``LiveEvaluator._context_of``: once per full evaluation, before its status
  changes go to the writer): with lineage, ``HotPathLineage.context`` hashes the evaluated
  inputs per venue (``domain/lineage.py``) and the digest of those versions. A desk-sized
  snapshot: 200 perpetual quotes on two venues (all ``PRICE_COLUMNS``), 60 positions, exchange
  and custodian balances. The quote frame is rebuilt on every evaluation (one tick moved), as
  the hot path rebuilds it; its versions are composed from the quote book's row hashes
  (``domain/book_lineage.py``: each tick's row is hashed as it is stored, timed apart as ``per
  tick: book hash``, on the tick path, not on this stage), so the context reads the book's
  hashes and composes the quotes' versions (a sort and a digest per venue); positions and
  balances are the same objects between polls (identity cache). ``context after a poll`` is
  the worst case: positions and balances new (hashed whole), and a tick moved;
* **commit**: the hot path's writer itself (``AlertWriter._write_changes``: lock the changed
  series, plan, apply, insert the outbox row, seal the audit entries, commit) for one WARN <-> OK
  transition of one series; timed from the call to the writer's wake-up after the commit (the
  compliance timeline, written after that, is outside the stage). With lineage, the alert
  entries seal the versions' digest and the versions are stored once per evaluation;
* **added** = p(with) - p(without) of the whole stage (context + commit), per percentile; the
  same for an alert decided per tick (``commit only``: the per-tick path reuses its baseline
  evaluation's context, nothing is hashed). On a loaded machine these differences of two noisy
  distributions are dominated by noise (even negative at p99), so the bench also times what
  lineage itself runs on the stage, directly, per evaluation: **added, measured directly** =
  the context (hash) + the version row (``audit_lineage.pending``: built, its JSON encoded;
  written inside the seal's statement on PostgreSQL, by ``audit_lineage.write`` on SQLite;
  wrapped here). What
  it leaves out: the alert entries' and outbox rows' payloads carry ~300 more characters
  (digest, flat versions for the Slack footer, evaluation id), tens of µs;
* **report** (off the critical path: after the commit and the outbox wake-up): the
  ``live_limit_status`` runless materialisation to a Dagster instance (SQLite, temporary).

CPU figures are the benchmark thread's CPU time (``time.thread_time``: the writer runs on the
calling thread here), which a loaded machine distorts less than wall time; the database server's
own CPU is not in them (it is in wall time). Every figure: p50 / p99 / max in ms over ``n``
evaluations, per run; the machine's load average before and after.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from risk_monitor.adapters.sql import Storage, audit_lineage
from risk_monitor.dagster_catalog import DagsterCatalog
from risk_monitor.domain.alerts import AlertPolicy
from risk_monitor.domain.book_lineage import BookDigest
from risk_monitor.domain.engine import RiskSnapshot
from risk_monitor.domain.lineage import adopt_versions
from risk_monitor.domain.model import (
    BALANCE_COLUMNS,
    POSITION_COLUMNS,
    PRICE_COLUMNS,
    Collected,
    Notification,
    SourceKind,
    SourceStatus,
)
from risk_monitor.domain.schemas import prices_frame
from risk_monitor.lineage import HotPathLineage
from risk_monitor.platform.logging import configure_logging
from risk_monitor.service.writer import AlertWriter, Change

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test fixtures build data
from risk_monitor_tests.fixtures.services import create_database, drop_database
from risk_monitor_tests.fixtures.storage import make_result

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
VENUES = ("binance", "okx")
QUOTES_PER_VENUE = 100
POSITIONS = 60
SERIES = 20


def _status(kind: SourceKind, venue: str, rows: int) -> SourceStatus:
    return SourceStatus(kind=kind, venue=venue, account="main", ok=True, as_of=T0, rows=rows)


def quote_rows(rng: np.random.Generator) -> list[dict[str, Any]]:
    rows = []
    for venue in VENUES:
        for i in range(QUOTES_PER_VENUE):
            last = float(100 + i + rng.random())
            rows.append({"venue": venue, "instrument": f"S{i}/USDT:USDT", "base": f"S{i}",
                         "quote": "USDT", "bid": last - 0.01, "ask": last + 0.01, "last": last,
                         "mark": last, "timestamp": pd.Timestamp(T0),
                         "received_at": pd.Timestamp(T0)})
    return rows


def move_one(rows: list[dict[str, Any]], rng: np.random.Generator,
             book: BookDigest | None = None) -> float:
    """One tick: one quote's last and mark move (a new row, as the feed stores one); with a
    ``book``, hashed into it as the service's quote book does; returns that cost (µs)."""
    i = int(rng.integers(len(rows)))
    tick = rows[i] = dict(rows[i])
    tick["last"] = tick["mark"] = float(tick["last"]) * (1 + rng.normal(0, 1e-4))
    if book is None:
        return 0.0
    started = time.perf_counter()
    book.update(str(tick["venue"]), [tick])
    return (time.perf_counter() - started) * 1e6


def new_book(rows: list[dict[str, Any]]) -> BookDigest:
    book = BookDigest(prices_frame([]))
    for venue in VENUES:
        book.update(venue, [r for r in rows if r["venue"] == venue])
    return book


def prices(rows: list[dict[str, Any]]) -> Collected:
    """A fresh quote frame, as the hot path builds one per evaluation (not timed)."""
    frame = pd.DataFrame(rows, columns=list(PRICE_COLUMNS))
    return Collected(frame, tuple(_status(SourceKind.MARKET, v, QUOTES_PER_VENUE)
                                  for v in VENUES))


def positions() -> Collected:
    rows = [{"venue": VENUES[i % 2], "account": "main", "instrument": f"S{i}/USDT:USDT",
             "base": f"S{i}", "quote": "USDT", "settle": "USDT", "position_side": "long",
             "contracts": 1.5 * i, "contract_size": 1.0, "quantity": 1.5 * i,
             "entry_price": 100.0 + i, "mark_price": 101.0 + i, "notional": 150.0 * i,
             "unrealized_pnl": 1.5 * i, "realized_pnl": float("nan"), "leverage": 10.0,
             "liquidation_price": float("nan"), "margin_mode": "cross",
             "timestamp": pd.Timestamp(T0), "received_at": pd.Timestamp(T0)}
            for i in range(POSITIONS)]
    return Collected(pd.DataFrame(rows, columns=list(POSITION_COLUMNS)),
                     tuple(_status(SourceKind.EXCHANGE, v, POSITIONS // 2) for v in VENUES))


def balances() -> Collected:
    rows = [{"source_type": "exchange", "venue": v, "account": "main", "asset": "USDT",
             "free": 1e6, "used": 1e5, "total": 1.1e6, "timestamp": pd.Timestamp(T0),
             "received_at": pd.Timestamp(T0)} for v in VENUES]
    rows += [{"source_type": "custodian", "venue": "fireblocks", "account": "0", "asset": a,
              "free": 10.0, "used": 0.0, "total": 10.0, "timestamp": pd.Timestamp(T0),
              "received_at": pd.Timestamp(T0)} for a in ("BTC", "ETH", "USDT_ERC20")]
    return Collected(pd.DataFrame(rows, columns=list(BALANCE_COLUMNS)), (
        *(_status(SourceKind.EXCHANGE, v, 1) for v in VENUES),
        _status(SourceKind.CUSTODIAN, "fireblocks", 3)))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), pct(values, 0.99), max(values)


class Stage:
    """Times one call of the writer from its start to its wake-up after the commit."""

    def __init__(self) -> None:
        self.start = (0.0, 0.0)
        self.done = (0.0, 0.0)

    def begin(self) -> None:
        self.start = (time.perf_counter(), time.thread_time())

    def committed(self) -> None:  # the writer's ``wake``: called right after the commit
        self.done = (time.perf_counter(), time.thread_time())

    def elapsed(self) -> tuple[float, float]:
        return ((self.done[0] - self.start[0]) * 1000, (self.done[1] - self.start[1]) * 1000)


#: ``--profile``: cProfile of what "added, measured directly" times (context + version row)
PROFILE: cProfile.Profile | None = None


def timed(fn: Callable[[], Any], *, profiled: bool = False) -> tuple[Any, float, float]:
    profile = PROFILE if profiled else None
    if profile is not None:
        profile.enable()
    wall, cpu = time.perf_counter(), time.thread_time()
    out = fn()
    wall, cpu = (time.perf_counter() - wall) * 1000, (time.thread_time() - cpu) * 1000
    if profile is not None:
        profile.disable()
    return out, wall, cpu


def one_run(url: str, n: int, run: int) -> dict[str, list[float]]:
    import dagster as dg

    rng = np.random.default_rng(run)
    storage = Storage.open(url)
    rows = quote_rows(rng)
    held_positions, held_balances = positions(), balances()
    base = {"source": "service", "instance_id": "bench", "limit_config_version": "cfg-v1",
            "code_version": "git:bench"}
    out: dict[str, list[float]] = {}

    def add(label: str, wall: float, cpu: float) -> None:
        out.setdefault(label, []).append(wall)
        out.setdefault(f"{label} cpu", []).append(cpu)

    stage = Stage()
    raised: list[Sequence[Notification]] = [()]  # the last commit's notifications
    writer = AlertWriter(storage, policy=AlertPolicy, persist_interval_s=3600.0,
                         wake=stage.committed,
                         after_commit=lambda _context, notes: raised.__setitem__(0, notes))

    def commit(context: dict[str, Any], scope: str, status: str,
               at: datetime) -> tuple[float, float]:
        result = make_result(status, at, scope=scope)
        change = Change(result=result, trigger="tick", decided_at=time.perf_counter(),
                        detail={})
        stage.begin()
        writer._write_changes({result.fingerprint: [change]},  # the writer's own stage
                              {result.fingerprint: context})
        return stage.elapsed()

    # the version row, timed where the writer's transaction makes it (the bench's own wrappers
    # around the production functions; restored below): built (its JSON encoded) by
    # ``pending``, then written by the seal's own statement on PostgreSQL (the insert inside
    # that statement is in "commit with", not here) or by a statement of its own (``write``)
    row_write: list[tuple[float, float]] = []
    originals = (audit_lineage.pending, audit_lineage.write)

    def timing(fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed_fn(*args: Any, **kwargs: Any) -> Any:
            out, wall, cpu = timed(lambda: fn(*args, **kwargs), profiled=True)
            row_write.append((wall, cpu))
            return out
        return timed_fn

    audit_lineage.pending = timing(originals[0])  # type: ignore[assignment]
    audit_lineage.write = timing(originals[1])  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as home, dg.DagsterInstance.local_temp(home) as instance:
        lineage = HotPathLineage(DagsterCatalog(instance, "http://dagster.example"))
        book = new_book(rows)

        def context_of(report: Any) -> dict[str, Any]:
            """What the full evaluation runs for lineage: the book's hashes read (under its
            lock in the service), the quotes' versions composed, then the context."""
            versions = book.view().versions(report.snapshot.prices)
            if versions is not None:
                adopt_versions(report.snapshot.prices, versions)
            return lineage.context(report)

        try:
            for i in range(n):
                out.setdefault("per tick: book hash (us)", []).append(move_one(rows, rng, book))
                report = SimpleNamespace(config_version="cfg-v1", snapshot=RiskSnapshot(
                    positions=held_positions, balances=held_balances, prices=prices(rows),
                    now=T0))
                at = T0 + timedelta(seconds=i)
                status = "WARN" if (i // SERIES) % 2 == 0 else "OK"
                order = ("with", "without") if i % 2 == 0 else ("without", "with")
                for variant in order:
                    if variant == "with":
                        fields, c_wall, c_cpu = timed(lambda r=report: context_of(r),
                                                      profiled=True)
                        context = {**base, **fields}
                    else:
                        context, c_wall, c_cpu = dict(base), 0.0, 0.0
                    wall, cpu = commit(context, f"{variant}-{i % SERIES}", status, at)
                    add(f"commit {variant}", wall, cpu)
                    add(f"stage {variant}", c_wall + wall, c_cpu + cpu)
                    if variant == "with":
                        add("context", c_wall, c_cpu)
                        with_context, with_notes = context, raised[0]
                        r_wall = sum(w for w, _ in row_write)
                        r_cpu = sum(c for _, c in row_write)
                        row_write.clear()
                        add("version row write", r_wall, r_cpu)
                        # what lineage itself runs on the stage, timed directly (not a
                        # difference of two noisy figures): the hash + the row write
                        add("added, measured directly", c_wall + r_wall, c_cpu + r_cpu)
                move_one(rows, rng, book)  # new content too: nothing of the last one reused
                fresh = SimpleNamespace(config_version="cfg-v1", snapshot=RiskSnapshot(
                    positions=positions(), balances=balances(), prices=prices(rows), now=T0))
                _, wall, cpu = timed(lambda r=fresh: context_of(r))
                add("context after a poll", wall, cpu)
                out.setdefault("report to Dagster", []).append(timed(
                    lambda c=with_context, ns=with_notes: lineage.after_commit(c, ns))[1])
        finally:
            audit_lineage.pending, audit_lineage.write = originals  # type: ignore[assignment]
            storage.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("-n", type=int, default=300, help="alerting evaluations per run")
    parser.add_argument("--sqlite", action="store_true", help="SQLite store, not PostgreSQL")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile what 'added, measured directly' times, print the top")
    args = parser.parse_args()
    global PROFILE
    PROFILE = cProfile.Profile() if args.profile else None
    configure_logging("WARNING")
    load_before = os.getloadavg()
    runs: list[dict[str, list[float]]] = []
    for run in range(args.runs):
        if args.sqlite:
            with tempfile.TemporaryDirectory() as directory:
                runs.append(one_run(f"sqlite:///{directory}/bench.db", args.n, run))
        else:
            url = create_database("rm_bench_lineage")
            try:
                runs.append(one_run(url, args.n, run))
            finally:
                drop_database(url)
    load_after = os.getloadavg()
    backend = "sqlite" if args.sqlite else "postgresql"
    print(f"backend {backend}, {args.runs} run(s) x {args.n} alerting evaluations; "
          f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    for label in runs[0]:
        per_run = [summary(r[label]) for r in runs]
        cells = "  ".join(f"{p50:7.3f} / {p99:7.3f} / {mx:7.3f}" for p50, p99, mx in per_run)
        print(f"{label:<26} p50 / p99 / max ms per run: {cells}")
    for title, with_, without in (("added, full evaluation", "stage with", "stage without"),
                                  ("added, per-tick alert", "commit with", "commit without")):
        for suffix in (" cpu", ""):
            added = [tuple(w - wo for w, wo in zip(summary(r[with_ + suffix]),
                                                   summary(r[without + suffix]), strict=True))
                     for r in runs]
            print(f"{title} ({suffix.strip() or 'wall'}) p50 / p99 / max ms per run: "
                  + "  ".join(f"{a:.3f} / {b:.3f} / {c:.3f}" for a, b, c in added))
    if PROFILE is not None:
        pstats.Stats(PROFILE).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
