"""CheckOrder latency while a desk sends 200 orders/s (goal: p99 ≤ 2 ms at the server).

The real service runs in this process on its own loop thread (``running_rig``: simulators,
PostgreSQL, Redis, hot path on live positions), exactly as the hot-path tests run it. A gRPC
client in a separate process sends ``CheckOrder`` requests open loop at ``--rate`` per second
(each at its scheduled time, whether or not earlier answers are back), alternating buys and
sells of 0.01-0.5 BTC on binance and okx, for ``--seconds``, ``--runs`` times.

Reported per run:
- ``handler``: the server time the goal is about: the servicer's ``CheckOrder`` from the request
  decoded to the answer built (validation, the hop to the CheckOrder threads, the decision, the
  audit log line and the recent-orders record), without gRPC framing;
- ``check``: the provider's ``check_order`` alone, wall and the thread's own CPU time (CPU time
  is what load distorts least: wall includes waits for the interpreter lock and for a core);
- the client round trip over loopback (an upper bound of the server's share), the achieved rate,
  the service process's CPU share and RSS, and the load average before and after (the run shares
  2 cores with whatever else runs).

This is the one CheckOrder benchmark (``bench_trading.py`` measures fill -> alert).

Run from the repository root (needs PostgreSQL and Redis on 127.0.0.1, like the tests)::

    python bench/bench_check_order.py --rate 200 --seconds 10 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from risk_monitor.platform.logging import configure_logging  # noqa: E402
from risk_monitor.service.proto import risk_monitor_pb2 as pb  # noqa: E402
from risk_monitor.service.proto import risk_monitor_pb2_grpc as pb_grpc  # noqa: E402
from risk_monitor_tests.fixtures.hot_path import running_rig  # noqa: E402
from risk_monitor_tests.fixtures.services import (  # noqa: E402
    REDIS_TEST_URL,
    create_database,
    drop_database,
)

BTC = "BTC/USDT:USDT"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def timed(fn: Callable[..., Any], sink: list[float], cpu_sink: list[float],
          lock: threading.Lock) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started, cpu_started = time.perf_counter(), time.thread_time()
        answer = fn(*args, **kwargs)
        elapsed = time.perf_counter() - started
        cpu = time.thread_time() - cpu_started
        if answer is not None:  # check_order_now's None: decided by check_order, timed there
            with lock:
                sink.append(elapsed)
                cpu_sink.append(cpu)
        return answer

    return wrapper


def timed_handler(sink: list[float], cpu_sink: list[float]) -> None:
    """Time the servicer's CheckOrder (patched on the class before the service builds it).
    Its thread CPU time is the handler's own when it decided on the loop without suspending
    (the in-memory path); a suspended call adds whatever else the loop ran meanwhile."""
    from risk_monitor.service.grpc_server import RiskMonitorServicer

    inner = RiskMonitorServicer.CheckOrder

    async def CheckOrder(self: Any, request: Any, context: Any) -> Any:
        started, cpu_started = time.perf_counter(), time.thread_time()
        try:
            return await inner(self, request, context)
        finally:
            sink.append(time.perf_counter() - started)
            cpu_sink.append(time.thread_time() - cpu_started)

    RiskMonitorServicer.CheckOrder = CheckOrder  # type: ignore[method-assign]


def ms(values: list[float], label: str) -> str:
    if not values:
        return f"{label} n=0"
    return (f"{label} p50 {pct(values, 0.5) * 1000:.3f} ms p99 {pct(values, 0.99) * 1000:.3f} "
            f"ms max {max(values) * 1000:.3f} ms")


def request(n: int) -> pb.CheckOrderRequest:
    venue = "binance" if n % 2 == 0 else "okx"
    side = pb.SIDE_BUY if n % 3 else pb.SIDE_SELL
    return pb.CheckOrderRequest(venue=venue, account="main", instrument=BTC, side=side,
                                quantity=0.01 + (n % 50) / 100.0,
                                client_order_id=f"bench{n:07d}")


async def one_run(target: str, rate: float, seconds: float) -> tuple[list[float], int, float]:
    """Open-loop load; returns (client round trips, errors, achieved rate)."""
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.RiskMonitorStub(channel)
        await stub.CheckOrder(request(0), timeout=10)  # connection up before the clock starts

        async def send(n: int) -> None:
            nonlocal errors
            started = time.perf_counter()
            try:
                await stub.CheckOrder(request(n), timeout=10)
            except grpc.aio.AioRpcError:
                errors += 1
                return
            latencies.append(time.perf_counter() - started)

        total = int(rate * seconds)
        tasks = []
        begin = time.perf_counter()
        for n in range(total):
            delay = begin + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(send(n)))
        await asyncio.gather(*tasks)
        achieved = total / (time.perf_counter() - begin)
    return latencies, errors, achieved


def client_process(target: str, rate: float, seconds: float) -> tuple[list[float], int, float]:
    """The desk's load from a process of its own (no GIL shared with the service)."""
    return asyncio.run(one_run(target, rate, seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    configure_logging("WARNING")
    logging.getLogger().setLevel(logging.WARNING)
    database_url = create_database("rm_bench_check")
    server_times: list[float] = []
    cpu_times: list[float] = []
    handler_times: list[float] = []
    handler_cpu: list[float] = []
    lock = threading.Lock()
    timed_handler(handler_times, handler_cpu)
    try:
        with tempfile.TemporaryDirectory() as tmp, running_rig(
                database_url=database_url, redis_url=REDIS_TEST_URL,
                prefix=f"bench-{uuid.uuid4().hex[:6]}", tmp=Path(tmp),
                scenario="limit_breach") as rig:
            app = rig.service.app
            assert app is not None and app.provider is not None
            provider = app.provider
            for name in ("check_order", "check_order_now"):  # the servicer asks the latter
                if hasattr(provider, name):  # first when the provider has it
                    setattr(provider, name, timed(getattr(provider, name), server_times,
                                                  cpu_times, lock))
            target = rig.service.grpc_target
            print(f"CheckOrder at {args.rate:g}/s for {args.seconds:g} s x {args.runs} runs "
                  f"(service in-process, loopback gRPC)")
            for run in range(1, args.runs + 1):
                with lock:
                    server_times.clear()
                    cpu_times.clear()
                handler_times.clear()
                handler_cpu.clear()
                load_before = os.getloadavg()
                cpu_before = time.process_time()
                wall_before = time.perf_counter()
                with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) \
                        as pool:
                    client, errors, achieved = pool.submit(
                        client_process, target, args.rate, args.seconds).result()
                cpu = (time.process_time() - cpu_before) / (time.perf_counter() - wall_before)
                load_after = os.getloadavg()
                with lock:
                    server, check_cpu = list(server_times), list(cpu_times)
                handler = list(handler_times)
                rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                print(f"run {run}: {len(client)} answers, {errors} errors, {achieved:.0f}/s; "
                      f"{ms(handler, 'handler')}; {ms(list(handler_cpu), 'handler CPU')}; "
                      f"{ms(server, 'check wall')}; "
                      f"{ms(check_cpu, 'check CPU')}; {ms(client, 'round trip')}; "
                      f"CPU {cpu:.0%} of a core, RSS {rss_mb:.0f} MB; load "
                      f"{load_before[0]:.2f} -> {load_after[0]:.2f}")
                if handler:
                    print(f"        handler mean {statistics.fmean(handler) * 1000:.3f} ms; "
                          f"check CPU mean {statistics.fmean(check_cpu) * 1e6:.0f} us; goal "
                          f"p99 <= 2 ms at the server: wall "
                          f"{'met' if pct(handler, 0.99) <= 0.002 else 'NOT met'}, CPU "
                          f"{'met' if pct(handler_cpu, 0.99) <= 0.002 else 'NOT met'} (wall "
                          f"includes waits for a core: judge it near-idle)")
    finally:
        drop_database(database_url)


if __name__ == "__main__":
    main()
