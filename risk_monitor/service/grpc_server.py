"""gRPC side of the service: grpc.health.v1, reflection and the ``RiskMonitor`` API (grpc.aio).

Health is our own small servicer rather than ``grpc_health.v1.health.aio.HealthServicer``: the
library's asyncio servicer starts every service at SERVING before we checked anything, and when
one ``Watch`` stream of a service ends it drops the condition the other watchers of that service
wait on, so they never hear of a later change (grpcio-health-checking 1.81). Ours keeps the
same wire behaviour (Check, Watch with SERVICE_UNKNOWN for unknown names, graceful shutdown that
pins everything to NOT_SERVING) without either problem.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from risk_monitor.adapters.errors import map_exception
from risk_monitor.domain.figures import finite
from risk_monitor.domain.model import LimitResult, LimitStatus, Notification
from risk_monitor.platform.errors import DataValidationError, RiskMonitorError
from risk_monitor.platform.logging import get_logger, log_context, redact_text
from risk_monitor.platform.metrics import record_error
from risk_monitor.service import validation as validate
from risk_monitor.service.controls_grpc import ControlRpcs, timestamp, trading_state_number
from risk_monitor.service.proto import risk_monitor_pb2 as pb
from risk_monitor.service.proto import risk_monitor_pb2_grpc as pb_grpc
from risk_monitor.service.security import GrpcSecurityInterceptor, ServiceSecurity
from risk_monitor.service.state import (
    OrderDecision,
    OrderRequest,
    RiskView,
    RiskViewProvider,
)
from risk_monitor.service.trading import TradingControl

log = get_logger(__name__)

RISK_SERVICE = pb.DESCRIPTOR.services_by_name["RiskMonitor"].full_name  # risk_monitor.v1.RiskMonitor
HEALTH_SERVICES = ("", RISK_SERVICE)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN

DEFAULT_HEARTBEAT_S = 15.0
#: CheckOrder's own threads for a provider that must block (database reads, re-preparation
#: after a limit change): the default executor also runs the REST/alert database calls, and a
#: pre-trade check queued behind them missed its 2 ms budget
CHECK_ORDER_THREADS = 2
#: no request of this API needs more; gRPC's default (4 MB) let 1 MB strings through
MAX_REQUEST_BYTES = 64 * 1024
ALERT_BATCH = 100

#: the domain's statuses and the proto's enums share their names (LIMIT_STATUS_OK, ...)
_LIMIT_STATUS = {s: pb.LimitStatus.Value(f"LIMIT_STATUS_{s.value}") for s in LimitStatus}
_LIMIT_STATUS_BACK = {v: k for k, v in _LIMIT_STATUS.items()}
_COMPLIANCE = {s: pb.ComplianceStatus.Value(f"COMPLIANCE_STATUS_{s}")
               for s in ("COMPLIANT", "WARNING", "BREACH", "UNKNOWN")}


# -- health ---------------------------------------------------------------------------------------
class HealthServicer(health_pb2_grpc.HealthServicer):
    """grpc.health.v1 with every known service starting NOT_SERVING."""

    def __init__(self) -> None:
        self._status: dict[str, int] = dict.fromkeys(HEALTH_SERVICES, NOT_SERVING)
        self._changed = asyncio.Event()
        self._shutting_down = False

    def set(self, service: str, status: int) -> None:
        """Set one service's status (ignored once graceful shutdown began)."""
        if self._shutting_down or self._status.get(service) == status:
            return
        self._status[service] = status
        self._wake()

    def set_all(self, serving: bool) -> None:
        for service in list(self._status):
            self.set(service, SERVING if serving else NOT_SERVING)

    def enter_graceful_shutdown(self) -> None:
        """Pin every service to NOT_SERVING for good, so clients stop sending new calls."""
        if self._shutting_down:
            return
        for service in self._status:
            self._status[service] = NOT_SERVING
        self._shutting_down = True
        self._wake()

    def _wake(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def Check(self, request: health_pb2.HealthCheckRequest,
                    context: grpc.aio.ServicerContext) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest,
                    context: grpc.aio.ServicerContext) -> None:
        last: int | None = None
        while True:
            changed = self._changed
            status = self._status.get(request.service, SERVICE_UNKNOWN)
            if status != last:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            await changed.wait()


