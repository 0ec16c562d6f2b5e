"""``risk-monitor serve``: one asyncio process hosting REST, gRPC, discovery and config watching.

Start-up: apply configuration (limits file, then the configuration service or its disk cache),
bind gRPC and REST (port 0 allowed: the bound ports are logged and registered), run the
readiness checks once, flip grpc.health.v1 to SERVING when they pass, register in Redis.
A background task re-runs the checks every second and flips health both ways when a dependency
goes and comes back. With venues or custodians configured the process also runs the hot path
(``service/hot_path.py``: live quotes + polled positions evaluated on every change, alerts at
once), its quote feed, and the outbox dispatcher thread that delivers alerts.

Shutdown (SIGTERM/SIGINT): grpc.health.v1 goes NOT_SERVING for good and ``/readyz`` answers
503 *first*, then the service keeps answering for ``service.drain_s`` so clients and load
balancers move away, then it deregisters from Redis and stops the servers. A second signal cuts
the drain short.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import redis
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from risk_monitor.adapters.redis_registry import RedisServiceRegistry, Registration
from risk_monitor.adapters.sql import OutboxDispatcher
from risk_monitor.bootstrap import Runtime, build_runtime
from risk_monitor.platform.errors import RiskMonitorError, ServiceError
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.settings import Settings
from risk_monitor.service.components import (
    AlertDelivery,
    ApiServers,
    Evaluation,
    LimitConfiguration,
    StoreSchema,
    Trading,
)
from risk_monitor.service.health import CheckFn, redis_check
from risk_monitor.service.hot_path import HotPath
from risk_monitor.service.registration import instance_info
from risk_monitor.service.security import ServiceSecurity
from risk_monitor.service.state import RiskViewProvider

log = get_logger(__name__)

#: young-generation threshold after start-up (CPython's default, 700). Measured under the
#: load bench at 1k ticks/s: at 20,000 each young collection paused every thread for 23 ms on
#: average (79 ms at most): what a tick allocates mostly survives (quotes, results), so a
#: larger young generation means a longer pause, not a cheaper one
GC_GEN0_THRESHOLD = 700


class GcPauses(Collector):
    """Garbage-collector pauses by generation (every thread waits for them).

    Counted in plain integers from ``gc.callbacks`` and exported at scrape time: a callback
    may run inside any allocation, including one made while a prometheus metric's lock is
    held, so it must take no lock itself."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.total_s = [0.0, 0.0, 0.0]
        self.max_s = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        if not self._started:  # registered during a collection: its start was not seen
            return
        generation = min(2, max(0, int(info.get("generation", 0))))
        took = time.perf_counter() - self._started
        self._started = 0.0
        self.count[generation] += 1
        self.total_s[generation] += took
        self.max_s[generation] = max(self.max_s[generation], took)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        total = CounterMetricFamily("risk_monitor_gc_pause_seconds",
                                    "Time spent in garbage collections, by generation.",
                                    labels=["generation"])
        count = CounterMetricFamily("risk_monitor_gc_collections",
                                    "Garbage collections, by generation.", labels=["generation"])
        longest = GaugeMetricFamily("risk_monitor_gc_pause_max_seconds",
                                    "Longest garbage-collection pause since start, by generation.",
                                    labels=["generation"])
        for g in range(3):
            total.add_metric([str(g)], self.total_s[g])
            count.add_metric([str(g)], self.count[g])
            longest.add_metric([str(g)], self.max_s[g])
        yield from (total, count, longest)


def settle_heap() -> GcPauses:
    """After start-up: move what start-up allocated (modules, markets, the first evaluation's
    inputs) out of the collector's reach (``gc.freeze``), so a full collection no longer walks
    the whole heap while the tick loop waits; set the young generation's threshold."""
    pauses = next((c for c in gc.callbacks if isinstance(c, GcPauses)), None)
    if pauses is None:
        pauses = GcPauses()
        with contextlib.suppress(ValueError):  # registered once per process
            REGISTRY.register(pauses)
    else:  # this deliberate collection is not a pause of the running service
        gc.callbacks.remove(pauses)
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, older, oldest)
    gc.callbacks.append(pauses)
    return pauses


async def settle_heap_when_warm(app: ServiceApp, timeout_s: float) -> None:
    """``settle_heap`` now, and again once the hot path has its first full evaluation (its
    markets, positions and baseline are what a later full collection would walk each time)."""
    settle_heap()
    hot_path = app.hot_path
    if hot_path is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while hot_path.last_evaluated_at is None and loop.time() < deadline:
        await asyncio.sleep(0.2)
    settle_heap()


