"""The parts of ``risk-monitor serve``, each owning its start, stop and readiness check.

``ServiceApp`` (``service/main.py``) only orders them: the store (schema), the limit
configuration, alert delivery, evaluation (hot path + quote feed), the API servers, and the
registration in Redis (``service/registration.py``). Every part is built from the runtime of the
composition root (``risk_monitor.bootstrap``), none wires its own adapters.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY
from prometheus_client.registry import Collector

from risk_monitor.adapters.config_service import AppliedConfig, ConfigState
from risk_monitor.adapters.errors import map_exception
from risk_monitor.adapters.prometheus import register_collector
from risk_monitor.adapters.sql import OutboxDispatcher
from risk_monitor.adapters.sql.migrate import migrate
from risk_monitor.bootstrap import Runtime
from risk_monitor.lineage import SlackEventLinks, link_slack_messages
from risk_monitor.platform.errors import ServiceError
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.metrics import record_error
from risk_monitor.service.grpc_server import GrpcServer, HealthServicer, RiskMonitorServicer
from risk_monitor.service.health import CheckFn, CheckResult, Readiness, database_check
from risk_monitor.service.hot_path import HotPath, run_quote_source
from risk_monitor.service.private_stream import FillLedger, PrivateStreams, streamed_accounts
from risk_monitor.service.rest import RestServer, build_app
from risk_monitor.service.security import ServiceSecurity
from risk_monitor.service.state import NO_EVALUATION, LiveEvaluation, RiskViewProvider
from risk_monitor.service.trading import TradingControl, build_trading
from risk_monitor.service.trading_dashboard import TradingDashboard, build_trading_dashboard

if TYPE_CHECKING:
    from risk_monitor.adapters.alertmanager import AlertmanagerSink

log = get_logger(__name__)

#: the outbox dispatcher's poll when nothing wakes it (the hot path wakes it on every alert)
DISPATCH_POLL_S = 1.0


class StoreSchema:
    """The database check: reachable, and the schema at head (migrated on the first success,
    so the service starts while the database is down; the storage layer serialises
    concurrent upgrades). ``on_ready`` runs once the schema is there."""

    def __init__(self, runtime: Runtime, on_ready: Callable[[], None]) -> None:
        self.runtime = runtime
        self.ready = False
        self._on_ready = on_ready
        self._probe = database_check(runtime.settings.effective_database_url)

    async def check(self) -> CheckResult:
        result = await self._probe()
        if not result.ok or self.ready:
            return result
        try:
            revision = await asyncio.to_thread(migrate, self.runtime.storage.engine)
        except Exception as exc:
            error = map_exception(exc, source="database")
            record_error(error)
            return CheckResult("database", False, True, f"migration failed: {error.message}")
        self.ready = True
        log.info("database_schema_ready", revision=revision)
        await asyncio.to_thread(self._on_ready)
        return result


class LimitConfiguration:
    """The limit document in force, from the one limit provider (``limit_provider.py``, the
    Dagster runs' too) and its refresh loop. Every applied version is recorded
    (``limit_config_versions``) once the schema is there, and handed to the evaluators."""

    def __init__(self, runtime: Runtime, provider: RiskViewProvider) -> None:
        self.runtime = runtime
        self.limits = runtime.limits(record=False)
        self.state = self.limits.state
        set_config = getattr(provider, "set_limit_config", None)
        if set_config is not None:
            def use(applied: AppliedConfig) -> None:
                set_config(applied.limits, applied.limits_version)

            self.state.on_applied(use)

    def status(self) -> dict[str, Any]:
        return self.limits.readiness()

    async def start(self) -> None:
        await self.limits.start()

    async def stop(self) -> None:
        await self.limits.stop()

    def record_current(self) -> None:
        """The schema is there: record what is applied, and everything applied from now on."""
        try:
            self.limits.start_recording()
        except Exception as exc:
            log.error("config_version_not_recorded",
                      error=str(map_exception(exc, source="database")))

    async def check(self) -> CheckResult:
        status = self.status()
        data = {k: status.get(k) for k in ("version", "source", "limits_version",
                                           "service_synced", "rejected", "last_rejection",
                                           "service_connected")}
        if not status["applied"]:
            return CheckResult("config", False, True, "no valid configuration applied", data=data)
        if self.runtime.settings.config_service.enabled and not status["service_synced"]:
            return CheckResult("config", False, True,
                               "configuration service enabled but neither reached nor cached",
                               data=data)
        return CheckResult("config", True, True, f"{status['source']}:{status['version']}",
                           data=data)


class AlertDelivery:
    """The outbox dispatcher on a thread: whoever raised an alert (this process's hot path or a
    Dagster run), delivery retries and Slack outages are handled here."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.dispatcher: OutboxDispatcher | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sink_thread: threading.Thread | None = None  # the Alertmanager sink, if any
        self._warm_thread: threading.Thread | None = None  # keeps a Slack connection open
        self.sink: AlertmanagerSink | None = None

    def start(self) -> None:
        settings = self.runtime.settings
        if not settings.service.dispatch_alerts:
            return
        self.dispatcher = self.runtime.dispatcher()
        self._thread = threading.Thread(
            target=self.dispatcher.run, name="outbox-dispatcher", daemon=True,
            args=(self._stop, DISPATCH_POLL_S, settings.alerts.outbox_batch_size))
        self._thread.start()
        keep_warm = getattr(self.dispatcher.notifier, "keep_warm", None)
        if callable(keep_warm):  # the first alert after a quiet spell: no new connection
            self._warm_thread = threading.Thread(target=keep_warm, args=(self._stop,),
                                                 name="slack-keep-warm", daemon=True)
            self._warm_thread.start()
        from risk_monitor.adapters.alertmanager import AlertmanagerSink

        self.sink = sink = AlertmanagerSink.from_settings(self.runtime.storage.engine, settings)
        if sink is not None and settings.alertmanager is not None:
            self._sink_thread = threading.Thread(
                target=sink.run, name="alertmanager-sink", daemon=True,
                args=(self._stop, settings.alertmanager.poll_s))
            self._sink_thread.start()

    async def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            if self.dispatcher is not None:
                self.dispatcher.wake()
            await asyncio.to_thread(self._thread.join, 15)
            self._thread = None
        if self._sink_thread is not None:
            await asyncio.to_thread(self._sink_thread.join, 15)
            self._sink_thread = None
        if self._warm_thread is not None:
            await asyncio.to_thread(self._warm_thread.join, 15)
            self._warm_thread = None

    def checks(self) -> dict[str, CheckFn]:
        """Non-critical: every instance shares the notifier."""
        from risk_monitor.service.health import blocking_check

        if self.dispatcher is None:
            return {}
        status, overdue_s = self.dispatcher.delivery_status, \
            self.runtime.settings.alerts.delivery_overdue_s
        checks = {"alert_delivery": blocking_check("alert_delivery", lambda: status(overdue_s),
                                                   critical=False)}
        if self.sink is not None:  # alerts late for the Alertmanager sink show as well
            sink_status = self.sink.delivery_status
            checks["alertmanager_delivery"] = blocking_check(
                "alertmanager_delivery", lambda: sink_status(overdue_s), critical=False)
        return checks


class Evaluation:
    """The hot path when configured and there is something to watch, and the quote feed when
    this process runs it (it also keeps the Redis quote cache warm for Dagster)."""

    def __init__(self, runtime: Runtime, provider: RiskViewProvider) -> None:
        self.runtime = runtime
        self.provider = provider
        self.hot_path: HotPath | None = None
        self._feed_stop = asyncio.Event()
        self._feed_task: asyncio.Task[None] | None = None
        self.fill_ledger = FillLedger()
        self.private_streams: PrivateStreams | None = None
        self._event_links: SlackEventLinks | None = None

    def live_state(self) -> LiveEvaluation | None:
        live = getattr(self.provider, "live", None)
        if isinstance(live, LiveEvaluation):
            return live
        return self.provider if isinstance(self.provider, LiveEvaluation) else None

    async def start(self, config: ConfigState, delivery: AlertDelivery) -> None:
        settings = self.runtime.settings
        watched = bool(settings.venues or settings.custodians)
        live = self.live_state()
        if settings.service.hot_path and watched and live is not None:
            dispatcher = delivery.dispatcher
            streamed = streamed_accounts(settings, self.fill_ledger)  # trading: private streams
            if streamed is not None:
                self.private_streams = streamed[2]
                self.private_streams.start()
            self.hot_path = HotPath(
                streamed[0] if streamed else settings, live, self.runtime.storage,
                accounts=streamed[1] if streamed else self.runtime.exchange_accounts(shared=False),
                custodians=self.runtime.custodians(), instance_id=settings.instance_id,
                wake=dispatcher.wake if dispatcher is not None else None, delivery=dispatcher)
            if dispatcher is not None:  # lineage (issue 11): Slack message -> Dagster event link
                self._event_links = link_slack_messages(self.hot_path.lineage, dispatcher)
            await self.hot_path.start()
            config.on_applied(self.hot_path.on_config)
        elif settings.service.hot_path and watched:
            log.warning("hot_path_disabled", reason="the risk state provider has no live state")
        elif settings.service.hot_path:
            log.info("hot_path_idle", reason="no venues or custodians configured")
        listener = self.hot_path.on_quotes if self.hot_path is not None else None
        cache_only = settings.service.stream and settings.redis_url  # warm for Dagster
        if settings.venues and (listener is not None or cache_only):
            self._feed_task = asyncio.create_task(
                run_quote_source(settings, self._feed_stop, listener), name="quote-feed")

    async def stop(self) -> None:
        self._feed_stop.set()
        if self.private_streams is not None:
            await self.private_streams.stop()
        if self.hot_path is not None:
            await self.hot_path.stop()
        if self._event_links is not None:
            await asyncio.to_thread(self._event_links.stop)
            self._event_links = None
        if self._feed_task is not None:
            try:
                await asyncio.wait_for(self._feed_task, timeout=15)
            except (TimeoutError, Exception) as exc:
                self._feed_task.cancel()
                log.warning("quote_feed_not_stopped_cleanly", error=type(exc).__name__)
            self._feed_task = None

    def checks(self) -> dict[str, CheckFn]:
        """Critical: without fresh evaluations this instance's CheckOrder answers age into
        denials; another instance may be fine, so take this one out of rotation."""
        from risk_monitor.service.health import static_check

        if self.hot_path is None:
            return {}
        return {"hot_path": static_check("hot_path", self.hot_path.readiness, critical=True)}

    async def freshness_check(self) -> CheckResult:
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


class Trading:
    """The trading state (ACTIVE / REDUCING / HALTED) that gates CheckOrder, its refresh loop,
    and the dashboard's trading document (orders, fills, reconciliation breaks)."""

    def __init__(self, runtime: Runtime, provider: RiskViewProvider) -> None:
        self.runtime = runtime
        self.provider = provider
        self.control: TradingControl | None = None
        self.dashboard: TradingDashboard | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, evaluation: Evaluation) -> None:
        settings = self.runtime.settings
        engine = self.runtime.storage.engine
        self.control = build_trading(
            settings, engine, self.provider, evaluation.live_state(), settings.instance_id,
            fills=evaluation.fill_ledger if evaluation.private_streams else None)
        self.dashboard = build_trading_dashboard(
            settings, self.control, self.provider, engine=engine, hot_path=evaluation.hot_path,
            redis_client=self.runtime.redis, storage=self.runtime.storage)
        self._task = asyncio.create_task(self.control.run(self._stop), name="trading-state")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, timeout=15)
            self._task = None


