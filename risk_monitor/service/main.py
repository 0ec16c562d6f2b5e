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
import signal
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import redis
from prometheus_client import REGISTRY
from prometheus_client.registry import Collector

from risk_monitor.adapters.config_service import (
    AppliedConfig,
    ConfigDocument,
    ConfigServiceLocator,
    ConfigState,
    ConfigWatcher,
)
from risk_monitor.adapters.errors import map_exception
from risk_monitor.adapters.limit_provider import last_good_document, record_applied
from risk_monitor.adapters.prometheus import register_collector
from risk_monitor.adapters.redis_registry import (
    DiscoveryClient,
    RedisServiceRegistry,
)
from risk_monitor.adapters.sql import OutboxDispatcher
from risk_monitor.adapters.sql.migrate import migrate
from risk_monitor.bootstrap import Runtime, build_runtime
from risk_monitor.platform.errors import RiskMonitorError, ServiceError
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.metrics import record_error
from risk_monitor.platform.settings import Settings
from risk_monitor.service.grpc_server import GrpcServer, HealthServicer, RiskMonitorServicer
from risk_monitor.service.health import (
    CheckFn,
    CheckResult,
    Readiness,
    blocking_check,
    database_check,
    redis_check,
    static_check,
)
from risk_monitor.service.hot_path import HotPath, run_quote_source
from risk_monitor.service.registration import ServiceRegistration, instance_info
from risk_monitor.service.rest import RestServer, build_app
from risk_monitor.service.security import ServiceSecurity
from risk_monitor.service.state import NO_EVALUATION, InMemoryRiskState, RiskStateProvider

log = get_logger(__name__)

#: How often readiness checks run. A setting would be nicer (see docs/service.md).
DEFAULT_CHECK_INTERVAL_S = 1.0
#: the outbox dispatcher's poll when nothing wakes it (the hot path wakes it on every alert)
DISPATCH_POLL_S = 1.0