# -- conversions ----------------------------------------------------------------------------------
def _drop_none(**fields: Any) -> dict[str, Any]:
    """Unset optionals for None (``finite`` makes NaN / inf None: proto3 would otherwise carry
    a misleading 0)."""
    return {k: v for k, v in fields.items() if v is not None}


def limit_entry(result: LimitResult) -> pb.LimitStatusEntry:
    return pb.LimitStatusEntry(**_drop_none(
        limit_id=result.limit_id, kind=result.limit_kind, scope=result.scope,
        status=_LIMIT_STATUS[LimitStatus(result.status)], value=finite(result.value),
        warn=finite(result.warn_level), breach=float(result.breach_level),
        utilisation=finite(result.utilisation), as_of=timestamp(result.as_of),
        reason=result.reason, config_version=result.config_version,
        source_event_time=timestamp(result.source_event_time),
    ))


def alert_message(notification: Notification) -> pb.AlertNotification:
    return pb.AlertNotification(**_drop_none(
        idempotency_key=notification.idempotency_key, fingerprint=notification.fingerprint,
        kind=str(notification.kind.value), status=_LIMIT_STATUS[LimitStatus(notification.status)],
        severity=str(notification.severity.value), limit_id=notification.limit_id,
        limit_kind=notification.limit_kind, scope=notification.scope,
        value=finite(notification.value), warn=finite(notification.warn_level),
        breach=float(notification.breach_level), utilisation=finite(notification.utilisation),
        config_version=notification.config_version, correlation_id=notification.correlation_id,
        episode=int(notification.episode), detected_at=timestamp(notification.detected_at),
        source_event_time=timestamp(notification.source_event_time), reason=notification.reason,
    ))


def risk_status_message(view: RiskView, config: Mapping[str, Any] | None) -> pb.RiskStatus:
    config = config or {}
    message = pb.RiskStatus(**_drop_none(
        status=_COMPLIANCE.get(view.status, pb.COMPLIANCE_STATUS_UNKNOWN),
        as_of=timestamp(view.as_of), equity=finite(view.equity),
        gross_exposure=finite(view.gross_exposure), net_exposure=finite(view.net_exposure),
        limit_config_version=view.limit_config_version or config.get("limits_version") or "",
        evaluation_source=view.evaluation_source,
        config_document_version=config.get("version") or "",
        config_source=config.get("source") or "",
    ))
    for source in view.sources:
        message.sources.append(pb.SourceFreshness(**_drop_none(
            source=source.key, kind=source.kind, venue=source.venue, account=source.account,
            ok=source.ok, as_of=timestamp(source.as_of), age_seconds=source.age_s,
            stale=source.stale, error_code=source.error_code or "",
        )))
    for status, count in view.counts.items():
        message.status_counts[status] = count
    return message


_SIDES = {pb.SIDE_BUY: "buy", pb.SIDE_SELL: "sell"}


def order_from_request(request: pb.CheckOrderRequest) -> OrderRequest:
    """A validated order; DataValidationError names the first bad field."""
    if request.side not in _SIDES:
        raise DataValidationError("side: must be SIDE_BUY or SIDE_SELL", source="request",
                                  details={"field": "side"})
    validate.printable("client_order_id", request.client_order_id,
                       validate.MAX_CLIENT_ORDER_ID_LENGTH)
    return OrderRequest(
        venue=validate.identifier("venue", request.venue),
        account=validate.identifier("account", request.account, required=False) or "main",
        instrument=validate.instrument("instrument", request.instrument),
        side=_SIDES[request.side], quantity=validate.amount("quantity", request.quantity),
        price=validate.amount("price", request.price) if request.HasField("price") else None,
        position_side=validate.choice("position_side", request.position_side,
                                      validate.POSITION_SIDES) or None,
        client_order_id=request.client_order_id,
    )


async def invalid_argument(context: grpc.aio.ServicerContext, error: DataValidationError,
                           method: str) -> None:
    """Answer INVALID_ARGUMENT with the (bounded) reason; the log names the field only."""
    record_error(error)
    log.info("grpc_invalid_argument", method=method, field=error.details.get("field"))
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, validate.loggable(error.message, 200)
                        or "invalid argument")


