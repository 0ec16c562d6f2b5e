"""Trading-flow benchmarks: CheckOrder latency under a desk's order rate, and fill → alert.

1. ``checkorder``: the real gRPC server (grpc.aio, in process) answering ``CheckOrder`` from a
   live evaluation (the hand-computed desk of the unit tests, 5 limits) with the trading-state
   gate, paced at ``--rate`` orders/s. Reports the server-side time (the provider's
   ``check_order`` inside the servicer, what the goal "p99 <= 2 ms at the server" is about) and
   the client round trip over loopback.
2. ``fill``: the real service with private streams on (simulators, PostgreSQL, Redis, Slack
   simulator); a market order on the Binance simulator pushes the BTC position over its 1M
   notional limit, the next one back under it. Each crossing is one Slack post; measured from
   the order's send time to the Slack simulator receiving the post (goal: p99 < 1 s).

Each part runs ``--runs`` times; prints p50 / p99 / max per run, process CPU, max RSS and the
machine's load average (1 min) before and after.

    python bench/bench_trading.py checkorder --rate 200 --seconds 10 --runs 3
    python bench/bench_trading.py fill --samples 10 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(name: str, values_ms: list[float]) -> str:
    return (f"{name}: n={len(values_ms)} p50={statistics.median(values_ms):.3f} ms "
            f"p99={pct(values_ms, 0.99):.3f} ms max={max(values_ms):.3f} ms")


def machine() -> str:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (f"cpu={usage.ru_utime + usage.ru_stime:.1f}s rss_max={usage.ru_maxrss / 1024:.0f}MB "
            f"load1={os.getloadavg()[0]:.2f}")


# -- CheckOrder ---------------------------------------------------------------------------------
async def checkorder_run(rate: float, seconds: float) -> tuple[list[float], list[float]]:
    import grpc

    from risk_monitor.domain.trading_state import GLOBAL, ManualState, TradingState
    from risk_monitor.platform.settings import TradingSettings
    from risk_monitor.service.grpc_server import (
        GrpcServer,
        HealthServicer,
        RiskMonitorServicer,
    )
    from risk_monitor.service.proto import risk_monitor_pb2 as pb
    from risk_monitor.service.proto import risk_monitor_pb2_grpc as pb_grpc
    from risk_monitor.service.state import LiveEvaluation
    from risk_monitor.service.trading import TradingControl
    from risk_monitor_tests.unit.domain.builders import NOW, config, desk

    live = LiveEvaluation(max_age_s=60)
    live.set_limit_config(config(
        {"id": "btc", "kind": "max_notional", "scope": {"venue": "binance",
                                                          "instrument": "BTC/USDT:USDT"},
         "warn": 800000, "breach": 1000000},
        {"id": "inst", "kind": "max_notional", "scope": {"venue": "*", "instrument": "*"},
         "breach": 2_000_000},
        {"id": "gross", "kind": "gross_exposure", "breach": 40_000_000},
        {"id": "net", "kind": "net_exposure", "breach": 35_000_000},
        {"id": "loss", "kind": "daily_loss", "breach": 5_000_000},
        venues=["binance", "okx", "fireblocks"]))
    live.evaluate(desk(start_of_day_equity=2_600_000, peak_equity=2_700_000))
    control = TradingControl(TradingSettings(), None, inputs=live.latest_inputs,
                             venues=["binance", "okx"])
    control._manual[GLOBAL] = ManualState(TradingState.REDUCING, "bench", "")  # gate in play
    live.trading = control
    server_ms: list[float] = []
    inner = live.check_order

    def timed(order: Any, now: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return inner(order, now)
        finally:
            server_ms.append((time.perf_counter() - t0) * 1000)

    live.check_order = timed  # type: ignore[method-assign]
    servicer = RiskMonitorServicer(live, clock=lambda: NOW, trading=control)
    server = GrpcServer(servicer, HealthServicer(), host="127.0.0.1", port=0)
    port = await server.start()
    client_ms: list[float] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.RiskMonitorStub(channel)
        await stub.CheckOrder(pb.CheckOrderRequest(venue="binance", instrument="BTC/USDT:USDT",
                                                   side=pb.SIDE_SELL, quantity=0.1))
        server_ms.clear()
        interval = 1.0 / rate
        start = time.perf_counter()
        pending = []

        async def one(i: int) -> None:
            t0 = time.perf_counter()
            await stub.CheckOrder(pb.CheckOrderRequest(
                venue="binance" if i % 2 else "okx", instrument="BTC/USDT:USDT",
                side=pb.SIDE_SELL if i % 3 else pb.SIDE_BUY, quantity=0.1 + (i % 7) / 10,
                client_order_id=f"b{i}"))
            client_ms.append((time.perf_counter() - t0) * 1000)

        for i in range(int(rate * seconds)):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.ensure_future(one(i)))
        await asyncio.gather(*pending)
    await server.stop(0)
    return server_ms, client_ms


def checkorder(args: argparse.Namespace) -> None:
    from risk_monitor.platform.logging import configure_logging

    configure_logging("WARNING")  # one INFO line per check is the service's default
    print(f"CheckOrder at {args.rate:g} orders/s for {args.seconds:g}s; {machine()}")
    for run in range(1, args.runs + 1):
        server_ms, client_ms = asyncio.run(checkorder_run(args.rate, args.seconds))
        print(f"run {run}: {summary('server', server_ms)}; {summary('client rtt', client_ms)}; "
              f"{machine()}")


# -- fill -> alert ------------------------------------------------------------------------------
async def _market(stack: Any, side: str, qty: float) -> float:
    """Send one market order; returns the wall time just before it was sent (the client is
    ready and its markets loaded by then, so only the order and its fill are timed)."""
    from risk_monitor_tests.fixtures.sims import ccxt_client

    exchange = ccxt_client(stack, "binance", "async")
    try:
        await exchange.load_markets()
        sent = time.time()
        await exchange.create_order("BTC/USDT:USDT", "market", side, qty)
        return sent
    finally:
        await exchange.close()


#: order sent -> the private stream's position update reached the service (upper bound: polled)
streamed: list[float] = []


def fill_run(samples: int) -> list[float]:
    from risk_monitor.platform.logging import configure_logging
    from risk_monitor_tests.fixtures.hot_path import BTC_LIMIT, running_rig
    from risk_monitor_tests.fixtures.service import wait_until
    from risk_monitor_tests.fixtures.services import REDIS_TEST_URL, create_database, drop_database

    configure_logging("WARNING")
    os.environ["RISK_MONITOR_TRADING__PRIVATE_STREAMS"] = "true"
    url = create_database("rm_bench_fill")
    delays: list[float] = []
    streamed.clear()
    try:
        with tempfile.TemporaryDirectory() as tmp, running_rig(
                database_url=url, redis_url=REDIS_TEST_URL,
                prefix=f"bench:{uuid.uuid4().hex[:6]}", tmp=Path(tmp),
                service={"positions_poll_s": 30.0}) as rig:
            app = rig.service.app
            assert app is not None
            wait_until(lambda: app.private_streams is not None
                       and app.private_streams.hub.alive("binance"), timeout=60,
                       message="stream up")
            hub = app.private_streams.hub  # type: ignore[union-attr]
            for i in range(samples):
                seen = len(rig.notices(BTC_LIMIT))
                version = hub.version
                sent = asyncio.run(_market(rig.stack, "buy" if i % 2 == 0 else "sell", 8.0))
                def moved(before: int = version) -> bool:
                    return bool(hub.version > before)

                wait_until(moved, timeout=60, message="stream update", interval=0.005)
                streamed.append((time.time() - sent) * 1000)
                def arrived(before: int = seen) -> list[dict[str, Any]] | None:
                    found = rig.notices(BTC_LIMIT)
                    return found if len(found) > before else None

                notices = wait_until(arrived, timeout=60, message="notice")
                delays.append((notices[seen]["received_at"] - sent) * 1000)
                wait_until(rig.outbox_idle, timeout=60, message="outbox idle")
    finally:
        drop_database(url)
    return delays


def fill(args: argparse.Namespace) -> None:
    print(f"fill -> Slack, {args.samples} crossings per run; {machine()}")
    for run in range(1, args.runs + 1):
        delays = fill_run(args.samples)
        print(f"run {run}: {summary('order sent -> Slack received', delays)}; "
              f"{summary('order sent -> stream update in the service', streamed)}; "
              f"{machine()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    c = sub.add_parser("checkorder")
    c.add_argument("--rate", type=float, default=200.0)
    c.add_argument("--seconds", type=float, default=10.0)
    c.add_argument("--runs", type=int, default=3)
    f = sub.add_parser("fill")
    f.add_argument("--samples", type=int, default=10)
    f.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    checkorder(args) if args.part == "checkorder" else fill(args)


if __name__ == "__main__":
    main()
