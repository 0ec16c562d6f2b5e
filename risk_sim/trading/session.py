"""A trading session: simulators + ``risk-monitor serve`` + the desk, as an operator runs them.

The session starts the venue and custodian simulators in this process (real-time clock), writes
Risk Monitor's settings for them (limits from the scenario's ``meta.limits``), starts
``risk-monitor serve`` as a child process with the simulators' credentials in its environment
only, waits until ``CheckOrder`` answers from live data, and hands a :class:`TradingRig` to the
scenario script. Alerts raised meanwhile are followed over gRPC ``WatchAlerts`` and written on
the desk's timeline. Nothing here reaches into Risk Monitor's internals: settings, a process,
and its public gRPC API.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from risk_sim.launcher import SimulatorStack
from risk_sim.net import free_port
from risk_sim.trading.desk import Desk, GrpcRiskGate, VenueAccess
from risk_sim.trading.truth import Comparison, Tolerance, compare_until_caught_up

CCXT_IDS = {"binance": "binanceusdm", "okx": "okx"}
COMPONENTS = ("binance", "okx", "fireblocks", "slack")


def point_ccxt_at(exchange: Any, http_url: str, ws_url: str | None = None) -> Any:
    """Rewrite scheme and host of every URL in ``exchange.urls['api']``, keeping the paths
    (websockets default to the HTTP server's address with the ``ws`` scheme)."""
    ws_base = ws_url or http_url.replace("http://", "ws://", 1)

    def rewrite(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: rewrite(v) for k, v in value.items()}
        if not isinstance(value, str):
            return value
        parts = urlsplit(value.replace("{hostname}", "placeholder.invalid"))
        if parts.scheme in ("http", "https"):
            return http_url + parts.path
        if parts.scheme in ("ws", "wss"):
            return ws_base + parts.path
        return value

    exchange.urls["api"] = rewrite(exchange.urls["api"])
    return exchange


def desk_client(stack: SimulatorStack, venue: str, account: str = "main") -> Any:
    """A ccxt async client for ``venue`` with the account's keys, on the simulator."""
    import ccxt.async_support as ccxt_async

    creds = stack.market.credentials()[venue][account]
    config: dict[str, Any] = {"apiKey": creds["api_key"], "secret": creds["secret"],
                              "enableRateLimit": False, "timeout": 10_000}
    if creds.get("password"):
        config["password"] = creds["password"]
    sim = stack.venue(venue)
    return point_ccxt_at(getattr(ccxt_async, CCXT_IDS[venue])(config), sim.url, sim.ws_url)


def limits_document(meta_limits: list[dict[str, Any]]) -> dict[str, Any]:
    """Scenario ``meta.limits`` entries (flat scope keys) as Risk Monitor's limit document."""
    limits = []
    for entry in meta_limits:
        scope = {k: entry[k] for k in ("venue", "instrument", "asset", "account")
                 if k in entry}
        limit: dict[str, Any] = {k: entry[k] for k in ("id", "kind", "warn", "breach")
                                 if k in entry}
        if scope:
            limit["scope"] = scope
        limits.append(limit)
    return {"description": "trading scenario limits", "venues": ["binance", "okx"],
            "limits": limits}


def risk_monitor_command() -> list[str]:
    script = Path(sys.executable).with_name("risk-monitor")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "risk_monitor.cli"]


@dataclass
class TradingRig:
    """What a trading scenario script gets."""

    stack: SimulatorStack
    desk: Desk
    grpc_target: str
    workdir: Path
    alerts: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _stub: Any = None
    rest_url: str = ""
    #: the monitor against the venues after every step (``verify``), in order
    comparisons: list[Comparison] = field(default_factory=list)
    #: venues the scenario has made unreachable: not compared while they are dark
    dark: set[str] = field(default_factory=set)
    tolerance: Tolerance = field(default_factory=Tolerance)
    #: how long the monitor may take to show a step (private streams: well under a second)
    catch_up_s: float = 2.0
    _http: Any = None
    _delivered_at_stop: list[dict[str, Any]] = field(default_factory=list)

    async def trading_dashboard(self) -> dict[str, Any]:
        """The service's trading document (state, orders, fills, reconciliation breaks)."""
        import aiohttp

        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        async with self._http.get(f"{self.rest_url}/v1/dashboard/trading") as response:
            response.raise_for_status()
            answer: dict[str, Any] = await response.json()
            return answer

    async def verify(self, step: str) -> Comparison:
        """Compare the monitor's positions and P&L with the venues' after ``step`` (waiting up
        to ``catch_up_s`` for it to agree) and write the result on the timeline."""
        result = await compare_until_caught_up(
            step, self.stack.market, self.trading_dashboard, dark=self.dark,
            tolerance=self.tolerance, deadline_s=self.catch_up_s,
            known=self.comparisons[-1].fields() if self.comparisons else None)
        self.comparisons.append(result)
        self.desk.log("check", "", "", result.line(), ok=result.ok,
                      waited_s=round(result.waited_s, 3), problems=result.problems())
        return result

    def delivered_alerts(self) -> list[dict[str, Any]]:
        """Alert messages the Slack simulator accepted, in order (their metadata); after the
        session, what it had accepted when it stopped."""
        if self.stack.slack is None:
            return list(self._delivered_at_stop)
        found = []
        for message in list(self.stack.slack.messages):
            meta = (message.get("params") or {}).get("metadata") or {}
            payload = meta.get("event_payload") if isinstance(meta, dict) else None
            if isinstance(payload, dict) and payload.get("limit_id"):
                found.append(dict(payload))
        return found

    def catch_up_summary(self) -> str:
        """How the comparisons went: how many matched and the slowest catch-up among them."""
        matched = [c.waited_s for c in self.comparisons if c.ok]
        slowest = f", the monitor caught up within {max(matched):.2f}s" if matched else ""
        return (f"monitor vs venues: {len(matched)} of {len(self.comparisons)} steps "
                f"matched{slowest}")

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def limit(self, limit_id: str) -> Any | None:
        """The service's current entry for ``limit_id`` (first scope), or None."""
        from risk_monitor.service.proto import risk_monitor_pb2 as pb

        response = await self._stub.ListLimitStatus(pb.ListLimitStatusRequest(limit_id=limit_id),
                                                    timeout=5)
        return response.limits[0] if response.limits else None


