"""Tick → Slack latency of the service's hot path, end to end through the real service.

A price move in the Binance simulator (one ``24hrMiniTicker`` on the websocket) pushes the BTC
position (10 BTC) across its 1M notional limit and back; each crossing is one Slack message
(FIRING BREACH, then RESOLVED) received by the Slack simulator. The path measured:
simulator → ccxt.pro websocket → quote book → per-tick decision (domain/incremental.py) → alert store
(PostgreSQL, under its lock) → outbox → dispatcher thread (woken) → slack-sdk → Slack simulator.
No Dagster run is involved.

Run from the repository root (needs PostgreSQL and Redis on 127.0.0.1, like the tests)::

    python bench/bench_hot_path_latency.py --samples 40
    python bench/bench_hot_path_latency.py --samples 40 --min-interval 0

Prints p50 / p95 / max of each segment: tick → detected (evaluation time of the result),
detected → enqueued (outbox row written), enqueued → Slack received, and tick → Slack.
Positions are polled every 5 s (the default), so price ticks are what trigger the evaluations.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from risk_monitor.platform.logging import configure_logging  # noqa: E402
from risk_monitor_tests.fixtures.hot_path import (  # noqa: E402
    BTC,
    BTC_LIMIT,
    HotPathRig,
    limits_document,
    running_rig,
    settle,
)
from risk_monitor_tests.fixtures.services import (  # noqa: E402
    REDIS_TEST_URL,
    create_database,
    drop_database,
)

BASE_PRICE = 60_000.0  # 10 BTC -> 600k, 60 % of the limit
BREACH_PRICE = 110_000.0  # 10 BTC -> 1.1M, 110 % of the limit


def wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.002)
    raise TimeoutError(f"not within {timeout}s: {what}")


def one_sample(rig: HotPathRig, price: float, seen: int) -> dict[str, float]:
    """Move the price, wait for the next Slack notice; the segments of its latency."""
    tick_at = time.time()
    rig.stack.market.set_price(BTC, price, venue="binance")
    notices = wait(lambda: (n := rig.notices()) and len(n) > seen and n, 30, "a Slack notice")
    notice = notices[seen]
    row = next(r for r, _ in rig.outbox(after_id=rig.baseline)
               if r.idempotency_key == notice["idempotency_key"])
    detected = row.detected_at.timestamp()
    enqueued = row.created_at.timestamp()
    received = float(notice["received_at"])
    return {"tick_to_detected": detected - tick_at, "detected_to_enqueued": enqueued - detected,
            "enqueued_to_slack": received - enqueued, "tick_to_slack": received - tick_at}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--min-interval", type=float, default=0.25,
                        help="service.evaluate_min_interval_s (default: the setting's default)")
    parser.add_argument("--redis-url", default=REDIS_TEST_URL)
    args = parser.parse_args()
    configure_logging("ERROR")
    logging.getLogger().setLevel(logging.ERROR)

    database_url = create_database("rm_bench")
    prefix = f"rmbench:{uuid.uuid4().hex[:8]}"
    samples: list[dict[str, float]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp, running_rig(
                database_url=database_url, redis_url=args.redis_url, prefix=prefix,
                tmp=Path(tmp), limits=limits_document(data_age=False),
                service={"positions_poll_s": 5.0, "custody_poll_s": 30.0,
                         "persist_interval_s": 5.0,
                         "evaluate_min_interval_s": args.min_interval}) as rig:
            settle(rig)
            for index in range(args.samples):
                price = BREACH_PRICE if index % 2 == 0 else BASE_PRICE
                samples.append(one_sample(rig, price, index))
                wait(rig.outbox_idle, 30, "outbox idle")
                time.sleep(max(0.05, args.min_interval))  # the next tick starts a fresh window
            statuses = [n["status"] for n in rig.notices()]
            assert statuses == ["BREACH", "OK"] * (args.samples // 2) + \
                ["BREACH"] * (args.samples % 2), statuses
    finally:
        drop_database(database_url)
        client = redis.Redis.from_url(args.redis_url)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()

    print(f"\nhot path, tick -> Slack message: {len(samples)} samples, "
          f"evaluate_min_interval_s={args.min_interval:g}, limit {BTC_LIMIT}\n")
    print(f"| {'segment':<22} | {'p50 ms':>8} | {'p95 ms':>8} | {'max ms':>8} |")
    print(f"|{'-' * 24}|{'-' * 10}|{'-' * 10}|{'-' * 10}|")
    for segment in ("tick_to_detected", "detected_to_enqueued", "enqueued_to_slack",
                    "tick_to_slack"):
        values = [s[segment] * 1000 for s in samples]
        print(f"| {segment:<22} | {statistics.median(values):>8.1f} | "
              f"{percentile(values, 0.95):>8.1f} | {max(values):>8.1f} |")


if __name__ == "__main__":
    main()
