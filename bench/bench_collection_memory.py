"""Peak memory of collecting positions (``adapters.collection.collect_positions``) at desk scale.

Each source (an exchange account: 4 venues, 500 instruments an account) hands over its frame as
an adapter does: object key columns sharing one str per distinct value, built when fetched.
Collection validates each frame, categorises, concatenates and validates the whole. Reported per
size, over separate processes: the tracemalloc peak of ``collect`` (Python and numpy
allocations), the peak RSS it adds (``VmHWM`` reset before it via ``/proc/self/clear_refs``), the
wall time of an untraced run, and a digest of the output (columns, dtypes, categories, values),
which must not change with the implementation.

    python bench/bench_collection_memory.py --sizes 200000 1000000 --runs 3
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from risk_monitor.adapters.collection import collect_positions
from risk_monitor.domain.model import POSITION_COLUMNS
from risk_monitor.platform.settings import MarketDataSettings

NOW = datetime(2025, 10, 20, 12, 0, tzinfo=UTC)
VENUES = ("binance", "okx", "bybit", "deribit")
INSTRUMENTS = 500


class Account:
    """An exchange account whose positions frame is built when fetched (``ports``)."""

    def __init__(self, venue: str, account: str, rows: int, seed: int) -> None:
        self.venue, self.account, self.rows, self.seed = venue, account, rows, seed
        self.endpoint_override: str | None = None

    def fetch_positions(self) -> pd.DataFrame:
        rng = np.random.default_rng(self.seed)
        n = self.rows
        bases = [f"C{i:04d}" for i in range(n)]
        mark = rng.uniform(1, 50_000, n)
        qty = rng.normal(0, 1, n) * 1000 / mark
        entry = mark * rng.uniform(0.9, 1.1, n)
        at = pd.Timestamp(NOW - timedelta(seconds=2)).as_unit("ns")
        usdt = "USDT"
        return pd.DataFrame({
            "venue": np.full(n, self.venue, dtype=object),
            "account": np.full(n, self.account, dtype=object),
            "instrument": np.array([f"{b}/USDT:USDT" for b in bases], dtype=object),
            "base": np.array(bases, dtype=object),
            "quote": np.full(n, usdt, dtype=object), "settle": np.full(n, usdt, dtype=object),
            "position_side": np.where(qty >= 0, "long", "short").astype(object),
            "margin_mode": np.full(n, "cross", dtype=object),
            "contracts": np.abs(qty), "contract_size": np.ones(n), "quantity": qty,
            "entry_price": entry, "mark_price": mark, "notional": np.abs(qty) * mark,
            "unrealized_pnl": (mark - entry) * qty, "realized_pnl": np.zeros(n),
            "leverage": np.full(n, 5.0), "liquidation_price": mark * np.where(qty >= 0, 0.7, 1.3),
            "timestamp": at, "received_at": at,
        }, columns=list(POSITION_COLUMNS))

    def fetch_balances(self) -> pd.DataFrame:
        raise NotImplementedError


def accounts(n: int) -> list[Account]:
    per_venue = max(1, n // len(VENUES))
    count = max(1, per_venue // INSTRUMENTS)
    rows = min(INSTRUMENTS, per_venue)
    return [Account(v, f"a{i}", rows, seed=j * 100_000 + i)
            for j, v in enumerate(VENUES) for i in range(count)]


def digest(frame: pd.DataFrame) -> str:
    h = hashlib.sha256(json.dumps([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    for name in frame.columns:
        series = frame[name]
        if isinstance(series.dtype, pd.CategoricalDtype):
            h.update(np.asarray(series.cat.codes).tobytes())
            h.update(str(series.cat.codes.dtype).encode())
            h.update("\x1f".join(series.cat.categories).encode())
        else:
            h.update(pd.util.hash_pandas_object(series, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(n: int) -> dict[str, Any]:
    settings = MarketDataSettings()
    sources = accounts(n)
    clock: Callable[[], datetime] = lambda: NOW  # noqa: E731
    collect_positions(accounts(1000), settings, clock)  # warm-up: imports, caches
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    base = _status_mib("VmRSS")
    started = time.perf_counter()
    out = collect_positions(sources, settings, clock)
    wall = time.perf_counter() - started
    rss_added = _status_mib("VmHWM") - base
    rows, code = len(out.frame), digest(out.frame)
    assert all(s.ok for s in out.sources), [s for s in out.sources if not s.ok][:3]
    del out
    gc.collect()
    tracemalloc.start()
    out = collect_positions(sources, settings, clock)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"rows": rows, "sources": len(sources), "digest": code, "wall_s": wall,
            "rss_added_mib": rss_added, "traced_peak_mib": peak / 2**20,
            "frame_mib": out.frame.memory_usage(deep=False).sum() / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[200_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=3, help="separate processes per size")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    print(f"loadavg {Path('/proc/loadavg').read_text().split()[:3]}")
    for n in args.sizes:
        runs = [json.loads(subprocess.run([sys.executable, __file__, "--child", str(n)],
                                          check=True, capture_output=True, text=True).stdout)
                for _ in range(args.runs)]
        first = runs[0]
        print(f"{first['rows']:>8} rows {first['sources']:>5} sources  "
              f"traced peak {statistics.median(r['traced_peak_mib'] for r in runs):6.0f} MiB "
              f"(range {min(r['traced_peak_mib'] for r in runs):.0f}-"
              f"{max(r['traced_peak_mib'] for r in runs):.0f})  "
              f"rss added {statistics.median(r['rss_added_mib'] for r in runs):6.0f} MiB "
              f"(range {min(r['rss_added_mib'] for r in runs):.0f}-"
              f"{max(r['rss_added_mib'] for r in runs):.0f})  "
              f"wall {statistics.median(r['wall_s'] for r in runs):.2f} s  "
              f"frame {first['frame_mib']:.0f} MiB  digest {first['digest']}"
              f"{'' if len({r['digest'] for r in runs}) == 1 else ' (DIGESTS DIFFER)'}")


if __name__ == "__main__":
    main()
