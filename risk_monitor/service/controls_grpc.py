"""gRPC RPCs of the operator controls (mixed into ``RiskMonitorServicer``): acknowledge and silence
alerts, read and set the trading state.

The caller is the bearer token's name, set by the security interceptor (``GRPC_CALLER``); a
request's ``author`` is read only when the service runs without authentication. Refusals are
INVALID_ARGUMENT (bad request) or NOT_FOUND (unknown alert or silence), with our error code in
the message; nothing is written then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from risk_monitor.adapters.sql.alert_controls import AckedAlert, SqlAlertControls
from risk_monitor.domain.silences import Silence, silence_end
from risk_monitor.domain.trading_state import TradingState, TradingVerdict
from risk_monitor.platform.errors import (
    AlertControlError,
    StorageUnavailableError,
    TradingControlError,
)
from risk_monitor.service.proto import risk_monitor_pb2 as pb
from risk_monitor.service.security import GRPC_CALLER, caller_identity
from risk_monitor.service.sql_state import DatabaseRiskView
from risk_monitor.service.state import RiskViewProvider
from risk_monitor.service.trading import TradingControl

T = TypeVar("T")

STATE_TO_PB = {TradingState.ACTIVE: pb.TRADING_STATE_ACTIVE,
               TradingState.REDUCING: pb.TRADING_STATE_REDUCING,
               TradingState.HALTED: pb.TRADING_STATE_HALTED}
PB_TO_STATE = {v: k for k, v in STATE_TO_PB.items()}


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    return ts


def silence_message(s: Silence, now: datetime) -> pb.Silence:
    return pb.Silence(
        id=s.id, matchers=[pb.SilenceMatcher(name=m.name, op=m.op, value=m.value)
                           for m in s.matchers],
        starts_at=timestamp(s.starts_at), ends_at=timestamp(s.ends_at), created_by=s.created_by,
        comment=s.comment, expired_at=timestamp(s.expired_at), active=s.active(now))


def ack_message(item: AckedAlert) -> pb.Acknowledgement:
    ack, target = item.ack, item.target
    return pb.Acknowledgement(
        fingerprint=ack.fingerprint, episode=ack.episode,
        status=f"LIMIT_STATUS_{ack.status.value}",
        acked_by=ack.acked_by, acked_at=timestamp(ack.acked_at), comment=ack.comment,
        limit_id=target.limit_id, scope=target.scope,
        correlation_id=target.correlation_id or "")


def trading_state_number(state: str) -> pb.TradingStateValue:
    """The proto enum of a state name (UNSPECIFIED for an unknown one)."""
    try:
        return STATE_TO_PB[TradingState(state)]
    except ValueError:
        return pb.TRADING_STATE_UNSPECIFIED


def trading_states_message(states: dict[str, TradingVerdict],
                           control: TradingControl) -> pb.TradingStates:
    message = pb.TradingStates()
    for scope, verdict in states.items():
        message.states.append(pb.ScopeTradingState(
            scope=scope, state=STATE_TO_PB[verdict.state], set_by_scope=verdict.scope,
            origin=verdict.origin, cause=verdict.cause))
    for scope, manual in sorted(control.manual().items()):
        message.manual.append(pb.ManualTradingState(
            scope=scope, state=STATE_TO_PB[manual.state], changed_by=manual.changed_by,
            reason=manual.reason))
    return message


def caller(author: str, error: type[AlertControlError | TradingControlError]) -> str:
    return caller_identity(GRPC_CALLER.get(), author, error)


class ControlRpcs:
    """Needs ``self.provider``, ``self.clock`` and ``self.trading`` (as ``RiskMonitorServicer``
    has; ``trading`` None: the trading RPCs answer UNAVAILABLE)."""

    provider: RiskViewProvider
    clock: Callable[[], datetime]
    trading: TradingControl | None
    _alert_controls: SqlAlertControls | None = None

    def _controls(self) -> SqlAlertControls:
        if self._alert_controls is None:
            if not isinstance(self.provider, DatabaseRiskView):
                raise StorageUnavailableError("acknowledgements and silences need the "
                                              "database store", source="alerts_grpc")
            self._alert_controls = SqlAlertControls(self.provider.engine, clock=self.clock)
        return self._alert_controls

    def _trading(self) -> TradingControl:
        if self.trading is None:
            raise StorageUnavailableError("trading state is not enabled on this instance",
                                          source="trading_grpc")
        return self.trading

    @staticmethod
    async def _control(context: grpc.aio.ServicerContext, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except (AlertControlError, TradingControlError) as exc:
            code = grpc.StatusCode.NOT_FOUND if exc.details.get("reason") == "not_found" \
                else grpc.StatusCode.INVALID_ARGUMENT
            await context.abort(code, f"{exc.code}: {exc.message}")
            raise  # abort raises; this keeps type checkers sure
        except StorageUnavailableError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{exc.code}: {exc.message}")
            raise

    async def AcknowledgeAlert(self, request: pb.AcknowledgeAlertRequest,
                               context: grpc.aio.ServicerContext) -> pb.Acknowledgement:
        def run() -> AckedAlert:
            return self._controls().acknowledge(
                request.key, by=caller(request.author, AlertControlError),
                comment=request.comment)
        return ack_message(await self._control(context, run))

    async def CreateSilence(self, request: pb.CreateSilenceRequest,
                            context: grpc.aio.ServicerContext) -> pb.Silence:
        now = self.clock()

        def run() -> Silence:
            actor = caller(request.author, AlertControlError)
            starts_at = request.starts_at.ToDatetime(tzinfo=UTC) \
                if request.HasField("starts_at") else now
            try:  # proto3: an unset duration_seconds reads 0
                ends_at = silence_end(
                    starts_at, ends_at=request.ends_at.ToDatetime(tzinfo=UTC)
                    if request.HasField("ends_at") else None,
                    duration=timedelta(seconds=request.duration_seconds)
                    if request.duration_seconds else None)
            except ValueError as exc:
                raise AlertControlError(f"{exc} (duration_seconds or ends_at)") from exc
            return self._controls().add_silence(list(request.matchers), starts_at=starts_at,
                                                ends_at=ends_at, created_by=actor,
                                                comment=request.comment)
        return silence_message(await self._control(context, run), now)

    async def ExpireSilence(self, request: pb.ExpireSilenceRequest,
                            context: grpc.aio.ServicerContext) -> pb.Silence:
        def run() -> Silence:
            return self._controls().expire_silence(
                request.id, by=caller(request.author, AlertControlError))
        return silence_message(await self._control(context, run), self.clock())

    async def ListAlertControls(self, request: pb.ListAlertControlsRequest,
                                context: grpc.aio.ServicerContext) -> pb.AlertControls:
        now = self.clock()

        def run() -> Any:
            controls = self._controls()
            return (controls.silences(active_at=None if request.include_inactive else now),
                    controls.current_acknowledgements())
        silences, acks = await self._control(context, run)
        return pb.AlertControls(silences=[silence_message(s, now) for s in silences],
                                acknowledgements=[ack_message(a) for a in acks])

    async def GetTradingState(self, request: pb.GetTradingStateRequest,
                              context: grpc.aio.ServicerContext) -> pb.TradingStates:
        def run() -> pb.TradingStates:
            trading = self._trading()
            return trading_states_message(trading.states(), trading)
        return await self._control(context, run)

    async def SetTradingState(self, request: pb.SetTradingStateRequest,
                              context: grpc.aio.ServicerContext) -> pb.TradingStates:
        def run() -> pb.TradingStates:
            trading = self._trading()
            if request.state not in PB_TO_STATE:
                raise TradingControlError("state must be TRADING_STATE_ACTIVE, _REDUCING or "
                                          "_HALTED", source="trading_grpc")
            states = trading.set_state(request.scope, PB_TO_STATE[request.state],
                                       by=caller(request.author, TradingControlError),
                                       reason=request.reason)
            return trading_states_message(states, trading)
        return await self._control(context, run)