def decision_message(decision: OrderDecision) -> pb.CheckOrderResponse:
    response = pb.CheckOrderResponse(
        decision=pb.DECISION_ALLOW if decision.allowed else pb.DECISION_DENY,
        allowed=decision.allowed, reasons=list(decision.reasons),
        as_of=timestamp(decision.as_of), limit_config_version=decision.limit_config_version,
        evaluation_source=decision.evaluation_source,
        reason_codes=list(decision.codes),
        trading_state=trading_state_number(decision.trading_state),
    )
    for projected in decision.projected:
        response.projected.append(pb.ProjectedLimit(**_drop_none(
            limit=limit_entry(projected.result),
            current_utilisation=finite(projected.current_utilisation))))
    return response


# -- the API --------------------------------------------------------------------------------------
class RiskMonitorServicer(ControlRpcs, pb_grpc.RiskMonitorServicer):
    """Thin: convert, ask the provider (off the loop), convert back."""

    def __init__(self, provider: RiskViewProvider,
                 config_status: Callable[[], Mapping[str, Any] | None] = lambda: None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 trading: TradingControl | None = None) -> None:
        self.provider = provider
        self.config_status = config_status
        self.clock = clock
        self.trading = trading
        self.check_executor = ThreadPoolExecutor(CHECK_ORDER_THREADS,
                                                 thread_name_prefix="check-order")

    def close(self) -> None:
        self.check_executor.shutdown(wait=False, cancel_futures=True)

    async def _call(self, context: grpc.aio.ServicerContext, fn: Callable[..., Any],
                    *args: Any, executor: ThreadPoolExecutor | None = None) -> Any:
        try:
            if executor is not None:
                return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
            return await asyncio.to_thread(fn, *args)
        except Exception as exc:
            await self._failed(context, exc)

    @staticmethod
    async def _failed(context: grpc.aio.ServicerContext, exc: Exception) -> None:
        """Abort the call; never leak a library's message or stack to the client."""
        error = map_exception(exc, source="risk_state")
        record_error(error)
        log.warning("grpc_call_failed", error=str(error))
        code = grpc.StatusCode.UNAVAILABLE if error.retryable else grpc.StatusCode.INTERNAL
        await context.abort(code, redact_text(error.message))

    async def GetRiskStatus(self, request: pb.GetRiskStatusRequest,
                            context: grpc.aio.ServicerContext) -> pb.RiskStatus:
        view = await self._call(context, self.provider.risk_view, self.clock())
        return risk_status_message(view, self.config_status())

    async def ListLimitStatus(self, request: pb.ListLimitStatusRequest,
                              context: grpc.aio.ServicerContext) -> pb.ListLimitStatusResponse:
        try:
            wanted = {_LIMIT_STATUS_BACK[s] for s in validate.enum_numbers(
                "statuses", request.statuses, _LIMIT_STATUS_BACK)}
            validate.printable("scope_prefix", request.scope_prefix,
                               validate.MAX_SCOPE_PREFIX_LENGTH)
            validate.identifier("limit_id", request.limit_id, required=False)
        except DataValidationError as exc:
            await invalid_argument(context, exc, "ListLimitStatus")
        now = self.clock()
        results: list[LimitResult] = await self._call(context, self.provider.limit_results)
        view: RiskView = await self._call(context, self.provider.risk_view, now)
        response = pb.ListLimitStatusResponse(**_drop_none(
            limit_config_version=view.limit_config_version,
            evaluation_source=view.evaluation_source, as_of=timestamp(view.as_of)))
        for result in sorted(results, key=lambda r: (r.limit_id, r.scope)):
            if wanted and LimitStatus(result.status) not in wanted:
                continue
            if request.scope_prefix and not result.scope.startswith(request.scope_prefix):
                continue
            if request.limit_id and result.limit_id != request.limit_id:
                continue
            response.limits.append(limit_entry(result))
        return response

    async def WatchAlerts(self, request: pb.WatchAlertsRequest,
                          context: grpc.aio.ServicerContext) -> AsyncIterator[pb.AlertEvent]:
        try:
            start = validate.cursor("cursor", request.cursor)
            interval = validate.heartbeat("heartbeat_interval_s", request.heartbeat_interval_s,
                                          DEFAULT_HEARTBEAT_S)
        except DataValidationError as exc:
            await invalid_argument(context, exc, "WatchAlerts")
        cursor = start if start is not None else await self._call(context,
                                                                   self.provider.alert_head)
        loop = asyncio.get_running_loop()
        next_heartbeat = loop.time() + interval
        while True:
            items = await self._call(context, self.provider.alerts_after, cursor, ALERT_BATCH)
            for item in items:
                cursor = item.seq
                yield pb.AlertEvent(cursor=str(cursor),
                                    alert=alert_message(item.notification))
            if items:
                continue
            remaining = next_heartbeat - loop.time()
            if remaining <= 0:
                yield pb.AlertEvent(cursor=str(cursor),
                                    heartbeat=pb.Heartbeat(at=timestamp(self.clock())))
                next_heartbeat = loop.time() + interval
                continue
            await self.provider.wait_alerts(cursor, remaining)

    async def _decide(self, context: grpc.aio.ServicerContext,
                      order: OrderRequest) -> OrderDecision:
        """On the loop when the provider decides in memory (a thread hop cost more than the
        ~0.1-0.3 ms decision under interpreter-lock contention), else on CheckOrder's threads."""
        now = self.clock()
        quick: Callable[[OrderRequest, datetime], OrderDecision | None] | None = getattr(
            self.provider, "check_order_now", None)
        if quick is not None:
            try:
                decided = quick(order, now)
            except Exception as exc:
                await self._failed(context, exc)
                raise
            if decided is not None:
                return decided
        decision: OrderDecision = await self._call(context, self.provider.check_order, order,
                                                   now, executor=self.check_executor)
        return decision

    async def CheckOrder(self, request: pb.CheckOrderRequest,
                         context: grpc.aio.ServicerContext) -> pb.CheckOrderResponse:
        try:
            order = order_from_request(request)
        except DataValidationError as exc:
            await invalid_argument(context, exc, "CheckOrder")
        with log_context(client_order_id=validate.loggable(request.client_order_id or None)):
            decision = await self._decide(context, order)
            # the audit line once the answer is on its way (the callback keeps this context):
            # formatting and redacting it cost as much CPU as the decision itself
            asyncio.get_running_loop().call_soon(_log_checked, order, decision)
        if self.trading is not None:
            self.trading.record_check(
                order, allowed=decision.allowed, codes=decision.codes, reasons=decision.reasons,
                trading_state=decision.trading_state, at=decision.as_of,
                client_order_id=validate.loggable(request.client_order_id or "") or "")
        return decision_message(decision)


