"""Benchmark: exchange tick → Slack alert through the Dagster sensor path, stage by stage.

Run from the repository root (needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379)::

    python bench/bench_sensor_path.py                      # 10 crossings, live market
    python bench/bench_sensor_path.py -n 20 --market quiet # only our own ticks

It starts everything the production sensor path uses, the way production runs it: Dagster on
PostgreSQL (``deploy/postgres/dagster.yaml``, a throwaway database), our store on PostgreSQL
(another throwaway database), Redis (a key prefix of the bench's own), the simulators of the
``limit_breach`` scenario (Binance, OKX, Fireblocks, Slack; limits from the packaged file, no
configuration service), the market stream (``risk-monitor stream``) and ``dagster-daemon run``
(code location ``-m risk_monitor.definitions``) as subprocesses. The ccxt rate limiter stays on
(production setting; ``--no-rate-limit`` to compare). The once-a-minute ``risk_cycle`` schedule
is stopped first, so every measured run is the sensor's.

Then N times it moves the BTC price on every venue so the ``binance_btc_notional`` limit
crosses its warn level (78 000 → 82 000 USD: 78 % → 82 % of the breach level, and back), and
follows that one tick: exchange event time → stored in the Redis stream → run requested by the
sensor tick → run started → Slack simulator received the alert → ``risk_alerts`` step done.
It prints p50 / p95 / max per stage, the per-step durations of the measured runs, and cleans up
every process, database and Redis key it made.

``--market live`` (default) runs the simulated clock in real time, so prices tick every
second and the sensor finds new quotes on every loop: a crossing lands at a random point of the
run cycle and waits for the run in flight, as it would on a real desk (a run requested just
*before* the tick can still read it: "stored -> run requested" is then negative).
``--market quiet`` freezes the clock and moves the price only when no run is in flight (at a
random point of the sensor daemon's 5 s loop): the only ticks are ours, which shows the floor
of the path. The other instruments get a tiny move with each crossing so that their quotes stay
fresh (a quote older than ``max_age_s`` would make its limits UNKNOWN and alert).

Not a test: it asserts nothing about timings; it exits 1 when an expected alert never came.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import psycopg2
import redis
import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG_ADMIN_DSN = os.environ.get("RISK_MONITOR_BENCH_PG_DSN",
                              "host=127.0.0.1 port=5432 dbname=postgres user=postgres")
PG_URL_BASE = os.environ.get("RISK_MONITOR_BENCH_PG_URL_BASE",
                             "postgresql+psycopg2://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("RISK_MONITOR_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

SYMBOL = "BTC/USDT:USDT"
LIMIT_ID = "binance_btc_notional"
CONTRACTS = 10  # 10 BTC long on binance: notional = 10 x price, warn 800k, breach 1M
PRICE_OK = 78_000.0  # 78 % of the breach level: OK
PRICE_WARN = 82_000.0  # 82 %: WARN
IN_FLIGHT = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED")
COLLECTION_STEPS = ("market_prices", "exchange_positions", "exchange_balances",
                    "custodian_balances")


# --- processes and throwaway resources --------------------------------------------------------
def _admin() -> Any:
    conn = psycopg2.connect(PG_ADMIN_DSN, connect_timeout=5)
    conn.autocommit = True
    return conn


def create_database(prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = _admin()
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return f"{PG_URL_BASE}/{name}"


def drop_database(url: str) -> None:
    conn = _admin()
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    conn.close()


def delete_prefix(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def start(cmd: Sequence[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """A subprocess in a session of its own, so stopping it stops its children too."""
    log = log_path.open("wb")
    try:
        return subprocess.Popen(list(cmd), cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):  # children left in the group
        os.killpg(proc.pid, signal.SIGKILL)


def wait_for(what: str, check: Callable[[], Any], timeout_s: float,
             procs: Sequence[subprocess.Popen[bytes]] = (), interval_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited ({proc.returncode}) waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout_s:.0f} s")
        time.sleep(interval_s)


# --- measurement ----------------------------------------------------------------------------------
@dataclass
class Crossing:
    """One price move and where its tick was at each stage (epoch seconds)."""

    price: float
    moved: float
    exchange: float | None = None
    stored: float | None = None
    requested: float | None = None
    started: float | None = None
    slack: float | None = None
    alerts_done: float | None = None
    run_end: float | None = None
    run_id: str | None = None
    kind: str | None = None
    events: int | None = None
    event_types: dict[str, int] = field(default_factory=dict)
    steps: dict[str, float] = field(default_factory=dict)
    note: str = ""


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return float(value)


def _run_id_of(message: dict[str, Any]) -> str | None:
    for block in message.get("blocks") or []:
        for element in block.get("elements") or []:
            url = str(element.get("url") or "")
            if "/runs/" in url:
                return url.rsplit("/runs/", 1)[1].split("?", 1)[0]
    return None


def _payload(message: dict[str, Any]) -> dict[str, Any]:
    metadata = (message.get("params") or {}).get("metadata") or {}
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    payload = metadata.get("event_payload") or {}
    return payload if isinstance(payload, dict) else {}


def alert_after(slack: Any, since: float) -> dict[str, Any] | None:
    """The first Slack post about our limit received at or after ``since``."""
    for message in list(slack.messages):
        if message["received_at"] >= since and _payload(message).get("limit_id") == LIMIT_ID:
            return dict(message)
    return None


def tick_of(client: redis.Redis, key: str, price: float, since: float) -> tuple[float, float] | None:
    """(exchange event time, stored time) of the first streamed BTC quote at ``price``."""
    start_id = f"{int(since * 1000) - 1000}-0"
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]],
                   client.xrange(key, min=start_id, max="+"))
    for entry_id, fields in entries:
        data = {k.decode(): v.decode() for k, v in fields.items()}
        if data.get("instrument") != SYMBOL or not data.get("last"):
            continue
        if math.isclose(float(data["last"]), price, rel_tol=0.002):
            stored_ms = int(entry_id.decode().split("-", 1)[0])
            return int(data["ts"]) / 1000.0, stored_ms / 1000.0
    return None


def in_flight(instance: Any) -> list[Any]:
    import dagster as dg

    statuses = [dg.DagsterRunStatus[s] for s in IN_FLIGHT]
    return list(instance.get_run_records(dg.RunsFilter(statuses=statuses), limit=5))


def run_ended(instance: Any, run_id: str) -> bool:
    record = instance.get_run_record_by_id(run_id)
    return record is not None and record.end_time is not None


def fill_from_run(instance: Any, crossing: Crossing) -> None:
    assert crossing.run_id is not None
    record = instance.get_run_record_by_id(crossing.run_id)
    if record is None:
        crossing.note = "run not found"
        return
    crossing.requested = _epoch(record.create_timestamp)
    crossing.started = _epoch(record.start_time)
    crossing.run_end = _epoch(record.end_time)
    logs = instance.all_logs(crossing.run_id)
    crossing.events = len(logs)
    for entry in logs:
        kind = entry.dagster_event.event_type_value if entry.dagster_event else "LOG_MESSAGE"
        crossing.event_types[kind] = crossing.event_types.get(kind, 0) + 1
    for stat in instance.get_run_step_stats(crossing.run_id):
        if stat.start_time is not None and stat.end_time is not None:
            crossing.steps[stat.step_key] = stat.end_time - stat.start_time
            if stat.step_key == "risk_alerts":
                crossing.alerts_done = stat.end_time
    if record.dagster_run.status.value != "SUCCESS":
        crossing.note = f"run {record.dagster_run.status.value}"
    trigger = record.dagster_run.tags.get("risk_monitor/trigger", "?")
    if trigger != "market_data":
        crossing.note = (crossing.note + f" trigger={trigger}").strip()


# --- report -------------------------------------------------------------------------------------
def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[k]


def _row(label: str, values: list[float]) -> str:
    if not values:
        return f"  {label:<40} {'n/a':>8}"
    return (f"  {label:<40} {statistics.median(values):8.2f} {_pct(values, 0.95):8.2f} "
            f"{max(values):8.2f} {min(values):8.2f}  (n={len(values)})")


def report(crossings: list[Crossing], market: str) -> None:
    done = [c for c in crossings if c.slack is not None]

    def delta(a: str, b: str) -> list[float]:
        out = []
        for c in done:
            x, y = getattr(c, a), getattr(c, b)
            if x is not None and y is not None:
                out.append(y - x)
        return out

    print(f"\nTick -> Slack through the sensor path: {len(done)}/{len(crossings)} crossings "
          f"alerted, market={market}, seconds")
    print(f"  {'stage':<40} {'p50':>8} {'p95':>8} {'max':>8} {'min':>8}")
    print(_row("price moved -> exchange tick", delta("moved", "exchange")))
    print(_row("exchange tick -> stored in Redis stream", delta("exchange", "stored")))
    print(_row("stored -> run requested (sensor tick)", delta("stored", "requested")))
    print(_row("run requested -> run started (launch)", delta("requested", "started")))
    print(_row("run started -> Slack received", delta("started", "slack")))
    print(_row("Slack received -> risk_alerts done", delta("slack", "alerts_done")))
    print(_row("TOTAL exchange tick -> Slack received", delta("exchange", "slack")))
    print(_row("TOTAL exchange tick -> risk_alerts done", delta("exchange", "alerts_done")))
    print(_row("run duration (started -> ended)", delta("started", "run_end")))
    steps: dict[str, list[float]] = {}
    for c in done:
        for key, seconds in c.steps.items():
            steps.setdefault(key, []).append(seconds)
    if steps:
        print("\nPer step of the measured runs (seconds)")
        print(f"  {'step':<40} {'p50':>8} {'p95':>8} {'max':>8} {'min':>8}")
        for key in sorted(steps, key=lambda k: -statistics.median(steps[k])):
            print(_row(key, steps[key]))
        events = [float(c.events) for c in done if c.events is not None]
        print(_row("events per run (count)", events))
        last = done[-1].event_types
        print("  events of the last run by type: " + ", ".join(
            f"{k} {v}" for k, v in sorted(last.items(), key=lambda kv: -kv[1])))
    print("\nPer crossing")
    for n, c in enumerate(crossings, 1):
        print(f"  {n:2d} price={c.price:>8.0f} kind={c.kind or '-':<9} "
              f"stored={_since(c, c.stored)} requested={_since(c, c.requested)} "
              f"started={_since(c, c.started)} slack={_since(c, c.slack)} "
              f"alerts_done={_since(c, c.alerts_done)} {c.note}")


def _since(c: Crossing, value: float | None) -> str:
    return "    -" if value is None or c.exchange is None else f"{value - c.exchange:5.2f}"


# --- the bench ----------------------------------------------------------------------------------
def settings_document(stack: Any, *, tmp: Path, store_url: str, prefix: str,
                      rate_limit: bool = True) -> dict[str, Any]:
    """The simulators' settings, on our store, Redis prefix and data dir; the ccxt rate limiter
    as in production (the simulators' own document turns it off for speed)."""
    doc: dict[str, Any] = stack.settings_document()
    doc["venues"] = [{**v, "enable_rate_limit": rate_limit} for v in doc.get("venues", [])]
    doc.update({
        "environment": "bench",
        "data_dir": str(tmp / "data"),
        "database_url": store_url,
        "redis_url": REDIS_URL,
        "market_data": {"source": "redis", "key_prefix": f"{prefix}:md"},
        "service": {"registry_prefix": f"{prefix}:svc"},
    })
    return doc


def run_bench(args: argparse.Namespace) -> int:
    from risk_sim.launcher import SimulatorStack

    tmp = Path(tempfile.mkdtemp(prefix="rm-bench-sensor-"))
    prefix = f"rmbench:{uuid.uuid4().hex[:8]}"
    procs: list[subprocess.Popen[bytes]] = []
    databases: list[str] = []
    crossings: list[Crossing] = []
    stack = None
    saved_env = dict(os.environ)
    try:
        databases.append(dagster_url := create_database("rm_bench_dagster"))
        databases.append(store_url := create_database("rm_bench_store"))
        stack = SimulatorStack("limit_breach", clock="realtime" if args.market == "live"
                               else "manual", components=("binance", "okx", "fireblocks",
                                                          "slack"), control=False).start()
        stack.market.set_position("binance", "main", SYMBOL, side="long", contracts=CONTRACTS)
        stack.market.set_price(SYMBOL, PRICE_OK)

        home = tmp / "dagster_home"
        home.mkdir()
        shutil.copy(REPO / "deploy" / "postgres" / "dagster.yaml", home / "dagster.yaml")
        config = tmp / "risk-monitor.yaml"
        config.write_text(yaml.safe_dump(settings_document(
            stack, tmp=tmp, store_url=store_url, prefix=prefix,
            rate_limit=not args.no_rate_limit)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("RISK_MONITOR_")}
        env.update(stack.env())
        env.update({"RISK_MONITOR_CONFIG": str(config), "DAGSTER_HOME": str(home),
                    "RISK_MONITOR_DAGSTER_PG_URL": dagster_url,
                    "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"})
        os.environ.clear()
        os.environ.update(env)

        import dagster as dg

        from risk_monitor.adapters.redis_quotes import stream_key
        from risk_monitor.adapters.sql import Storage

        Storage.open(store_url).engine.dispose()  # migrate before any run races to
        instance = dg.DagsterInstance.get()  # creates Dagster's schema likewise
        print(f"bench: temp dir {tmp}; redis prefix {prefix}", flush=True)

        subprocess.run([str(BIN / "dagster"), "schedule", "stop", "risk_cycle_every_minute",
                        "-m", "risk_monitor.definitions"], cwd=REPO, env=env, check=True,
                       capture_output=True, timeout=120)
        procs.append(start([str(BIN / "risk-monitor"), "stream"], env, tmp / "stream.log"))
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        btc_key = stream_key(f"{prefix}:md", "binance")
        wait_for("quotes in Redis", lambda: all(client.xlen(stream_key(f"{prefix}:md", v))
                                               for v in ("binance", "okx")), 60, procs)
        procs.append(start([str(BIN / "dagster-daemon"), "run", "-m", "risk_monitor.definitions"],
                           env, tmp / "daemon.log"))

        def first_run_done() -> bool:
            runs = instance.get_run_records(dg.RunsFilter(job_name="risk_cycle"), limit=5)
            return any(r.dagster_run.status.value in ("SUCCESS", "FAILURE") for r in runs)

        print("bench: waiting for the first sensor-triggered run (warm-up)", flush=True)
        wait_for("first risk_cycle run", first_run_done, 180, procs, interval_s=0.5)
        time.sleep(1.0)

        assert stack.slack is not None
        rng = random.Random(args.seed)
        others = {symbol: float(stack.market.quote("binance", symbol).last)
                  for symbol in stack.market.instruments["binance"] if symbol != SYMBOL}
        for n in range(args.iterations):
            price = PRICE_WARN if n % 2 == 0 else PRICE_OK
            if args.market == "quiet":
                wait_for("no run in flight", lambda: not in_flight(instance), 120, procs, 0.2)
                time.sleep(rng.uniform(0.0, 5.0))  # anywhere in the sensor daemon's 5 s loop
                for symbol, level in others.items():  # keep every quote fresh (or it turns
                    stack.market.set_price(symbol, level * (1 + 1e-4 * (n % 2)))  # UNKNOWN)
            moved = time.time()
            stack.market.set_price(SYMBOL, price)
            crossing = Crossing(price=price, moved=moved)
            crossings.append(crossing)
            try:
                message = wait_for(f"Slack alert for crossing {n + 1}",
                                   functools.partial(alert_after, stack.slack, moved),
                                   args.timeout, procs, 0.02)
            except TimeoutError as exc:
                crossing.note = str(exc)
                print(f"bench: crossing {n + 1}: {exc}", flush=True)
                continue
            crossing.slack = float(message["received_at"])
            crossing.kind = str(_payload(message).get("kind"))
            crossing.run_id = _run_id_of(message)
            tick = tick_of(client, btc_key, price, moved)
            if tick is not None:
                crossing.exchange, crossing.stored = tick
            total = (crossing.slack - crossing.exchange) if crossing.exchange else float("nan")
            print(f"bench: crossing {n + 1}/{args.iterations} price {price:.0f}: "
                  f"tick -> Slack {total:.2f} s ({crossing.kind}) {crossing.note}", flush=True)
            if args.market == "live":  # the next tick lands anywhere in the run cycle
                time.sleep(rng.uniform(args.pause, args.pause + 12.0))
            else:
                time.sleep(args.pause)
        for crossing in crossings:
            if crossing.run_id:
                wait_for("the alerting run to finish",
                         functools.partial(run_ended, instance, crossing.run_id), 120, procs,
                         0.2)
                fill_from_run(instance, crossing)
        client.close()
    finally:
        for proc in reversed(procs):
            stop(proc)
        if stack is not None:
            stack.stop()
        os.environ.clear()
        os.environ.update(saved_env)
        for url in databases:
            try:
                drop_database(url)
            except psycopg2.Error as exc:
                print(f"bench: could not drop {url}: {exc}", file=sys.stderr)
        delete_prefix(prefix)
        if args.keep:
            print(f"bench: logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(crossings, args.market)
    return 0 if crossings and all(c.slack is not None for c in crossings) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--iterations", type=int, default=10,
                        help="price crossings to measure (default 10)")
    parser.add_argument("--market", choices=("live", "quiet"), default="live",
                        help="live: the simulated market ticks every second; quiet: only ours")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for each alert (default 60)")
    parser.add_argument("--pause", type=float, default=1.0,
                        help="seconds between crossings (default 1; live adds a random 0-12 s "
                             "so ticks land anywhere in the run cycle)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the live pauses")
    parser.add_argument("--no-rate-limit", action="store_true",
                        help="turn the ccxt rate limiter off (production keeps it on)")
    parser.add_argument("--keep", action="store_true", help="keep logs and settings (temp dir)")
    return run_bench(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
