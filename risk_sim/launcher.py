"""Start every simulator on free loopback ports, apply a scenario, and tell Risk Monitor where.

``SimulatorStack`` runs Binance, OKX, Fireblocks, Slack and the configuration service in this
process (each on its own background loop), loads a scenario into them, and writes what Risk
Monitor needs to talk to them: ``risk-monitor.yaml`` (settings with ``endpoint_override``),
``risk-monitor.env`` (the generated secrets; secrets only ever travel through the environment)
and ``endpoints.json``. A small HTTP control plane lets another process step the scenario,
switch faults and read the truth (``risk-sim up`` prints its URL).

Simulators written elsewhere in the package (Fireblocks, Slack, configuration service) are
optional at import time: if one cannot be imported the stack starts without it and says why in
``missing``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from risk_sim.exchange import BinanceSimulator, OkxSimulator, VenueSimulator
from risk_sim.market import Clock, ClockMode, Market, SimError
from risk_sim.scenario import Action, Scenario, ScenarioError, ScenarioPlayer, load_scenario
from risk_sim.server import BackgroundServer

log = logging.getLogger(__name__)

COMPONENTS = ("binance", "okx", "fireblocks", "slack", "config_service")
CCXT_IDS = {"binance": "binanceusdm", "okx": "okx"}
FIREBLOCKS_API_KEY_ENV = "RISK_MONITOR_FIREBLOCKS_API_KEY"
FIREBLOCKS_SECRET_KEY_ENV = "RISK_MONITOR_FIREBLOCKS_SECRET_KEY"
SLACK_TOKEN_ENV = "RISK_MONITOR_SLACK_TOKEN"
#: the component Risk Monitor reads from the configuration service (its default setting)
RISK_MONITOR_COMPONENT = "risk-monitor"


def secret_env_names(venue: str, account: str) -> dict[str, str]:
    """Environment variable names for a venue account's secrets (``main`` has the short form)."""
    stem = f"RISK_MONITOR_{venue.upper()}"
    if account != "main":
        stem += "_" + "".join(c if c.isalnum() else "_" for c in account.upper())
    names = {"api_key": f"{stem}_API_KEY", "secret": f"{stem}_SECRET"}
    if venue == "okx":
        names["password"] = f"{stem}_PASSWORD"
    return names


