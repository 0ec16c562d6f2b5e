"""Benchmark of the pure risk evaluation at 10k / 100k / 1M positions.

Run from the repository root: ``python bench/bench_risk_evaluation.py`` (optionally
``--sizes 10000 100000``). Prints one row per size: time of each stage (median of a few runs),
the per-order cost of the pre-trade check, and peak memory (tracemalloc, separate run so it does
not slow the timed ones). Synthetic desk: 4 venues, N/2000 accounts per venue, 500 perpetuals,
every (venue, account, instrument) one position; limits from risk_monitor/config/limits.yaml.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from risk_monitor.domain.engine import RiskSnapshot, evaluate, prepare
from risk_monitor.domain.exposures import exposure_table
from risk_monitor.domain.limits import evaluate_limits, load_limit_config
from risk_monitor.domain.model import (
    BALANCE_COLUMNS,
    POSITION_COLUMNS,
    PRICE_COLUMNS,
    Collected,
    SourceKind,
    SourceStatus,
)
from risk_monitor.domain.orders import OrderRequest, check_order

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
    received = pd.Timestamp(NOW - timedelta(seconds=2))
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
            "last": last, "mark": last, "timestamp": pd.Timestamp(NOW - timedelta(seconds=1)),
            "received_at": pd.Timestamp(NOW - timedelta(seconds=1)),
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


def stages(snap: RiskSnapshot, config: Any, repeat: int) -> dict[str, float]:
    """Median time of each stage, every repetition on a fresh state (no warm caches)."""
    runs: dict[str, list[float]] = {"prepare": [], "limits": [], "exposures": [], "evaluate": []}
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        state = prepare(snap, config)
        t1 = time.perf_counter()
        evaluate_limits(state, config)
        t2 = time.perf_counter()
        exposure_table(state)
        t3 = time.perf_counter()
        del state
        gc.collect()
        t4 = time.perf_counter()
        evaluate(snap, config)
        t5 = time.perf_counter()
        runs["prepare"].append(t1 - t0)
        runs["limits"].append(t2 - t1)
        runs["exposures"].append(t3 - t2)
        runs["evaluate"].append(t5 - t4)
    return {k: statistics.median(v) for k, v in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="*", default=[100, 10_000, 100_000, 1_000_000])
    parser.add_argument("--orders", type=int, default=200)
    args = parser.parse_args()
    document = yaml.safe_load(LIMITS_FILE.read_text())
    document["venues"] = [*VENUES, "fireblocks"]
    config = load_limit_config(document)
    header = (f"{'positions':>10} {'prepare':>9} {'limits':>9} {'exposures':>10} {'evaluate':>9} "
              f"{'results':>8} {'order_chk':>10} {'peak_MiB':>9}")
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        snap = build_snapshot(n)
        repeat = 5 if n <= 100_000 else 3
        t = stages(snap, config, repeat)
        report = evaluate(snap, config)
        venue_rows = report.position_pnl.iloc[: args.orders]
        orders = [
            OrderRequest(str(r.venue), str(r.account), str(r.instrument), "buy", 0.01)
            for r in venue_rows.itertuples()
        ]
        start = time.perf_counter()
        for order in orders:
            check_order(report, config, order, NOW)
        t_order = (time.perf_counter() - start) / len(orders)
        results = len(report.results)
        del report
        gc.collect()
        tracemalloc.start()
        evaluate(snap, config)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"{len(snap.positions.frame):>10,} {t['prepare'] * 1e3:>7.0f}ms "
              f"{t['limits'] * 1e3:>7.0f}ms {t['exposures'] * 1e3:>8.0f}ms "
              f"{t['evaluate'] * 1e3:>7.0f}ms {results:>8} "
              f"{t_order * 1e6:>8.0f}us {peak / 2**20:>9.0f}")


if __name__ == "__main__":
    main()