class TradingSession:
    """``async with TradingSession("active_trading", workdir) as rig: ...``."""

    def __init__(self, scenario: str, workdir: Path, *, printer: Callable[[str], None] | None
                 = None, database_url: str | None = None, redis_url: str | None = None,
                 redis_prefix: str | None = None, service: dict[str, Any] | None = None,
                 trading: dict[str, Any] | None = None, ready_timeout_s: float = 120.0, seed: int | None = None,
                 catch_up_s: float = 2.0) -> None:
        self.scenario_name = scenario
        #: the simulators' seed (market model, fills); None: the scenario's own
        self.seed = seed
        self.workdir = Path(workdir)
        self.printer = printer
        self.database_url = database_url
        self.redis_url = redis_url
        self.redis_prefix = redis_prefix or f"desk-{uuid.uuid4().hex[:8]}"
        self.service_overrides = dict(service or {})
        self.trading_overrides = dict(trading or {})
        self.ready_timeout_s = ready_timeout_s
        self.catch_up_s = catch_up_s
        self.stack: SimulatorStack | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.rig: TradingRig | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._channel: Any = None

    # -- settings ---------------------------------------------------------------------------------
    def settings_document(self, stack: SimulatorStack, grpc_port: int, rest_port: int
                          ) -> dict[str, Any]:
        doc = stack.settings_document()
        limits_path = self.workdir / "limits.yaml"
        limits_path.write_text(yaml.safe_dump(limits_document(
            list(stack.scenario.meta.get("limits", []))), sort_keys=False))
        for venue in doc["venues"]:
            venue["timeout_ms"] = 10_000
        doc.update({
            "data_dir": str(self.workdir / "data"),
            "limits_file": str(limits_path),
            "market_data": {"key_prefix": f"{self.redis_prefix}:md", "max_age_s": 30.0,
                            "poll_interval_s": 0.5,
                            "reconnect_initial_s": 0.05, "reconnect_max_s": 0.5},
            "resilience": {"timeout_s": 5.0, "max_attempts": 2, "backoff_initial_s": 0.02,
                           "backoff_max_s": 0.1, "breaker_fail_max": 50,
                           "breaker_reset_s": 1.0},
            "service": {"rest_port": rest_port, "grpc_port": grpc_port, "drain_s": 0.2,
                        "instance_id": f"desk-{uuid.uuid4().hex[:8]}",
                        "registry_prefix": f"{self.redis_prefix}:svc",
                        "positions_poll_s": 0.5, "custody_poll_s": 2.0,
                        "evaluate_min_interval_s": 0.1, "persist_interval_s": 2.0,
                        **self.service_overrides},
            "trading": {"desk_book_key": self.desk_book_key(), **self.trading_overrides},
        })
        if self.database_url:
            doc["database_url"] = self.database_url
        if self.redis_url:
            doc["redis_url"] = self.redis_url
        return doc

    # -- lifecycle --------------------------------------------------------------------------------
    async def __aenter__(self) -> TradingRig:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            return await self._start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise

    async def _start(self) -> TradingRig:
        from risk_monitor.service.proto import risk_monitor_pb2_grpc as pb_grpc

        stack = SimulatorStack(self.scenario_name, seed=self.seed, clock="realtime",
                               components=COMPONENTS, control=False)
        self.stack = stack
        stack.start()
        grpc_port, rest_port = free_port(), free_port()
        config = self.workdir / "risk-monitor.yaml"
        config.write_text(yaml.safe_dump(self.settings_document(stack, grpc_port, rest_port),
                                         sort_keys=False))
        env = {**os.environ, **stack.env()}
        env.pop("RISK_MONITOR_CONFIG", None)
        with (self.workdir / "service.log").open("wb") as log_file:
            self.process = subprocess.Popen(
                [*risk_monitor_command(), "--config", str(config), "serve"],
                stdout=log_file, stderr=subprocess.STDOUT, env=env)
        target = f"127.0.0.1:{grpc_port}"
        gate = GrpcRiskGate(target)
        venues = [VenueAccess(v, desk_client(stack, v),
                              hedged=stack.market.account(v).position_mode == "hedge")
                  for v in ("binance", "okx")]
        desk = Desk(venues, gate, printer=self.printer, publish=self._desk_book_publisher())
        await desk.start()
        import grpc

        self._channel = grpc.aio.insecure_channel(target)
        rig = TradingRig(stack, desk, target, self.workdir, _stub=pb_grpc.RiskMonitorStub(
            self._channel), rest_url=f"http://127.0.0.1:{rest_port}", catch_up_s=self.catch_up_s)
        self.rig = rig
        await self._wait_ready(gate)
        self._watcher = asyncio.ensure_future(self._watch_alerts(rig))
        await desk.load_start_of_day()
        await rig.verify("start of day")
        desk.after_step = rig.verify
        return rig

    def desk_book_key(self) -> str:
        return f"{self.redis_prefix}:desk:book"

    def _desk_book_publisher(self) -> Callable[[str, str, Decimal], None] | None:
        """The desk's expected book, published where the monitor's reconciliation reads it."""
        if not self.redis_url:
            return None
        import redis

        client = redis.Redis.from_url(self.redis_url)
        key = self.desk_book_key()
        client.delete(key)

        client.delete(f"{key}:as_of")

        def publish(venue: str, symbol: str, quantity: Decimal) -> None:
            item, now = f"{venue}|position|{symbol}", time.time()
            pipe = client.pipeline(transaction=True)  # the value and its time together
            pipe.hset(key, item, str(quantity))
            pipe.hset(f"{key}:as_of", item, now)
            pipe.set(f"{key}:updated_at", now)
            pipe.execute()
        return publish

    async def _wait_ready(self, gate: GrpcRiskGate) -> None:
        """Until CheckOrder allows a tiny order on every venue (the service sees live data)."""
        deadline = time.monotonic() + self.ready_timeout_s
        pending = {"binance", "okx"}
        last: Any = None
        while pending:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"risk-monitor serve exited with {self.process.returncode}; "
                                   f"see {self.workdir / 'service.log'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"CheckOrder not ready within {self.ready_timeout_s}s "
                                   f"(still {sorted(pending)}; last answer {last}); see "
                                   f"{self.workdir / 'service.log'}")
            for venue in sorted(pending):
                last = await gate.check(venue=venue, account="main", symbol="BTC/USDT:USDT",
                                        side="buy", quantity=0.001, price=None,
                                        client_order_id="readiness", position_side="")
                if last.allowed:
                    pending.discard(venue)
            await asyncio.sleep(0.25)

    async def _watch_alerts(self, rig: TradingRig) -> None:
        from risk_monitor.service.proto import risk_monitor_pb2 as pb

        try:
            stream = rig._stub.WatchAlerts(pb.WatchAlertsRequest(heartbeat_interval_s=5.0))
            async for event in stream:
                if not event.HasField("alert"):
                    continue
                alert = event.alert
                status = pb.LimitStatus.Name(alert.status).removeprefix("LIMIT_STATUS_")
                entry = {"key": alert.idempotency_key, "kind": alert.kind, "status": status, "limit_id": alert.limit_id,
                         "scope": alert.scope, "utilisation": alert.utilisation
                         if alert.HasField("utilisation") else None,
                         "reason": alert.reason}
                rig.alerts.append(entry)
                venue = next((p.split(":", 1)[1] for p in alert.scope.split("|")
                              if p.startswith("venue:")), "")
                rig.desk.log("alert", venue, "", f"{alert.kind} {status} {alert.limit_id} "
                             f"{alert.scope}" + (f" at {alert.utilisation:.0%}"
                                                 if alert.HasField("utilisation") else ""),
                             alert=entry)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the stream ends with the service: note it, stop following
            rig.desk.log("note", "", "", f"alert stream ended: {type(exc).__name__}")

    async def __aexit__(self, *_: object) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(BaseException):
                await self._watcher
        if self.rig is not None:
            await self.rig.close()
            await self.rig.desk.close()
        if self._channel is not None:
            await self._channel.close()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, 30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait, 10)
        if self.stack is not None:
            if self.rig is not None:
                self.rig._delivered_at_stop = self.rig.delivered_alerts()
            self.stack.stop()
