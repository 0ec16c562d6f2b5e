"""What the lineage record adds to the hot path's evaluation -> committed-alert stage.

Run (PostgreSQL on 127.0.0.1, like the tests; also runs on SQLite)::

    RISK_MONITOR_LOG_LEVEL=WARNING python bench/bench_lineage.py            # 3 runs x 300
    RISK_MONITOR_LOG_LEVEL=WARNING python bench/bench_lineage.py --runs 1 -n 100

The hot path, per alerting evaluation, does what this times (``service/hot_path.py``):

* **hash** (``HotPathLineage.context``): content data versions of the evaluated inputs, per
  venue (``domain/lineage.py``), the evaluation's own version and id. A desk-sized snapshot:
  200 perpetual quotes on two venues (all ``PRICE_COLUMNS``), 60 positions, exchange and
  custodian balances. The quote frame is rebuilt on every evaluation (one tick moved), as the
  hot path rebuilds it, so quotes are always hashed again; positions and balances are the same
  objects between polls, so their versions come from the identity cache. ``hash after a poll``
  is the worst case: every dataset new (nothing cached);
* **commit**: ``application.raise_alerts`` under the alert store's lock with the audit seal, one
  WARN <-> OK transition of one series per evaluation, **with** the lineage fields in the
  alert context (bigger audit payload) and, interleaved on other series, **without** them.
  ``added`` = hash + (commit with - commit without), per percentile;
* **report** (off the critical path: after the commit and the outbox wake-up): the
  ``live_limit_status`` runless materialisation to a Dagster instance (SQLite, temporary),
  including the look-up of its storage id for the Slack link.

Every figure: p50 / p99 / max in ms over ``n`` evaluations, per run and the spread over runs;
process CPU per evaluation; peak RSS; the machine's load average before and after.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from risk_monitor import application
from risk_monitor.adapters.sql import Storage
from risk_monitor.dagster_catalog import DagsterCatalog
from risk_monitor.domain.alerts import AlertPolicy
from risk_monitor.domain.engine import RiskSnapshot
from risk_monitor.domain.model import (
    BALANCE_COLUMNS,
    POSITION_COLUMNS,
    PRICE_COLUMNS,
    Collected,
    SourceKind,
    SourceStatus,
)
from risk_monitor.lineage import HotPathLineage
from risk_monitor.platform.logging import configure_logging

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


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


def one_run(url: str, n: int, run: int) -> dict[str, list[float]]:
    import dagster as dg

    rng = np.random.default_rng(run)
    storage = Storage.open(url)
    rows = quote_rows(rng)
    held_positions, held_balances = positions(), balances()
    base = {"source": "service", "instance_id": "bench", "trigger": "tick",
            "limit_config_version": "cfg-v1", "code_version": "git:bench"}
    out: dict[str, list[float]] = {k: [] for k in (
        "hash", "hash cpu", "hash after a poll", "hash after a poll cpu", "commit with lineage",
        "commit with lineage cpu", "commit without", "commit without cpu", "report to Dagster")}
    policy = AlertPolicy()
    with tempfile.TemporaryDirectory() as home, dg.DagsterInstance.local_temp(home) as instance:
        lineage = HotPathLineage(DagsterCatalog(instance, "http://dagster.example"))
        try:
            for i in range(n):
                tick = rows[int(rng.integers(len(rows)))]
                tick["last"] = tick["mark"] = float(tick["last"]) * (1 + rng.normal(0, 1e-4))
                report = SimpleNamespace(config_version="cfg-v1", snapshot=RiskSnapshot(
                    positions=held_positions, balances=held_balances, prices=prices(rows),
                    now=T0))
                fields, wall, cpu = timed(lambda r=report: lineage.context(r))
                out["hash"].append(wall)
                out["hash cpu"].append(cpu)
                fresh = SimpleNamespace(config_version="cfg-v1", snapshot=RiskSnapshot(
                    positions=positions(), balances=balances(), prices=prices(rows), now=T0))
                _, wall, cpu = timed(lambda r=fresh: lineage.context(r))
                out["hash after a poll"].append(wall)
                out["hash after a poll cpu"].append(cpu)
                at = T0 + timedelta(seconds=i)
                status = "WARN" if (i // SERIES) % 2 == 0 else "OK"
                for label, context, scope in (
                        ("commit with lineage", {**base, **fields}, f"with-{i % SERIES}"),
                        ("commit without", base, f"without-{i % SERIES}")):
                    result = make_result(status, at, scope=scope)
                    raised, wall, cpu = timed(
                        lambda c=context, r=result, t=at: application.raise_alerts(
                            storage, [r], now=t, policy=policy, context=c))
                    out[label].append(wall)
                    out[f"{label} cpu"].append(cpu)
                    if label == "commit with lineage":
                        notes = raised.plan.notifications
                out["report to Dagster"].append(
                    timed(lambda c={**base, **fields}, ns=notes: lineage.after_commit(c, ns))[1])
        finally:
            storage.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("-n", type=int, default=300, help="alerting evaluations per run")
    parser.add_argument("--sqlite", action="store_true", help="SQLite store, not PostgreSQL")
    args = parser.parse_args()
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
        p99s = [p99 for _, p99, _ in per_run]
        print(f"{label:<22} p50 / p99 / max ms per run: {cells}   "
              f"p99 spread {min(p99s):.3f}-{max(p99s):.3f}")
    for suffix in ("", " cpu"):
        added = []
        for r in runs:
            with_ = summary(r["commit with lineage" + suffix])
            without = summary(r["commit without" + suffix])
            hashed = summary(r["hash" + suffix])
            added.append(tuple(h + w - wo
                               for h, w, wo in zip(hashed, with_, without, strict=True)))
        print(f"added{suffix or ' wall'} (hash + commit with - commit without), p50 / p99 / max "
              "ms per run: " + "  ".join(f"{a:.3f} / {b:.3f} / {c:.3f}" for a, b, c in added))


if __name__ == "__main__":
    main()
