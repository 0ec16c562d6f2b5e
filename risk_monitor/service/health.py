"""Readiness: dependency checks run in the background, one verdict for REST and gRPC.

A background task runs every check each interval and keeps the last results; ``/readyz`` and
grpc.health.v1 read that verdict instead of probing on every request, so a probe storm never
hits the database and both protocols always agree. Critical checks (database, Redis when
configured, configuration applied) decide readiness. Data freshness is reported but not
critical: an instance with stale inputs still answers correctly (limits UNKNOWN, orders denied,
fail closed), and taking every instance out of rotation during a venue outage would leave the
trading system without any pre-trade answer at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import redis
import sqlalchemy as sa
from prometheus_client import Gauge

from risk_monitor.adapters.errors import map_exception
from risk_monitor.adapters.sql.engine import create_engine
from risk_monitor.platform.logging import get_logger, redact_text

log = get_logger(__name__)

DEPENDENCY_UP = Gauge("risk_monitor_service_check_ok",
                      "1 when the readiness check passed on its last run.", ["check"])
SERVICE_READY = Gauge("risk_monitor_service_ready",
                      "1 when the service is ready (every critical check passes, not draining).")


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    critical: bool
    detail: str = ""
    latency_ms: float = 0.0
    data: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "ok": self.ok, "critical": self.critical,
                               "detail": self.detail, "latency_ms": round(self.latency_ms, 2)}
        if self.data:
            out["data"] = dict(self.data)
        return out


CheckFn = Callable[[], Awaitable[CheckResult]]


class Readiness:
    """Runs checks periodically; tells listeners when readiness flips."""

    def __init__(self, checks: Mapping[str, CheckFn], *, interval_s: float = 1.0,
                 timeout_s: float = 3.0) -> None:
        self.checks = dict(checks)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.results: dict[str, CheckResult] = {}
        self.checked_at: datetime | None = None
        self.draining = False
        self._listeners: list[Callable[[bool], None]] = []
        self._ready: bool | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return bool(self._ready) and not self.draining

    def on_change(self, listener: Callable[[bool], None]) -> None:
        self._listeners.append(listener)

    async def run_once(self) -> bool:
        names = list(self.checks)
        outcomes = await asyncio.gather(*(self._run(name) for name in names))
        self.results = dict(zip(names, outcomes, strict=True))
        self.checked_at = datetime.now(UTC)
        for result in outcomes:
            DEPENDENCY_UP.labels(check=result.name).set(1 if result.ok else 0)
        ready = all(r.ok for r in outcomes if r.critical)
        if ready != self._ready:
            failing = [r.name for r in outcomes if r.critical and not r.ok]
            if ready:
                log.info("service_ready")
            else:
                log.warning("service_not_ready", failing=failing,
                            details={r.name: r.detail for r in outcomes if not r.ok})
            self._ready = ready
            self._notify()
        return ready

    async def _run(self, name: str) -> CheckResult:
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(self.checks[name](), timeout=self.timeout_s)
        except TimeoutError:
            result = CheckResult(name, False, True, f"timed out after {self.timeout_s}s")
        except Exception as exc:  # a check that crashes is a failing check, never a dead loop
            result = CheckResult(name, False, True, redact_text(f"{type(exc).__name__}: {exc}"))
        return replace(result, latency_ms=(time.perf_counter() - started) * 1000)

    def _notify(self) -> None:
        SERVICE_READY.set(1 if self.ready else 0)
        for listener in self._listeners:
            listener(self.ready)

    def start_draining(self) -> None:
        self.draining = True
        self._notify()

    async def start(self) -> None:
        await self.run_once()
        self._task = asyncio.create_task(self._loop(), name="readiness")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.run_once()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def as_dict(self) -> dict[str, Any]:
        status = "draining" if self.draining else ("ready" if self.ready else "not_ready")
        if status == "ready" and any(not r.ok for r in self.results.values()):
            status = "degraded"  # ready, but a non-critical check fails (e.g. stale data)
        return {
            "status": status,
            "ready": self.ready,
            "checked_at": self.checked_at.isoformat() if self.checked_at else None,
            "checks": [r.as_dict() for r in self.results.values()],
        }


# -- checks ---------------------------------------------------------------------------------------
def database_check(url: str, *, timeout_s: float = 2.0) -> CheckFn:
    """``SELECT 1`` on a fresh connection each time (unpooled: a dead DB shows at once).

    The engine comes from the one engine factory, so every documented URL form
    (``postgresql://``, ``postgresql+psycopg2://``, ``sqlite:///``) works here as everywhere.
    """
    timeout_ms = int(timeout_s * 1000)
    engine = create_engine(url, pooled=False, connect_timeout_s=max(1, int(timeout_s)),
                           statement_timeout_ms=timeout_ms, lock_timeout_ms=timeout_ms)

    def probe() -> None:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))

    async def check() -> CheckResult:
        try:
            await asyncio.to_thread(probe)
        except Exception as exc:
            error = map_exception(exc, source="database")
            return CheckResult("database", False, True, error.message)
        return CheckResult("database", True, True, engine.dialect.name)

    return check


def redis_check(client: redis.Redis) -> CheckFn:
    async def check() -> CheckResult:
        try:
            await asyncio.to_thread(client.ping)
        except redis.RedisError as exc:
            return CheckResult("redis", False, True,
                               map_exception(exc, source="redis").message)
        return CheckResult("redis", True, True, "PONG")

    return check


def static_check(name: str, fn: Callable[[], tuple[bool, str, Mapping[str, Any] | None]],
                 *, critical: bool) -> CheckFn:
    """A check computed from in-process state (configuration, freshness, registration)."""

    async def check() -> CheckResult:
        ok, detail, data = fn()
        return CheckResult(name, ok, critical, detail, data=data)

    return check


def blocking_check(name: str, fn: Callable[[], tuple[bool, str, Mapping[str, Any] | None]],
                   *, critical: bool) -> CheckFn:
    """Like :func:`static_check` for a function that does I/O: run off the event loop."""

    async def check() -> CheckResult:
        ok, detail, data = await asyncio.to_thread(fn)
        return CheckResult(name, ok, critical, detail, data=data)

    return check
