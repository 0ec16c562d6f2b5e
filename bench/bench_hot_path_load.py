"""The hot path under a desk's load: 200 perpetuals on one Binance USDⓈ-M-style websocket.

Per run: the Binance REST simulator (200 instruments at 100 USDT, one 10,000-contract long per
instrument, i.e. 1M USDT each) starts in this process, and so does a minimal websocket publisher
speaking Binance's ``24hrMiniTicker`` (ccxt.pro's binanceusdm subscribes to it). The sink, the
Slack simulator, runs in a process of its own (``python -m risk_sim.slack``), as a real Slack is
another machine: in this process its receive time also waited for the interpreter behind the 1k
ticks/s publisher (GIL, event loop). Measured with a client stamping each post against the
simulator's ``received_at`` at 1k ticks/s: the same p50 (0.7-0.8 ms) either way, but p99 3-9 ms
beside the publisher against 2-3 ms in its own process (load ≈ 2), i.e. the tail of tick → Slack
was partly the bench's (``--sink-in-process`` restores that set-up for comparison). Both clocks are
this host's wall clock (``time.time()``), read by the publisher before it sends a tick and by the
simulator when it accepts a message. The publisher sends ``--rate`` ticks/s round-robin over the
200 instruments; instrument i's price is ``100 * (1 + 1% * sin(2π t / 40 s + 2π i / 200))``, so
each crosses its 1M notional breach level once per 20 s (10 status changes/s over the desk), and
the publisher logs every crossing itself (ground truth: the tick that crossed, its send time, the new status).
``risk-monitor serve`` runs as a child process on real PostgreSQL and Redis with its own
websocket feed. After a warm-up, a ``--seconds`` window is measured, then a drain.

Reported per rate (spread over ``--runs`` runs): tick → decision (outbox ``detected_at`` minus
the crossing tick's send time) and tick → Slack (Slack simulator receive time minus send time)
p50 / p99 / max, crossings missed (no Slack message by the end of the drain), not decided (no
compliance interval of the new status opened at or after the crossing tick) and late (> 1 s),
the service's CPU (% of one core over the window) and peak RSS, ticks actually published, the
machine's load average, and the publisher thread's own CPU (% of one core: on 2 cores it competes
with the system under test). ``bench_hot_path_floor.py`` reuses the rig, window and scoring here
with a minimal consumer in the service's place; the scoring and the table are
``hot_path_score.py``. Run from the repository root::

    python bench/bench_hot_path_load.py --rates 1000 2000 5000 10000 --runs 3 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import yaml
from websockets.asyncio.server import ServerConnection, broadcast, serve

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from risk_monitor_tests.fixtures.services import (  # noqa: E402
    REDIS_TEST_URL,
    create_database,
    drop_database,
)
from risk_sim.launcher import SLACK_TOKEN_ENV, SimulatorStack  # noqa: E402
from risk_sim.net import free_port  # noqa: E402
from risk_sim.scenario import load_scenario  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from hot_path_score import (  # noqa: E402
    HEADER,
    LIMIT_ID,
    RULE,
    Crossing,
    accepted_ticks,
    compliance_rows,
    outbox_rows,
    pct,
    score,
    service_metrics,
    stage_summary,
    table_row,
)

N = 200
PRICE = 100.0
CONTRACTS = 10_000
BREACH = 1_000_000.0
PERIOD_S = 40.0  # one sine period: two crossings, one every 20 s
AMPLITUDE = 0.01
#: the desk's limit. Every crossing is a page here: the alert noise controls are off for this
#: limit. With the defaults (``alerts.hysteresis`` 5 % of the level, ``keep_firing_for_s``
#: 120 s) a ±1 % oscillation around the level is exactly the flapping they exist to swallow:
#: the first BREACH of each instrument pages, its episode never resolves (the value never
#: gets 5 % below the level) and every later crossing is silently part of that one episode,
#: which the ground truth counted as ~60 % of crossings "missed" (issue 10 item 1).
LIMIT_RULE = {"kind": "max_notional", "scope": {"venue": "binance", "instrument": "*"},
              "breach": BREACH, "for_s": 0.0, "keep_firing_for_s": 0.0, "hysteresis": 0.0}
#: ``risk-monitor serve`` with thread stacks dumped on SIGUSR1 (diagnosis of a stall)
SERVE = ("import faulthandler, signal, sys; faulthandler.register(signal.SIGUSR1); "
         "sys.argv[0] = 'risk-monitor'; from risk_monitor.cli import cli; cli()")
LOG_LEVEL = os.environ.get("BENCH_LOG_LEVEL", "WARNING")


def names() -> list[str]:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return [f"ZZ{letters[i // 26]}{letters[i % 26]}" for i in range(N)]


def scenario_file(directory: Path) -> Path:
    instruments = {f"{n}/USDT:USDT": {"price": PRICE, "volatility": 0.0} for n in names()}
    positions = [{"symbol": f"{n}/USDT:USDT", "side": "long", "contracts": CONTRACTS,
                  "entry_price": PRICE} for n in names()]
    doc = {"name": "load", "description": "bench", "seed": 1, "step_seconds": 1.0,
           "instruments": instruments,
           "venues": {"binance": {"accounts": {"main": {
               "balances": {"USDT": 50_000_000}, "positions": positions}}}},
           "steps": [{"label": "steady", "duration": 3600}]}
    path = directory / "scenario.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@dataclass
class Publisher:
    """A minimal Binance USDⓈ-M market websocket: SUBSCRIBE acks and miniTicker events."""

    rate: float
    clients: set[ServerConnection] = field(default_factory=set)
    crossings: list[Crossing] = field(default_factory=list)
    sent: int = 0
    url: str = ""
    thread_id: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _ready: threading.Event = field(default_factory=threading.Event)

    def price(self, i: int, t: float) -> float:
        phase = 2 * math.pi * (t / PERIOD_S + i / N)
        return float(f"{PRICE * (1 + AMPLITUDE * math.sin(phase)):.6f}")

    async def _handler(self, ws: ServerConnection) -> None:
        async for message in ws:
            try:
                request = json.loads(message)
            except ValueError:
                continue
            if isinstance(request, dict) and "id" in request:
                await ws.send(json.dumps({"result": None, "id": request["id"]}))
                self.clients.add(ws)
        self.clients.discard(ws)

    def cpu_s(self) -> float:
        """CPU seconds of the publisher's thread so far (it shares the machine's cores with the
        system under test)."""
        fields = Path(f"/proc/self/task/{self.thread_id}/stat").read_text().rsplit(")", 1)[1]
        utime, stime = fields.split()[11:13]
        return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")

    async def _main(self) -> None:
        self.thread_id = threading.get_native_id()
        # no keepalive pings: a service starved of CPU on a loaded machine answers late, and a
        # dropped connection would measure the reconnect, not the hot path
        async with serve(self._handler, "127.0.0.1", 0, max_size=None,
                         ping_interval=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}"
            self._ready.set()
            ids = [f"{n}USDT" for n in names()]
            above = [False] * N
            t0 = time.time()
            while not self._stop.is_set():
                now = time.time()
                due = int((now - t0) * self.rate) - self.sent
                for _ in range(max(0, due)):
                    i = self.sent % N
                    price = self.price(i, now)
                    event = {"e": "24hrMiniTicker", "E": int(now * 1000), "s": ids[i],
                             "c": f"{price:.6f}", "o": "100", "h": "101", "l": "99",
                             "v": "1000", "q": "100000"}
                    if self.clients:
                        broadcast(self.clients, json.dumps(event, separators=(",", ":")))
                        is_above = CONTRACTS * price >= BREACH
                        if is_above != above[i]:
                            above[i] = is_above
                            self.crossings.append(Crossing(f"{names()[i]}/USDT:USDT", now,
                                                           "BREACH" if is_above else "OK"))
                    self.sent += 1
                await asyncio.sleep(0.001)

    def start(self) -> None:
        threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True).start()
        self._ready.wait(10)

    def stop(self) -> None:
        self._stop.set()


class SlackProcess:
    """The Slack simulator in a child process (``python -m risk_sim.slack``): the bench's sink."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "risk_sim.slack"], cwd=ROOT, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the Slack simulator process did not start")
        where = json.loads(line)
        self.url, self.api_base, self.token = where["url"], where["api_base"], where["token"]

    @property
    def messages(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/__admin/messages", timeout=60) as response:
            return list(json.loads(response.read()))

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()  # the simulator serves until its stdin closes
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def proc_stat(pid: int) -> tuple[float, float]:
    """(cpu seconds, rss MB) of a process from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return cpu, rss


def wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"not within {timeout}s: {what}")


@dataclass
class Rig:
    """What every system under test is fed and scored against: a fresh database, the
    publisher (and its ground truth), the Binance REST simulator and the Slack sink."""

    database_url: str
    prefix: str
    publisher: Publisher
    tmp: Path
    stack: SimulatorStack
    sink: SlackProcess | None

    def slack_messages(self) -> list[dict[str, Any]]:
        if self.sink is not None:
            return self.sink.messages
        return list(self.stack.slack.messages) if self.stack.slack is not None else []


@contextmanager
def rig(rate: float, redis_url: str, sink_in_process: bool = False) -> Iterator[Rig]:
    """Start the publisher, the simulators and a database; tear all of it down afterwards."""
    database_url = create_database("rm_load")
    prefix = f"rmload:{uuid.uuid4().hex[:8]}"
    publisher = Publisher(rate)
    publisher.start()
    sink: SlackProcess | None = None
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        stack = SimulatorStack(load_scenario(scenario_file(tmp)), clock="manual",
                               components=("binance", "slack") if sink_in_process
                               else ("binance",), control=False)
        stack.start()
        try:
            if not sink_in_process:
                sink = SlackProcess()
            yield Rig(database_url, prefix, publisher, tmp, stack, sink)
        finally:
            publisher.stop()
            stack.stop()
            if sink is not None:
                sink.stop()
            drop_database(database_url)
            client = redis.Redis.from_url(redis_url)
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()


@dataclass
class Window:
    """One measured window: its span, what was published, the process's CPU and peak RSS,
    the publisher's own CPU, and the ground-truth crossings inside it."""

    start: float
    end: float
    published: float
    cpu_s: float
    rss_peak: float
    publisher_cpu_pct: float
    truth: list[Crossing]


def measure(publisher: Publisher, pid: int, seconds: float) -> Window:
    """Watch process ``pid`` for ``seconds`` while the publisher runs."""
    cpu0, _ = proc_stat(pid)
    pub0 = publisher.cpu_s()
    start, sent0, crossed0 = time.time(), publisher.sent, len(publisher.crossings)
    rss_peak = 0.0
    while time.time() - start < seconds:
        time.sleep(1.0)
        rss_peak = max(rss_peak, proc_stat(pid)[1])
    end, sent1 = time.time(), publisher.sent
    cpu1, _ = proc_stat(pid)
    pub1 = publisher.cpu_s()
    truth = [c for c in publisher.crossings[crossed0:] if c.sent_at <= end]
    return Window(start, end, (sent1 - sent0) / (end - start), cpu1 - cpu0, rss_peak,
                  100.0 * (pub1 - pub0) / (end - start), truth)


def one_run(rate: float, seconds: float, drain_s: float, redis_url: str,
            durable: bool = True, sink_in_process: bool = False) -> dict[str, Any]:
    service: subprocess.Popen[bytes] | None = None
    with rig(rate, redis_url, sink_in_process) as r:
        tmp, publisher, sink = r.tmp, r.publisher, r.sink
        try:
            doc = r.stack.settings_document()
            env = {**os.environ, **r.stack.env()}
            if sink is not None:
                doc["slack"] = {"token_env": SLACK_TOKEN_ENV, "base_url": sink.api_base}
                env[SLACK_TOKEN_ENV] = sink.token
            for venue in doc["venues"]:
                venue["ws_endpoint_override"] = publisher.url
                venue["timeout_ms"] = 10_000
            (tmp / "limits.yaml").write_text(yaml.safe_dump({"venues": ["binance"], "limits": [
                {"id": LIMIT_ID, **LIMIT_RULE}]}))
            rest_port = free_port()
            doc.update({
                "environment": "ci", "data_dir": str(tmp / "data"),
                "database_url": r.database_url, "redis_url": redis_url,
                "limits_file": str(tmp / "limits.yaml"),
                "market_data": {"key_prefix": f"{r.prefix}:md", "max_age_s": 30.0},
                "service": {"rest_port": rest_port, "grpc_port": 0,
                            "instance_id": f"load-{uuid.uuid4().hex[:6]}",
                            "registry_prefix": f"{r.prefix}:svc", "positions_poll_s": 5.0,
                            "custody_poll_s": 30.0, "persist_interval_s": 5.0,
                            "hot_path_warmup_s": 30.0, "durable_alert_commit": durable},
                "log_level": LOG_LEVEL,
            })
            config = tmp / "risk-monitor.yaml"
            config.write_text(yaml.safe_dump(doc, sort_keys=False))
            with open(tmp / "err", "wb") as err:
                service = subprocess.Popen(
                    [sys.executable, "-c", SERVE, "--config", str(config), "serve"],
                    env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
            wait(lambda: urllib.request.urlopen(
                f"http://127.0.0.1:{rest_port}/readyz", timeout=2).status == 200, 120,
                "the service ready")
            time.sleep(3.0)  # the first status wave (half the desk above its level) settles
            metrics0 = service_metrics(rest_port)
            ticks0 = accepted_ticks(metrics0)
            window = measure(publisher, service.pid, seconds)
            metrics = service_metrics(rest_port)
            ticks1 = accepted_ticks(metrics)
            if os.environ.get("BENCH_KEEP_LOG"):
                service.send_signal(signal.SIGUSR1)  # thread stacks into the log
            time.sleep(drain_s)
            publisher.stop()
            slack = r.slack_messages()
            rows = outbox_rows(r.database_url)
            intervals = compliance_rows(r.database_url)
            if os.environ.get("BENCH_KEEP_LOG"):
                Path(os.environ["BENCH_KEEP_LOG"]).write_bytes((tmp / "err").read_bytes())
        finally:
            publisher.stop()
            if service is not None:
                service.terminate()
                try:
                    service.wait(20)
                except subprocess.TimeoutExpired:
                    service.kill()
    cpu_s = window.cpu_s
    return {"rate": rate, "published": window.published,
            "cpu_pct": 100.0 * cpu_s / (window.end - window.start), "rss_mb": window.rss_peak,
            # CPU per tick the service took in: what load distorts least (a starved service
            # falls behind, so per *published* tick would flatter it)
            "cpu_us_per_tick": (1e6 * cpu_s / (ticks1 - ticks0)
                                if ticks0 is not None and ticks1 is not None and ticks1 > ticks0
                                else math.nan),
            "publisher_cpu_pct": window.publisher_cpu_pct,
            "metrics": metrics, "stages": stage_summary(metrics0, metrics),
            **score(window.truth, slack, rows, intervals)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[1000, 2000, 5000, 10000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--drain", type=float, default=5.0)
    parser.add_argument("--redis-url", default=REDIS_TEST_URL)
    parser.add_argument("--verbose", action="store_true", help="print the service's counters")
    parser.add_argument("--async-commit", action="store_true",
                        help="service.durable_alert_commit: false (no WAL flush wait per alert)")
    parser.add_argument("--sink-in-process", action="store_true",
                        help="the Slack simulator in this process, beside the publisher (the "
                             "set-up before the sink had its own process; for comparison)")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}, {os.cpu_count()} cores; alert commit "
          f"{'asynchronous' if args.async_commit else 'durable'}; Slack simulator "
          f"{'in this process' if args.sink_in_process else 'in its own process'}", flush=True)
    print(HEADER)
    print(RULE)
    for rate in args.rates:
        for run in range(1, args.runs + 1):
            r = one_run(rate, args.seconds, args.drain, args.redis_url,
                        durable=not args.async_commit, sink_in_process=args.sink_in_process)
            print(table_row(rate, run, r), flush=True)
            if args.verbose:
                print({k: v for k, v in r["metrics"].items() if "_bucket" not in k}, flush=True)
                ds = [v * 1000 for v in r["decision_to_slack"]]
                print(f"  decision -> Slack received (per crossing): p50 {pct(ds, .5):.1f} ms, "
                      f"p99 {pct(ds, .99):.1f} ms", flush=True)
                for stage, text in r["stages"].items():
                    print(f"  stage {stage}: {text}", flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