class ServiceApp:
    """The service's parts and their start/stop order (also used in-process by tests)."""

    def __init__(self, settings: Settings, *, provider: RiskStateProvider | None = None,
                 registry_prefix: str | None = None, runtime: Runtime | None = None,
                 check_interval_s: float | None = None, insecure: bool = False) -> None:
        self.settings = settings
        # the composition root; the service migrates from its database check, not at start
        self.runtime = runtime or build_runtime(settings, migrate=False)
        self.security = ServiceSecurity.from_settings(settings.service, insecure=insecure)
        self.storage = self.runtime.storage
        self.engine = self.storage.engine
        self.provider = provider or self.runtime.state_provider
        self.registry_prefix = registry_prefix or settings.service.registry_prefix
        self.check_interval_s = check_interval_s or settings.service.health_check_interval_s
        self.instance_id = settings.instance_id
        self.started_at = datetime.now(UTC)
        self.redis: redis.Redis | None = None
        self.discovery: DiscoveryClient | None = None
        self.registration: ServiceRegistration | None = None
        self.config_state = ConfigState(settings.config_service.component,
                                        cache_path=settings.config_service.cache_path)
        self.config_watcher: ConfigWatcher | None = None
        self.health = HealthServicer()
        self.readiness: Readiness | None = None
        self.grpc: GrpcServer | None = None
        self.rest: RestServer | None = None
        self._drain_cut = asyncio.Event()
        self._stopped = False
        self._collector: Collector | None = None
        self._schema_ready = False
        self._db_probe = database_check(settings.effective_database_url)
        self._config_versions = self.storage.config_versions
        self.hot_path: HotPath | None = None
        self.dispatcher: OutboxDispatcher | None = None
        self._dispatcher_stop = threading.Event()
        self._dispatcher_thread: threading.Thread | None = None
        self._feed_stop = asyncio.Event()
        self._feed_task: asyncio.Task[None] | None = None

    @property
    def grpc_port(self) -> int:
        return self.grpc.port if self.grpc else 0

    @property
    def rest_port(self) -> int:
        return self.rest.port if self.rest else 0

    def config_status(self) -> dict[str, Any]:
        if self.config_watcher is not None:
            return self.config_watcher.readiness()
        return self.config_state.status()

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
        await self._database_check()
        self.redis = self.runtime.redis
        if self.redis is not None:
            self.discovery = DiscoveryClient(self.redis, prefix=self.registry_prefix)
        self._wire_config()
        locator = ConfigServiceLocator(settings.config_service, self.discovery) \
            if settings.config_service.enabled else None
        self.config_watcher = ConfigWatcher(
            settings.config_service, self.config_state, locator=locator,
            limits_file=settings.effective_limits_file, resilience=settings.resilience,
            last_good=self._last_good_config)
        await self.config_watcher.start()
        self._start_dispatcher()
        await self._start_hot_path()

        self.readiness = Readiness(self._checks(), interval_s=self.check_interval_s,
                                   timeout_s=max(2.0, self.check_interval_s * 2))
        self.readiness.on_change(self.health.set_all)
        servicer = RiskMonitorServicer(self.provider, config_status=self.config_status)
        self.grpc = GrpcServer(servicer, self.health, host=settings.service.grpc_host,
                               port=settings.service.grpc_port, security=self.security)
        try:
            await self.grpc.start()
        except RuntimeError as exc:
            raise ServiceError(f"cannot bind gRPC on {settings.service.grpc_host}:"
                               f"{settings.service.grpc_port}: {exc}", source="grpc") from exc
        identity = {"service": settings.service.service_name, "instance_id": self.instance_id}
        app = build_app(self.readiness, self.provider, identity=identity,
                        config_status=self.config_status, security=self.security)
        self.rest = RestServer(app, host=settings.service.rest_host,
                               port=settings.service.rest_port, tls=self.security.tls)
        try:
            await self.rest.start()
        except OSError as exc:
            raise ServiceError(f"cannot bind REST on {settings.service.rest_host}:"
                               f"{settings.service.rest_port}: {exc}", source="rest") from exc
        self._register_db_collector()
        await self.readiness.start()
        if self.redis is not None:
            info = instance_info(settings, grpc_port=self.grpc_port, rest_port=self.rest_port,
                                 started_at=self.started_at)
            registry = RedisServiceRegistry(self.redis, prefix=self.registry_prefix)
            self.registration = ServiceRegistration(registry, settings, info)
            await self.registration.start()
        log.info("service_started", service=settings.service.service_name,
                 instance_id=self.instance_id, grpc_port=self.grpc_port,
                 rest_port=self.rest_port, grpc_host=settings.service.grpc_host,
                 rest_host=settings.service.rest_host, ready=self.readiness.ready,
                 registry_key=self.registration.key if self.registration else None,
                 config=self.config_state.status())

    # -- hot path, quote feed, alert delivery ---------------------------------------------------
    def _start_dispatcher(self) -> None:
        """Deliver the outbox from a thread: whoever raised an alert (this process's hot path or
        a Dagster run), delivery retries and Slack outages are handled here."""
        if not self.settings.service.dispatch_alerts:
            return
        self.dispatcher = self.runtime.dispatcher()
        self._dispatcher_thread = threading.Thread(
            target=self.dispatcher.run, name="outbox-dispatcher", daemon=True,
            args=(self._dispatcher_stop, DISPATCH_POLL_S, self.settings.alerts.outbox_batch_size))
        self._dispatcher_thread.start()

    def _live_state(self) -> InMemoryRiskState | None:
        live = getattr(self.provider, "live", None)
        if isinstance(live, InMemoryRiskState):
            return live
        return self.provider if isinstance(self.provider, InMemoryRiskState) else None

    async def _start_hot_path(self) -> None:
        """The hot path when configured and there is something to watch; the quote feed when
        this process runs it (it also keeps the Redis quote cache warm for Dagster)."""
        settings = self.settings
        watched = bool(settings.venues or settings.custodians)
        live = self._live_state()
        if settings.service.hot_path and watched and live is not None:
            dispatcher = self.dispatcher
            self.hot_path = HotPath(settings, live, self.storage,
                                    instance_id=self.instance_id,
                                    wake=dispatcher.wake if dispatcher is not None else None)
            await self.hot_path.start()
            self.config_state.on_applied(self.hot_path.on_config)
        elif settings.service.hot_path and watched:
            log.warning("hot_path_disabled", reason="the risk state provider has no live state")
        elif settings.service.hot_path:
            log.info("hot_path_idle", reason="no venues or custodians configured")
        listener = self.hot_path.on_quotes if self.hot_path is not None else None
        cache_only = settings.service.stream and settings.redis_url  # warm for Dagster
        if settings.venues and (listener is not None or cache_only):
            self._feed_task = asyncio.create_task(
                run_quote_source(settings, self._feed_stop, listener), name="quote-feed")

    async def _stop_hot_path(self) -> None:
        self._feed_stop.set()
        if self.hot_path is not None:
            await self.hot_path.stop()
        if self._feed_task is not None:
            try:
                await asyncio.wait_for(self._feed_task, timeout=15)
            except (TimeoutError, Exception) as exc:
                self._feed_task.cancel()
                log.warning("quote_feed_not_stopped_cleanly", error=type(exc).__name__)
            self._feed_task = None
        if self._dispatcher_thread is not None:
            self._dispatcher_stop.set()
            if self.dispatcher is not None:
                self.dispatcher.wake()
            await asyncio.to_thread(self._dispatcher_thread.join, 15)
            self._dispatcher_thread = None

    def _wire_config(self) -> None:
        """Every applied configuration is recorded (limit_config_versions) and, when the
        provider evaluates in-process, used for the next evaluation at once."""
        self.config_state.on_applied(self._record_config)
        set_config = getattr(self.provider, "set_limit_config", None)
        if set_config is not None:
            def use(applied: AppliedConfig) -> None:
                set_config(applied.limits, applied.limits_version)

            self.config_state.on_applied(use)

    def _record_config(self, applied: AppliedConfig) -> None:
        if self._schema_ready:  # else recorded once the schema is there (_database_check)
            record_applied(self._config_versions, applied)

    def _last_good_config(self) -> ConfigDocument | None:
        """The newest service document any process applied (the Dagster runs' rule too)."""
        try:
            return last_good_document(self._config_versions, self.config_state.component)
        except Exception as exc:  # no schema yet, database down: the cache was the best bet
            log.warning("config_last_good_unreadable",
                        error=str(map_exception(exc, source="database")))
            return None

    def _checks(self) -> dict[str, CheckFn]:
        checks: dict[str, CheckFn] = {"database": self._database_check}
        if self.redis is not None:
            checks["redis"] = redis_check(self.redis)
        checks["config"] = self._config_check
        checks["data_freshness"] = self._freshness_check
        if self.dispatcher is not None:  # non-critical: every instance shares the notifier
            status, overdue_s = self.dispatcher.delivery_status, \
                self.settings.alerts.delivery_overdue_s
            checks["alert_delivery"] = blocking_check(
                "alert_delivery", lambda: status(overdue_s), critical=False)
        if self.hot_path is not None:
            # critical: without fresh evaluations this instance's CheckOrder answers age into
            # denials; another instance may be fine, so take this one out of rotation
            checks["hot_path"] = static_check("hot_path", self.hot_path.readiness,
                                              critical=True)
        return checks

    async def _database_check(self) -> CheckResult:
        """Reachable, and the schema at head: migrate on the first success (every process
        migrates at start; the storage layer serialises concurrent upgrades)."""
        result = await self._db_probe()
        if not result.ok or self._schema_ready:
            return result
        try:
            revision = await asyncio.to_thread(migrate, self.engine)
        except Exception as exc:
            error = map_exception(exc, source="database")
            record_error(error)
            return CheckResult("database", False, True, f"migration failed: {error.message}")
        self._schema_ready = True
        log.info("database_schema_ready", revision=revision)
        current = self.config_state.current
        if current is not None:  # applied before the schema existed: record it now
            try:
                await asyncio.to_thread(self._record_config, current)
            except Exception as exc:
                log.error("config_version_not_recorded", version=current.limits_version,
                          error=str(map_exception(exc, source="database")))
        return result

    async def _config_check(self) -> CheckResult:
        status = self.config_status()
        data = {k: status.get(k) for k in ("version", "source", "limits_version",
                                           "service_synced", "rejected", "last_rejection",
                                           "service_connected")}
        if not status["applied"]:
            return CheckResult("config", False, True, "no valid configuration applied", data=data)
        if self.settings.config_service.enabled and not status["service_synced"]:
            return CheckResult("config", False, True,
                               "configuration service enabled but neither reached nor cached",
                               data=data)
        detail = f"{status['source']}:{status['version']}"
        return CheckResult("config", True, True, detail, data=data)

    async def _freshness_check(self) -> CheckResult:
        try:
            view = await asyncio.to_thread(self.provider.risk_view, datetime.now(UTC))
        except Exception as exc:  # the database check reports the cause; stay non-critical
            return CheckResult("data_freshness", False, False,
                               f"risk state unavailable: {type(exc).__name__}")
        if view.evaluation_source == NO_EVALUATION:
            return CheckResult("data_freshness", False, False, NO_EVALUATION)
        stale = [s.key for s in view.sources if s.stale]
        data: Mapping[str, Any] = {"sources": {s.key: round(s.age_s, 3) for s in view.sources},
                                   "stale": stale}
        if stale:
            return CheckResult("data_freshness", False, False,
                               f"stale or missing: {', '.join(stale)}", data=data)
        return CheckResult("data_freshness", True, False,
                           f"{len(view.sources)} sources fresh", data=data)

    def _register_db_collector(self) -> None:
        """Risk figures from the database on /metrics (the same numbers every process sees)."""
        self._collector = register_collector(self.engine)

    # -- stop -----------------------------------------------------------------------------------
    def cut_drain(self) -> None:
        self._drain_cut.set()

    async def shutdown(self) -> None:
        """Graceful: NOT_SERVING first, drain, deregister, then stop the servers."""
        if self._stopped:
            return
        self.health.enter_graceful_shutdown()
        if self.readiness is not None:
            self.readiness.start_draining()
        drain = self.settings.service.drain_s
        log.info("service_draining", drain_s=drain, instance_id=self.instance_id)
        if drain > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drain_cut.wait(), timeout=drain)
        if self.registration is not None:
            await self.registration.stop()
        await self._close()
        log.info("service_stopped", instance_id=self.instance_id)

    async def _close(self) -> None:
        self._stopped = True
        if self.readiness is not None:
            await self.readiness.stop()
        await self._stop_hot_path()
        if self.grpc is not None:
            await self.grpc.stop(grace_s=1.0)
        if self.rest is not None:
            await self.rest.stop()
        if self.config_watcher is not None:
            await self.config_watcher.stop()
        if self._collector is not None:
            REGISTRY.unregister(self._collector)
            self._collector = None
        if self.discovery is not None:
            self.discovery.close()
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
        await stop.wait()
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