class SimulatorStack:
    """All simulators of one scenario, started in-process on 127.0.0.1 with free ports."""

    def __init__(self, scenario: str | Path | Scenario = "calm", seed: int | None = None,
                 clock: ClockMode = "manual", *, components: Iterable[str] | None = None,
                 redis_url: str | None = None, control: bool = True,
                 host: str = "127.0.0.1") -> None:
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        self.seed = self.scenario.seed if seed is None else int(seed)
        wanted = set(COMPONENTS if components is None else components)
        unknown = wanted - set(COMPONENTS)
        if unknown:
            raise ValueError(f"unknown components {sorted(unknown)}; known: {COMPONENTS}")
        self.components = wanted
        self.host = host
        self.redis_url = redis_url
        self.market = Market(self.scenario.market_spec(self.seed), Clock(clock))
        self.binance: BinanceSimulator | None = None
        self.okx: OkxSimulator | None = None
        self.fireblocks: Any | None = None
        self.slack: Any | None = None
        self.config_service: Any | None = None
        self.missing: dict[str, str] = {}
        self.player = ScenarioPlayer(self, self.scenario, seed=self.seed)
        self._control_enabled = control
        self._control: BackgroundServer | None = None
        self._play_thread: threading.Thread | None = None
        self._play_stop = threading.Event()
        self._started = False

    # -- lifecycle ------------------------------------------------------------------------------
    def simulator(self, name: str) -> Any | None:
        """The running simulator called ``name`` (None when absent)."""
        if name not in COMPONENTS:
            raise KeyError(f"unknown simulator {name!r}; known: {', '.join(COMPONENTS)}")
        return getattr(self, name)

    def venue(self, name: str) -> VenueSimulator:
        sim = self.simulator(name)
        if not isinstance(sim, VenueSimulator):
            raise KeyError(f"venue simulator {name!r} is not running")
        return sim

    def start(self) -> SimulatorStack:
        if self._started:
            return self
        try:
            if "binance" in self.components:
                self.binance = BinanceSimulator(self.market, seed=self.seed, host=self.host)
                self.binance.start()
            if "okx" in self.components:
                self.okx = OkxSimulator(self.market, seed=self.seed, host=self.host)
                self.okx.start()
            if "fireblocks" in self.components:
                self.fireblocks = self._optional("fireblocks", "risk_sim.fireblocks",
                                                 "FireblocksSimulator", seed=self.seed,
                                                 host=self.host)
            if "slack" in self.components:
                self.slack = self._optional("slack", "risk_sim.slack", "SlackSimulator",
                                            host=self.host, seed=self.seed)
            if "config_service" in self.components:
                self.config_service = self._optional(
                    "config_service", "risk_sim.config_service", "ConfigServiceSimulator",
                    redis_url=self.redis_url, host=self.host)
            self.player.apply_initial()
            self.market.start_clock_driver()
            if self._control_enabled:
                self._control = BackgroundServer(self._control_app(), host=self.host,
                                                 name="risk-sim-control").start()
        except BaseException:
            self.stop()
            raise
        self._started = True
        return self

    def _optional(self, name: str, module: str, cls: str, **kwargs: Any) -> Any | None:
        try:
            imported = __import__(module, fromlist=[cls])
            factory = getattr(imported, cls)
        except (ImportError, AttributeError) as exc:
            self.missing[name] = f"{module}.{cls} is not available ({exc})"
            log.warning("risk-sim: starting without the %s simulator: %s", name,
                        self.missing[name])
            return None
        return factory(**kwargs).start()

    def stop(self) -> None:
        self.stop_play()
        self.market.stop_clock_driver()
        if self._control is not None:
            self._control.stop()
            self._control = None
        for name in reversed(COMPONENTS):
            sim = getattr(self, name)
            if sim is not None:
                try:
                    sim.stop()
                except Exception:  # keep stopping the others
                    log.exception("risk-sim: stopping %s failed", name)
                setattr(self, name, None)
        self._started = False

    def __enter__(self) -> SimulatorStack:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Back to the scenario's initial state: market, vaults, faults, skew, limits, logs."""
        self.stop_play()
        for name in ("binance", "okx"):
            venue = getattr(self, name)
            if venue is not None:
                venue.reset()
        if self.slack is not None and hasattr(self.slack, "reset"):
            self.slack.reset()
        self.player.apply_initial()

    # -- play in the background -----------------------------------------------------------------
    def play_in_background(self, realtime: bool = True, speed: float = 1.0) -> None:
        """Play the remaining steps from a daemon thread (stop with :meth:`stop_play`)."""
        if self._play_thread is not None and self._play_thread.is_alive():
            return
        self._play_stop.clear()
        self._play_thread = threading.Thread(
            target=self.player.play, kwargs={"realtime": realtime, "speed": speed,
                                             "stop": self._play_stop},
            name="risk-sim-player", daemon=True)
        self._play_thread.start()

    def stop_play(self) -> None:
        self._play_stop.set()
        if self._play_thread is not None:
            self._play_thread.join(timeout=5)
            self._play_thread = None

    # -- what Risk Monitor needs ----------------------------------------------------------------
    @property
    def control_url(self) -> str | None:
        return self._control.url if self._control is not None else None

    def endpoints(self) -> dict[str, Any]:
        """URLs of every running simulator (no secrets)."""
        out: dict[str, Any] = {"scenario": self.scenario.name, "seed": self.seed,
                               "clock": self.market.clock.mode}
        for name in ("binance", "okx"):
            venue = getattr(self, name)
            if venue is not None:
                out[name] = {"http": venue.url, "ws": venue.ws_url,
                             "admin": f"{venue.url}/__admin"}
        if self.fireblocks is not None:
            out["fireblocks"] = {"http": self.fireblocks.url,
                                 "base_path": self.fireblocks.base_path,
                                 "admin": f"{self.fireblocks.url}/__admin"}
        if self.slack is not None:
            out["slack"] = {"http": self.slack.url, "api_base": self.slack.api_base,
                            "admin": f"{self.slack.url}/__admin"}
        if self.config_service is not None:
            out["config_service"] = {"http": self.config_service.url}
        if self.control_url is not None:
            out["control"] = self.control_url
        if self.missing:
            out["missing"] = dict(self.missing)
        return out

    def env(self) -> dict[str, str]:
        """The secrets Risk Monitor reads from the environment, by variable name."""
        values: dict[str, str] = {}
        credentials = self.market.credentials()
        for venue in ("binance", "okx"):
            if getattr(self, venue) is None:
                continue
            for account, creds in credentials.get(venue, {}).items():
                names = secret_env_names(venue, account)
                values[names["api_key"]] = str(creds["api_key"])
                values[names["secret"]] = str(creds["secret"])
                if "password" in names:
                    values[names["password"]] = str(creds["password"])
        if self.fireblocks is not None:
            values[FIREBLOCKS_API_KEY_ENV] = self.fireblocks.api_key
            values[FIREBLOCKS_SECRET_KEY_ENV] = self.fireblocks.private_key_pem
        if self.slack is not None:
            values[SLACK_TOKEN_ENV] = self.slack.token
        return values

    def settings_document(self) -> dict[str, Any]:
        """Risk Monitor settings (risk_monitor/platform/settings.py) pointing at the stack."""
        venues = []
        for venue in ("binance", "okx"):
            sim = getattr(self, venue)
            if sim is None:
                continue
            symbols = sorted(self.market.instruments[venue])
            for account in sorted(self.market.accounts[venue]):
                names = secret_env_names(venue, account)
                entry: dict[str, Any] = {
                    "id": venue, "exchange": CCXT_IDS[venue], "account": account,
                    "api_key_env": names["api_key"], "secret_env": names["secret"],
                    "endpoint_override": sim.url, "ws_endpoint_override": sim.ws_url,
                    "symbols": symbols,
                    # ccxt's client-side limiter paces calls for the real venues' weights
                    # (~2 s per Binance fetch_tickers); a loopback simulator needs no pacing.
                    # Production settings keep the default (on).
                    "enable_rate_limit": False,
                }
                if "password" in names:
                    entry["password_env"] = names["password"]
                venues.append(entry)
        document: dict[str, Any] = {"environment": "simulated", "venues": venues}
        if self.fireblocks is not None:
            document["custodians"] = [{
                "id": "fireblocks", "kind": "fireblocks", "api_key_env": FIREBLOCKS_API_KEY_ENV,
                "secret_key_env": FIREBLOCKS_SECRET_KEY_ENV,
                "endpoint_override": self.fireblocks.base_path}]
        if self.slack is not None:
            document["slack"] = {"token_env": SLACK_TOKEN_ENV, "base_url": self.slack.api_base}
        if self.config_service is not None:
            # enabled only when the scenario publishes a document for Risk Monitor: otherwise
            # the service would wait on a 404 forever (never ready) instead of using its
            # limits file; `risk-sim step` / the control plane can still publish one later
            published = RISK_MONITOR_COMPONENT in self.scenario.config_service
            document["config_service"] = {"enabled": published, "url": self.config_service.url}
        return document

    def write_config(self, directory: str | Path) -> dict[str, Path]:
        """Write risk-monitor.yaml, risk-monitor.env (mode 600) and endpoints.json."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        settings_path = folder / "risk-monitor.yaml"
        settings_path.write_text(
            "# Written by risk-sim: Risk Monitor settings pointing at the simulators.\n"
            "# Secrets are in risk-monitor.env (load it into the environment).\n"
            + yaml.safe_dump(self.settings_document(), sort_keys=False))
        env_path = folder / "risk-monitor.env"
        env_path.touch(mode=0o600)
        env_path.chmod(0o600)
        lines = ["# Written by risk-sim: simulator credentials (not real secrets). Load with",
                 "# `set -a; . ./risk-monitor.env; set +a` or python-dotenv."]
        for name, value in self.env().items():
            lines.append(f"{name}={format_env_value(value)}")
        env_path.write_text("\n".join(lines) + "\n")
        endpoints_path = folder / "endpoints.json"
        endpoints_path.write_text(json.dumps(self.endpoints(), indent=2) + "\n")
        return {"settings": settings_path, "env": env_path, "endpoints": endpoints_path}

    # -- control plane --------------------------------------------------------------------------
    def _control_app(self) -> web.Application:
        stack = self

        async def run(fn: Any, *args: Any) -> Any:
            import asyncio

            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

        def bad(exc: Exception) -> web.Response:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)

        async def body_of(request: web.Request) -> dict[str, Any]:
            if not request.can_read_body:
                return {}
            data = await request.json()
            if not isinstance(data, dict):
                raise web.HTTPBadRequest(text="JSON object expected")
            return data

        async def health(_: web.Request) -> web.Response:
            return web.json_response({"ok": True})

        async def endpoints(_: web.Request) -> web.Response:
            return web.json_response(stack.endpoints())

        async def scenario(_: web.Request) -> web.Response:
            return web.json_response({
                "name": stack.scenario.name, "description": stack.scenario.description,
                "seed": stack.seed, "index": stack.player.index, "done": stack.player.done,
                "steps": [{"label": s.label, "duration": s.duration, "expect": s.expect}
                          for s in stack.scenario.steps],
                "meta": stack.scenario.meta})

        async def state(_: web.Request) -> web.Response:
            return web.json_response(await run(stack.player.state))

        async def step(_: web.Request) -> web.Response:
            try:
                record = await run(stack.player.step)
            except (SimError, ScenarioError, ValueError) as exc:
                return bad(exc)
            if record is None:
                return web.json_response({"ok": False, "done": True}, status=409)
            return web.json_response({"ok": True, **record})

        async def play(request: web.Request) -> web.Response:
            data = await body_of(request)
            stack.play_in_background(realtime=bool(data.get("realtime", True)),
                                     speed=float(data.get("speed", 1.0)))
            return web.json_response({"ok": True})

        async def stop(_: web.Request) -> web.Response:
            await run(stack.stop_play)
            return web.json_response({"ok": True})

        async def reset(_: web.Request) -> web.Response:
            await run(stack.reset)
            return web.json_response({"ok": True})

        async def action(request: web.Request) -> web.Response:
            try:
                parsed = Action.model_validate(await body_of(request))
                await run(stack.player.apply, parsed)
            except (SimError, ScenarioError, ValueError) as exc:
                return bad(exc)
            return web.json_response({"ok": True})

        async def add_fault(request: web.Request) -> web.Response:
            data = await body_of(request)
            sim = stack.simulator(request.match_info["sim"]) \
                if request.match_info["sim"] in COMPONENTS else None
            if sim is None:
                return bad(KeyError(f"no simulator {request.match_info['sim']!r}"))
            try:
                fault = sim.faults.add(data["kind"], data.get("route", "*"),
                                       probability=float(data.get("probability", 1.0)),
                                       count=data.get("count"), **data.get("params", {}))
            except (KeyError, TypeError, ValueError) as exc:
                return bad(exc)
            return web.json_response(asdict(fault))

        async def clear_faults(request: web.Request) -> web.Response:
            name = request.match_info["sim"]
            sim = stack.simulator(name) if name in COMPONENTS else None
            if sim is None:
                return bad(KeyError(f"no simulator {name!r}"))
            sim.faults.clear()
            if hasattr(sim, "accept_ws"):
                sim.accept_ws()
            return web.json_response({"ok": True})

        async def advance(request: web.Request) -> web.Response:
            data = await body_of(request)
            try:
                await run(stack.market.advance, float(data.get("seconds", 0)))
            except ValueError as exc:
                return bad(exc)
            return web.json_response({"ok": True, "elapsed": stack.market.clock.elapsed()})

        app = web.Application()
        app.add_routes([
            web.get("/health", health),
            web.get("/endpoints", endpoints),
            web.get("/scenario", scenario),
            web.get("/scenario/state", state),
            web.post("/scenario/step", step),
            web.post("/scenario/play", play),
            web.post("/scenario/stop", stop),
            web.post("/scenario/reset", reset),
            web.post("/scenario/action", action),
            web.post("/faults/{sim}", add_fault),
            web.delete("/faults/{sim}", clear_faults),
            web.post("/clock/advance", advance),
        ])
        return app


def format_env_value(value: str) -> str:
    """A dotenv / POSIX-shell value: bare when safe, else double-quoted (newlines kept)."""
    if value and all(c.isalnum() or c in "-_.:/+=@!," for c in value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") \
        .replace("`", "\\`")
    return f'"{escaped}"'


def read_env_file(path: str | Path) -> dict[str, str]:
    """Parse a file written by :meth:`SimulatorStack.write_config` (quoted multi-line values)."""
    values: dict[str, str] = {}
    text = Path(path).read_text()
    i = 0
    while i < len(text):
        end = text.find("\n", i)
        line = text[i:] if end < 0 else text[i:end]
        i = len(text) if end < 0 else end + 1
        if not line.strip() or line.lstrip().startswith("#") or "=" not in line:
            continue
        name, raw = line.split("=", 1)
        if raw.startswith('"'):
            buf = raw[1:]
            while True:
                close = _closing_quote(buf)
                if close >= 0 or i >= len(text):
                    break
                end = text.find("\n", i)
                buf += "\n" + (text[i:] if end < 0 else text[i:end])
                i = len(text) if end < 0 else end + 1
            close = _closing_quote(buf)
            values[name.strip()] = _unescape(buf[:close] if close >= 0 else buf)
        else:
            values[name.strip()] = raw.strip()
    return values


def _unescape(text: str) -> str:
    out = []
    escaped = False
    for char in text:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            out.append(char)
    return "".join(out)


def _closing_quote(text: str) -> int:
    escaped = False
    for n, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return n
    return -1
