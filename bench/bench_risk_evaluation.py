"""Benchmark of the full risk evaluation at 10k / 100k / 1M positions, as the service pays it.

Run from the repository root: ``python bench/bench_risk_evaluation.py`` (optionally
``--sizes 10000 100000``, ``--runs 3``, ``--repeat 7``). One *evaluation* is what a poll or a
heartbeat costs: validate the collected frames against the dataset schemas at ``now``
(positions, exchange and custodian balances, quotes; then the combined balances, as
``adapters.collection`` does), build the :class:`RiskSnapshot`, then ``engine.evaluate``
(P&L, equity, exposures, every limit). Synthetic desk: 4 venues, N/2000 accounts per venue,
500 perpetuals, every (venue, account, instrument) one position; limits from
risk_monitor/config/limits.yaml (5,523 results). The input frames are generated anew before
every evaluation (untimed), so no cache from a previous one helps, and the process holds one
set at a time, shaped as collection hands them on: the positions' id columns as Categoricals
(``frame_rules.categorize``: sorted categories, int8 / int16 codes), the small balances and
quotes frames with object string columns whose rows share one str per distinct value, float64
columns, UTC timestamps.

Each size runs in ``--runs`` separate processes (default 3) with ``--repeat`` timed
evaluations each; it prints wall p50 / p99 / max over all of them, the CPU time of an
evaluation (``process_time``: what a busy machine distorts least), the stage medians, the
spread of the per-run medians, peak RSS of the process (``ru_maxrss``: input generation,
every evaluation and the pre-trade checks on the last report, all of it; beside it the peak
while the synthetic inputs were first built), the RSS held before an evaluation (the input frames,
after ``malloc_trim``) and the evaluation's own added peak over it (``VmHWM`` after a
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
from risk_monitor.domain.valuation import float_block, frame_of

NOW = datetime(2025, 10, 20, 12, 0, tzinfo=UTC)
VENUES = ("binance", "okx", "bybit", "deribit")
INSTRUMENTS = 500
LIMITS_FILE = Path(__file__).resolve().parent.parent / "risk_monitor" / "config" / "limits.yaml"


def _objects(values: list[str], codes: np.ndarray) -> np.ndarray:
    """An object column whose rows share one str object per distinct value, as a frame built
    from collected rows holds them (ids from settings, ccxt's market symbols, literals)."""
    return np.array(values, dtype=object)[codes]


def _keys(values: list[str], codes: np.ndarray) -> pd.Categorical:
    """What ``frame_rules.categorize`` makes of ``_objects(values, codes)`` (the key columns
    collection hands on: sorted categories, the narrowest codes), built without the 8 MB
    object column: the synthetic generation must not be the process's peak."""
    order = np.argsort(np.array(values, dtype=object))
    rank = np.empty(len(order), dtype=np.int8 if len(order) < 127 else np.int16)
    rank[order] = np.arange(len(order))
    return pd.Categorical.from_codes(rank[codes], categories=pd.Index(
        [values[i] for i in order], dtype=object))


def build_inputs(n: int, seed: int = 7) -> RiskSnapshot:
    """The collected frames of a synthetic desk of ``n`` positions (unvalidated).

    Built column by column into one float block, like a collection that appends per-source
    rows: no second copy of a 1M-row frame ever exists while it is built."""
    rng = np.random.default_rng(seed)
    per_venue = max(1, n // len(VENUES))
    accounts = max(1, per_venue // INSTRUMENTS)
    instruments = min(INSTRUMENTS, per_venue)
    bases = [f"C{i:04d}" for i in range(instruments)]
    symbols = [f"{b}/USDT:USDT" for b in bases]
    base_price = rng.uniform(1, 50_000, instruments)
    rows = len(VENUES) * accounts * instruments
    inst_idx = np.tile(np.arange(instruments, dtype=np.int32), accounts * len(VENUES))
    venue_idx = np.repeat(np.arange(len(VENUES), dtype=np.int32), accounts * instruments)
    account_idx = np.tile(np.repeat(np.arange(accounts, dtype=np.int32), instruments),
                          len(VENUES))
    received = pd.Timestamp(NOW - timedelta(seconds=2)).as_unit("ns")
    floats_ = ("contracts", "contract_size", "quantity", "entry_price", "mark_price", "notional",
               "unrealized_pnl", "realized_pnl", "leverage", "liquidation_price")
    col = float_block(floats_, rows)
    mark = col["mark_price"]
    np.multiply(base_price[inst_idx], rng.uniform(0.99, 1.01, rows), out=mark)
    qty = col["quantity"]
    np.divide(rng.normal(0, 1, rows) * 1000, mark, out=qty)
    np.multiply(mark, rng.uniform(0.9, 1.1, rows), out=col["entry_price"])
    np.abs(qty, out=col["contracts"])
    col["contract_size"].fill(1.0)
    np.multiply(col["contracts"], mark, out=col["notional"])
    np.subtract(mark, col["entry_price"], out=col["unrealized_pnl"])
    np.multiply(col["unrealized_pnl"], qty, out=col["unrealized_pnl"])
    col["realized_pnl"].fill(0.0)
    col["leverage"].fill(5.0)
    long = qty >= 0
    np.multiply(mark, np.where(long, 0.7, 1.3), out=col["liquidation_price"])
    times = pd.DatetimeIndex(np.full(rows, received.value, dtype=np.int64)
                             .view("datetime64[ns]")).tz_localize("UTC")
    positions = frame_of(  # as collection hands them on: key columns as Categoricals
        {
            "venue": _keys(list(VENUES), venue_idx),
            "account": _keys([f"a{i}" for i in range(accounts)], account_idx),
            "instrument": _keys(symbols, inst_idx),
            "base": _keys(bases, inst_idx),
            "quote": _keys(["USDT"], np.zeros(rows, dtype=np.int8)),
            "settle": _keys(["USDT"], np.zeros(rows, dtype=np.int8)),
            "position_side": _keys(["short", "long"], long.view(np.int8)),
            "margin_mode": _keys(["cross"], np.zeros(rows, dtype=np.int8)),
            **col, "timestamp": times, "received_at": times,
        },
        POSITION_COLUMNS,
    )
    del long, venue_idx, account_idx, inst_idx
    q_venue = np.repeat(np.arange(len(VENUES)), instruments)
    q_inst = np.tile(np.arange(instruments), len(VENUES))
    last = base_price[q_inst]
    quoted = pd.Timestamp(NOW - timedelta(seconds=1)).as_unit("ns")
    prices = pd.DataFrame(
        {
            "venue": _objects(list(VENUES), q_venue), "instrument": _objects(symbols, q_inst),
            "base": _objects(bases, q_inst), "quote": "USDT", "bid": last * 0.9999,
            "ask": last * 1.0001, "last": last, "mark": last,
            "timestamp": quoted, "received_at": quoted,
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
        max_age_s=MAX_AGE_S, max_future_skew_s=SKEW_S,
    )


MAX_AGE_S = 60.0
SKEW_S = 5.0


def validate_and_snapshot(collected: RiskSnapshot) -> RiskSnapshot:
    """What collection + snapshot building cost: every frame checked against its schema at
    ``now`` (time rules included), the balance parts (exchange, custodian) combined and
    checked again, as ``adapters.collection`` does."""
    now = collected.now
    positions = validate_frame(collected.positions.frame,
                               position_rules(now=now, max_age_s=MAX_AGE_S,
                                              max_future_skew_s=SKEW_S), source="bench")
    positions = validate_frame(positions, position_rules(), source="all")
    balances = collected.balances.frame
    custody = balances["source_type"].to_numpy() == "custodian"
    parts = [validate_frame(part.reset_index(drop=True),
                            balance_rules(now=now, max_age_s=MAX_AGE_S, max_future_skew_s=SKEW_S),
                            source="bench")
             for part in (balances[~custody], balances[custody])]
    balances = validate_frame(concat_frames(parts, BALANCE_COLUMNS), balance_rules(),
                              source="all")
    prices = validate_frame(collected.prices.frame,
                            price_rules(now=now, max_age_s=MAX_AGE_S, max_future_skew_s=SKEW_S),
                            source="bench")
    return RiskSnapshot(
        positions=Collected(positions, collected.positions.sources),
        balances=Collected(balances, collected.balances.sources),
        prices=Collected(prices, collected.prices.sources), now=now,
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
    collected = build_inputs(n)
    inputs_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    positions = len(collected.positions.frame)
    evaluate(validate_and_snapshot(collected), config)  # warm-up (imports)
    totals: list[float] = []
    cpu: list[float] = []
    stages: dict[str, list[float]] = {"validate_snapshot": [], "evaluate": []}
    results = 0
    report = None
    added: list[float] = []
    held: list[float] = []
    for _ in range(repeat):
        del report, collected
        _settle_memory()
        collected = build_inputs(n)  # new frames: no cache from a previous evaluation helps
        base_rss = _settle_memory()
        held.append(base_rss)
        c0, t0 = time.process_time(), time.perf_counter()
        built = validate_and_snapshot(collected)
        t1 = time.perf_counter()
        report = evaluate(built, config)
        report.exposures  # noqa: B018 -- built on first read: timed, as the docstring says
        t2, c2 = time.perf_counter(), time.process_time()
        added.append(_status_mib("VmHWM") - base_rss)
        del built
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
        "positions": positions, "results": results, "totals": totals,
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