def _log_checked(order: OrderRequest, decision: OrderDecision) -> None:
    log.info("order_checked", venue=order.venue, account=order.account,
             instrument=order.instrument, side=order.side, quantity=order.quantity,
             allowed=decision.allowed, reasons=list(decision.reasons),
             codes=list(decision.codes), trading_state=decision.trading_state)


class GrpcServer:
    """grpc.aio server hosting health, reflection and the RiskMonitor service."""

    def __init__(self, servicer: RiskMonitorServicer, health: HealthServicer, *,
                 host: str, port: int, security: ServiceSecurity | None = None) -> None:
        self.health = health
        self.servicer = servicer
        self.host = host
        self.requested_port = port
        self.port = 0
        self.security = security or ServiceSecurity.open()
        self.server = grpc.aio.server(
            interceptors=[GrpcSecurityInterceptor(self.security)],
            options=[("grpc.so_reuseport", 0),
                     ("grpc.max_receive_message_length", MAX_REQUEST_BYTES)])
        pb_grpc.add_RiskMonitorServicer_to_server(servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(health, self.server)
        reflection.enable_server_reflection(
            (RISK_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), self.server)

    async def start(self) -> int:
        address = f"[{self.host}]" if ":" in self.host else self.host
        target = f"{address}:{self.requested_port}"
        tls = self.security.tls
        self.port = self.server.add_secure_port(target, tls.grpc_credentials()) \
            if tls is not None else self.server.add_insecure_port(target)
        if self.port == 0:
            raise RiskMonitorError(f"gRPC could not bind {self.host}:{self.requested_port}",
                                   source="grpc")
        await self.server.start()
        return self.port

    async def stop(self, grace_s: float) -> None:
        await self.server.stop(grace_s)
        self.servicer.close()