class ApiServers:
    """Readiness, gRPC (grpc.health.v1 + the risk API) and REST, and the store's figures on
    ``/metrics``; the health flips with readiness both ways."""

    def __init__(self, runtime: Runtime, provider: RiskViewProvider,
                 security: ServiceSecurity, config_status: Callable[[], dict[str, Any]],
                 check_interval_s: float) -> None:
        self.runtime = runtime
        self.provider = provider
        self.security = security
        self.config_status = config_status
        self.check_interval_s = check_interval_s
        self.health = HealthServicer()
        self.readiness: Readiness | None = None
        self.grpc: GrpcServer | None = None
        self.rest: RestServer | None = None
        self._collector: Collector | None = None

    @property
    def grpc_port(self) -> int:
        return self.grpc.port if self.grpc else 0

    @property
    def rest_port(self) -> int:
        return self.rest.port if self.rest else 0

    async def start(self, checks: dict[str, CheckFn], trading: Trading) -> None:
        service = self.runtime.settings.service
        self.readiness = Readiness(checks, interval_s=self.check_interval_s,
                                   timeout_s=max(2.0, self.check_interval_s * 2))
        self.readiness.on_change(self.health.set_all)
        servicer = RiskMonitorServicer(self.provider, config_status=self.config_status,
                                       trading=trading.control)
        self.grpc = GrpcServer(servicer, self.health, host=service.grpc_host,
                               port=service.grpc_port, security=self.security)
        try:
            await self.grpc.start()
        except RuntimeError as exc:
            raise ServiceError(f"cannot bind gRPC on {service.grpc_host}:{service.grpc_port}: "
                               f"{exc}", source="grpc") from exc
        identity = {"service": service.service_name,
                    "instance_id": self.runtime.settings.instance_id}
        app = build_app(self.readiness, self.provider, identity=identity,
                        config_status=self.config_status, security=self.security,
                        trading=trading.control, trading_dashboard=trading.dashboard)
        self.rest = RestServer(app, host=service.rest_host, port=service.rest_port,
                               tls=self.security.tls)
        try:
            await self.rest.start()
        except OSError as exc:
            raise ServiceError(f"cannot bind REST on {service.rest_host}:{service.rest_port}: "
                               f"{exc}", source="rest") from exc
        self._collector = register_collector(self.runtime.storage.engine)
        await self.readiness.start()

    def start_draining(self) -> None:
        self.health.enter_graceful_shutdown()
        if self.readiness is not None:
            self.readiness.start_draining()

    async def stop_readiness(self) -> None:
        if self.readiness is not None:
            await self.readiness.stop()

    async def stop(self) -> None:
        if self.grpc is not None:
            await self.grpc.stop(grace_s=1.0)
        if self.rest is not None:
            await self.rest.stop()
        if self._collector is not None:
            REGISTRY.unregister(self._collector)
            self._collector = None