class ServiceApp:
    """The service's components and their start/stop order (also used in-process by tests).

    Everything comes from the runtime (``risk_monitor.bootstrap``); the components
    (``service/components.py``) own their parts: the store's schema, the limit configuration,
    alert delivery, evaluation (hot path + quote feed), the API servers, the registration.
    """

    def __init__(self, settings: Settings, *, provider: RiskViewProvider | None = None,
                 runtime: Runtime | None = None,
                 check_interval_s: float | None = None, insecure: bool = False) -> None:
        self.settings = settings
        security = ServiceSecurity.from_settings(settings.service, insecure=insecure)
        # the composition root; the service migrates from its database check, not at start
        self.runtime = runtime or build_runtime(settings, migrate=False)
        self.engine = self.runtime.storage.engine
        self.provider = provider or self.runtime.state_provider
        self.registry_prefix = settings.service.registry_prefix
        self.instance_id = settings.instance_id
        self.started_at = datetime.now(UTC)
        self.redis: redis.Redis | None = None
        self.registration: Registration | None = None
        self.config = LimitConfiguration(self.runtime, self.provider)
        self.schema = StoreSchema(self.runtime, on_ready=self.config.record_current)
        self.delivery = AlertDelivery(self.runtime)
        self.evaluation = Evaluation(self.runtime, self.provider)
        self.trading = Trading(self.runtime, self.provider)
        self.api = ApiServers(self.runtime, self.provider, security, self.config_status,
                              check_interval_s or settings.service.health_check_interval_s)
        self._drain_cut = asyncio.Event()
        self._stopped = False

    @property
    def grpc_port(self) -> int:
        return self.api.grpc_port

    @property
    def rest_port(self) -> int:
        return self.api.rest_port

    @property
    def hot_path(self) -> HotPath | None:
        return self.evaluation.hot_path

    @property
    def dispatcher(self) -> OutboxDispatcher | None:
        return self.delivery.dispatcher

    def config_status(self) -> dict[str, Any]:
        return self.config.status()

    # -- start ----------------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self._close()
            raise

    async def _start(self) -> None:
        settings = self.settings
        # schema first: the configuration applied next is recorded in it
        await self.schema.check()
        self.redis = self.runtime.redis
        await self.config.start()
        self.delivery.start()
        await self.evaluation.start(self.config.state, self.delivery)
        self.trading.start(self.evaluation)
        await self.api.start(self._checks(), self.trading)
        if self.redis is not None:
            info = instance_info(settings, grpc_port=self.grpc_port, rest_port=self.rest_port,
                                 started_at=self.started_at)
            registry = RedisServiceRegistry(self.redis, prefix=self.registry_prefix)
            self.registration = Registration(registry, settings.service.service_name,
                                             self.instance_id, info, settings.service.registry_ttl_s)
            await asyncio.to_thread(self.registration.start)
        log.info("service_started", service=settings.service.service_name,
                 instance_id=self.instance_id, grpc_port=self.grpc_port,
                 rest_port=self.rest_port, grpc_host=settings.service.grpc_host,
                 rest_host=settings.service.rest_host,
                 ready=self.api.readiness.ready if self.api.readiness else False,
                 registry_key=self.registration.key if self.registration else None,
                 config=self.config.state.status())

    def _checks(self) -> dict[str, CheckFn]:
        checks: dict[str, CheckFn] = {"database": self.schema.check}
        if self.redis is not None:
            checks["redis"] = redis_check(self.redis)
        checks["config"] = self.config.check
        checks["data_freshness"] = self.evaluation.freshness_check
        return {**checks, **self.delivery.checks(), **self.evaluation.checks()}

    # -- stop -----------------------------------------------------------------------------------
    def cut_drain(self) -> None:
        self._drain_cut.set()

    async def shutdown(self) -> None:
        """Graceful: NOT_SERVING first, drain, deregister, then stop the servers."""
        if self._stopped:
            return
        self.api.start_draining()
        drain = self.settings.service.drain_s
        log.info("service_draining", drain_s=drain, instance_id=self.instance_id)
        if drain > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drain_cut.wait(), timeout=drain)
        if self.registration is not None:
            await asyncio.to_thread(self.registration.stop)
        await self._close()
        log.info("service_stopped", instance_id=self.instance_id)

    async def _close(self) -> None:
        self._stopped = True
        await self.api.stop_readiness()
        await self.trading.stop()
        await self.evaluation.stop()
        await self.delivery.stop()
        await self.api.stop()
        await self.config.stop()
        self.runtime.close()


async def serve(settings: Settings, *, insecure: bool = False) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    app = ServiceApp(settings, insecure=insecure)
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        log.info("signal_received", signal=signal.Signals(signum).name, count=signals)
        if signals > 1:
            app.cut_drain()
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await app.start()
        settling = asyncio.create_task(settle_heap_when_warm(
            app, settings.service.hot_path_warmup_s + 30.0), name="settle-heap")
        await stop.wait()
        settling.cancel()
        await app.shutdown()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def run_service(settings: Settings, *, insecure: bool = False) -> None:
    """Entry point of ``risk-monitor serve``."""
    try:
        asyncio.run(serve(settings, insecure=insecure))
    except RiskMonitorError:
        raise
    except OSError as exc:
        raise ServiceError(f"service failed: {exc}", source="service") from exc
