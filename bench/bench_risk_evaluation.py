"""Benchmark of the full risk evaluation at 10k / 100k / 1M positions, as the service pays it.

Run from the repository root: ``python bench/bench_risk_evaluation.py`` (optionally
``--sizes 10000 100000``, ``--runs 3``, ``--repeat 7``). One *evaluation* is what a poll or a
heartbeat costs: validate the collected frames against the dataset schemas at ``now``
(positions, exchange and custodian balances, quotes; then the combined balances, as
``adapters.collection`` does), build the :class:`RiskSnapshot`, then ``engine.evaluate``
(P&L, equity, exposures, every limit). Synthetic desk: 4 venues, N/2000 accounts per venue,
500 perpetuals, every (venue, account, instrument) one position; limits from
risk_monitor/config/limits.yaml (5,523 results). Fresh copies of the input frames for every
evaluation, so no cache from a previous one helps.

Each size runs in ``--runs`` separate processes (default 3) with ``--repeat`` timed
evaluations each; it prints wall p50 / p99 / max over all of them, the CPU time of an
evaluation (``process_time``: what a busy machine distorts least), the stage medians, the
spread of the per-run medians, peak RSS of the process (``ru_maxrss``; beside it the peak while
the synthetic inputs were built), the RSS held before an evaluation (snapshot + fresh input
copies, after ``malloc_trim``) and the evaluation's own added peak over it (``VmHWM`` after a
``clear_refs`` reset, worst of the evaluations), and the 1-minute load average before / after. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from risk_monitor.domain.engine import RiskSnapshot, evaluate
from risk_monitor.domain.limits import load_limit_config
from risk_monitor.domain.model import (
    BALANCE_COLUMNS,
    POSITION_COLUMNS,
    PRICE_COLUMNS,
    Collected,
    SourceKind,
    SourceStatus,
)
from risk_monitor.domain.orders import OrderRequest, check_order
from risk_monitor.domain.schemas import (
    balance_rules,
    concat_frames,
    position_rules,
    price_rules,
    validate_frame,
)

NOW = datetime(2025, 10, 20, 12, 0, tzinfo=UTC)
VENUES = ("binance", "okx", "bybit", "deribit")
INSTRUMENTS = 500
LIMITS_FILE = Path(__file__).resolve().parent.parent / "risk_monitor" / "config" / "limits.yaml"


def build_snapshot(n: int, seed: int = 7) -> RiskSnapshot:
    rng = np.random.default_rng(seed)
    per_venue = max(1, n // len(VENUES))
    accounts = max(1, per_venue // INSTRUMENTS)
    instruments = min(INSTRUMENTS, per_venue)
    bases = np.array([f"C{i:04d}" for i in range(instruments)], dtype=object)
    base_price = rng.uniform(1, 50_000, instruments)
    venue = np.repeat(np.array(VENUES, dtype=object), accounts * instruments)
    account = np.tile(np.repeat(np.array([f"a{i}" for i in range(accounts)], dtype=object), instruments), len(VENUES))
    inst_idx = np.tile(np.arange(instruments), accounts * len(VENUES))
    size = len(venue)
    base = bases[inst_idx]
    symbol = np.array([f"{b}/USDT:USDT" for b in bases], dtype=object)[inst_idx]
    mark = base_price[inst_idx] * rng.uniform(0.99, 1.01, size)
    qty = rng.normal(0, 1, size) * 1000 / mark
    entry = mark * rng.uniform(0.9, 1.1, size)
    received = pd.Timestamp(NOW - timedelta(seconds=2)).as_unit("ns")
    positions = pd.DataFrame(
        {
            "venue": venue, "account": account, "instrument": symbol, "base": base,
            "quote": "USDT", "settle": "USDT",
            "position_side": np.where(qty >= 0, "long", "short"),
            "contracts": np.abs(qty), "contract_size": 1.0, "quantity": qty,
            "entry_price": entry, "mark_price": mark, "notional": np.abs(qty) * mark,
            "unrealized_pnl": (mark - entry) * qty, "realized_pnl": 0.0, "leverage": 5.0,
            "liquidation_price": np.where(qty >= 0, mark * 0.7, mark * 1.3), "margin_mode": "cross",
            "timestamp": received, "received_at": received,
        },
        columns=list(POSITION_COLUMNS),
    )
    q_venue = np.repeat(np.array(VENUES, dtype=object), instruments)
    q_inst = np.tile(np.arange(instruments), len(VENUES))
    last = base_price[q_inst]
    prices = pd.DataFrame(
        {
            "venue": q_venue, "instrument": np.array([f"{b}/USDT:USDT" for b in bases], dtype=object)[q_inst],
            "base": bases[q_inst], "quote": "USDT", "bid": last * 0.9999, "ask": last * 1.0001,
            "last": last, "mark": last,
            "timestamp": pd.Timestamp(NOW - timedelta(seconds=1)).as_unit("ns"),
            "received_at": pd.Timestamp(NOW - timedelta(seconds=1)).as_unit("ns"),
        },
        columns=list(PRICE_COLUMNS),
    )
    b_rows: list[dict[str, Any]] = []
    for v in VENUES:
        for a in range(accounts):
            b_rows.append({"source_type": "exchange", "venue": v, "account": f"a{a}", "asset": "USDT",
                           "free": 1e6, "used": 0.0, "total": 1e6, "timestamp": received, "received_at": received})
    for vault in range(10):
        for b in bases[:50]:
            b_rows.append({"source_type": "custodian", "venue": "fireblocks", "account": f"v{vault}", "asset": b,
                           "free": 10.0, "used": 0.0, "total": 10.0, "timestamp": received, "received_at": received})
    balances = pd.DataFrame(b_rows, columns=list(BALANCE_COLUMNS))
    ex = tuple(SourceStatus(SourceKind.EXCHANGE, v, f"a{a}", True, NOW) for v in VENUES for a in range(accounts))
    cu = tuple(SourceStatus(SourceKind.CUSTODIAN, "fireblocks", f"v{i}", True, NOW) for i in range(10))
    md = tuple(SourceStatus(SourceKind.MARKET, v, "", True, NOW) for v in VENUES)
    return RiskSnapshot(
        positions=Collected(positions, ex), balances=Collected(balances, ex + cu),
        prices=Collected(prices, md), now=NOW, start_of_day_equity=None, peak_equity=None,
        max_age_s=60.0, max_future_skew_s=5.0,
    )


MAX_AGE_S = 60.0
SKEW_S = 5.0


def fresh_inputs(snap: RiskSnapshot) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame,
                                              pd.DataFrame]:
    """New frames for one evaluation (positions, exchange + custodian balances, quotes)."""
    balances = snap.balances.frame
    custody = balances["source_type"].to_numpy() == "custodian"
    return (snap.positions.frame.copy(deep=True), balances[~custody].reset_index(drop=True),
            balances[custody].reset_index(drop=True), snap.prices.frame.copy(deep=True))


def validate_and_snapshot(snap: RiskSnapshot, inputs: tuple[pd.DataFrame, ...]) -> RiskSnapshot:
    """What collection + snapshot building cost: every frame checked against its schema at
    ``now`` (time rules included), the balance parts combined and checked again."""
    positions, exchange, custody, prices = inputs
    now = snap.now
    positions = validate_frame(positions, position_rules(now=now, max_age_s=MAX_AGE_S,
                                                          max_future_skew_s=SKEW_S),
                               source="bench")
    positions = validate_frame(positions, position_rules(), source="all")
    parts = [validate_frame(part, balance_rules(now=now, max_age_s=MAX_AGE_S,
                                                 max_future_skew_s=SKEW_S), source="bench")
             for part in (exchange, custody)]
    balances = validate_frame(concat_frames(parts, BALANCE_COLUMNS), balance_rules(),
                              source="all")
    prices = validate_frame(prices, price_rules(now=now, max_age_s=MAX_AGE_S,
                                                 max_future_skew_s=SKEW_S), source="bench")
    return RiskSnapshot(
        positions=Collected(positions, snap.positions.sources),
        balances=Collected(balances, snap.balances.sources),
        prices=Collected(prices, snap.prices.sources), now=now,
        max_age_s=MAX_AGE_S, max_future_skew_s=SKEW_S,
    )


def _status_mib(field: str) -> float:
    """A VmRSS / VmHWM figure of this process from /proc (MiB; NaN where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _settle_memory() -> float:
    """Collect garbage, hand freed heap back to the OS and reset the peak-RSS mark (Linux:
    ``clear_refs`` 5), so the next VmHWM is the peak of what runs after; returns VmRSS."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_mib("VmRSS")


def one_run(n: int, repeat: int, orders: int) -> dict[str, Any]:
    """Timed evaluations of one size in this process."""
    document = yaml.safe_load(LIMITS_FILE.read_text())
    document["venues"] = [*VENUES, "fireblocks"]
    config = load_limit_config(document)
    snap = build_snapshot(n)
    inputs_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    evaluate(validate_and_snapshot(snap, fresh_inputs(snap)), config)  # warm-up (imports)
    totals: list[float] = []
    cpu: list[float] = []
    stages: dict[str, list[float]] = {"validate_snapshot": [], "evaluate": []}
    results = 0
    report = None
    added: list[float] = []
    held: list[float] = []
    for _ in range(repeat):
        del report
        inputs = fresh_inputs(snap)
        base_rss = _settle_memory()
        held.append(base_rss)
        c0, t0 = time.process_time(), time.perf_counter()
        built = validate_and_snapshot(snap, inputs)
        t1 = time.perf_counter()
        report = evaluate(built, config)
        t2, c2 = time.perf_counter(), time.process_time()
        added.append(_status_mib("VmHWM") - base_rss)
        del built, inputs
        totals.append(t2 - t0)
        cpu.append(c2 - c0)
        stages["validate_snapshot"].append(t1 - t0)
        stages["evaluate"].append(t2 - t1)
        results = len(report.results)
    assert report is not None
    picked = report.position_pnl.iloc[:orders]
    requests = [OrderRequest(str(r.venue), str(r.account), str(r.instrument), "buy", 0.01)
                for r in picked.itertuples()]
    started = time.perf_counter()
    for order in requests:
        check_order(report, config, order, NOW)
    per_order = (time.perf_counter() - started) / max(1, len(requests))
    return {
        "positions": len(snap.positions.frame), "results": results, "totals": totals,
        "cpu": cpu,
        "stages": {k: statistics.median(v) for k, v in stages.items()},
        "order_s": per_order,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "inputs_rss_mib": inputs_rss,
        "held_rss_mib": statistics.median(held),
        "added_peak_mib": max(added),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=3, help="separate processes per size")
    parser.add_argument("--repeat", type=int, default=7, help="timed evaluations per run")
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(one_run(args.child, args.repeat, args.orders)))
        return
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    header = (f"{'positions':>10} {'results':>8} {'p50':>8} {'p99':>8} {'max':>8} "
              f"{'CPU p50':>8} {'CPU max':>8} {'valid+snap':>10} {'evaluate':>9} {'run p50s':>22} "
              f"{'order':>8} "
              f"{'peak RSS':>9} {'(inputs)':>9} {'held':>7} {'eval +':>7}")
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        runs = []
        for _ in range(args.runs):
            out = subprocess.run([sys.executable, __file__, "--child", str(n), "--repeat",
                                  str(args.repeat), "--orders", str(args.orders)],
                                 check=True, capture_output=True, text=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        totals = [t for r in runs for t in r["totals"]]
        cpu = [c for r in runs for c in r["cpu"]]
        medians = " / ".join(f"{statistics.median(r['totals']) * 1e3:.0f}" for r in runs)
        stage = {k: statistics.median([r["stages"][k] for r in runs]) for k in runs[0]["stages"]}
        print(f"{runs[0]['positions']:>10,} {runs[0]['results']:>8} "
              f"{percentile(totals, 0.5) * 1e3:>6.0f}ms {percentile(totals, 0.99) * 1e3:>6.0f}ms "
              f"{max(totals) * 1e3:>6.0f}ms {percentile(cpu, 0.5) * 1e3:>6.0f}ms "
              f"{max(cpu) * 1e3:>6.0f}ms {stage['validate_snapshot'] * 1e3:>8.0f}ms "
              f"{stage['evaluate'] * 1e3:>7.0f}ms {medians + ' ms':>22} "
              f"{statistics.median([r['order_s'] for r in runs]) * 1e6:>6.0f}us "
              f"{max(r['peak_rss_mib'] for r in runs):>7.0f}MiB "
              f"{max(r['inputs_rss_mib'] for r in runs):>7.0f}MiB "
              f"{max(r['held_rss_mib'] for r in runs):>5.0f}MiB "
              f"{max(r['added_peak_mib'] for r in runs):>5.0f}MiB")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
