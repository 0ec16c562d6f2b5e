"""gRPC RPCs of the trading state (mixed into ``RiskMonitorServicer``).

The caller is the bearer token's name (``GRPC_CALLER``); ``author`` is read only when the service
runs without authentication. A refused change is INVALID_ARGUMENT and writes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import grpc

from risk_monitor.domain.trading_state import TradingState, TradingVerdict
from risk_monitor.platform.errors import StorageUnavailableError, TradingControlError
from risk_monitor.service.proto import risk_monitor_pb2 as pb
from risk_monitor.service.security import GRPC_CALLER
from risk_monitor.service.trading import TradingControl

T = TypeVar("T")

STATE_TO_PB = {
    TradingState.ACTIVE: pb.TRADING_STATE_ACTIVE,
    TradingState.REDUCING: pb.TRADING_STATE_REDUCING,
    TradingState.HALTED: pb.TRADING_STATE_HALTED,
}
PB_TO_STATE = {v: k for k, v in STATE_TO_PB.items()}


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


class TradingRpcs:
    """Needs ``self.trading`` (None: the RPCs answer UNAVAILABLE)."""

    trading: TradingControl | None

    async def _trading_call(self, context: grpc.aio.ServicerContext, fn: Callable[[], T]) -> T:
        try:
            if self.trading is None:
                raise StorageUnavailableError("trading state is not enabled on this instance",
                                              source="trading_grpc")
            return await asyncio.to_thread(fn)
        except TradingControlError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{exc.code}: {exc.message}")
            raise
        except StorageUnavailableError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{exc.code}: {exc.message}")
            raise

    async def GetTradingState(self, request: pb.GetTradingStateRequest,
                              context: grpc.aio.ServicerContext) -> pb.TradingStates:
        def run() -> pb.TradingStates:
            assert self.trading is not None
            return trading_states_message(self.trading.states(), self.trading)
        return await self._trading_call(context, run)

    async def SetTradingState(self, request: pb.SetTradingStateRequest,
                              context: grpc.aio.ServicerContext) -> pb.TradingStates:
        def run() -> pb.TradingStates:
            assert self.trading is not None
            if request.state not in PB_TO_STATE:
                raise TradingControlError("state must be TRADING_STATE_ACTIVE, _REDUCING or "
                                          "_HALTED", source="trading_grpc")
            actor = GRPC_CALLER.get() or request.author.strip()
            if not actor:
                raise TradingControlError("no caller identity: present a bearer token (or, on "
                                          "a service without authentication, give author)",
                                          source="trading_grpc")
            states = self.trading.set_state(request.scope, PB_TO_STATE[request.state],
                                            by=actor, reason=request.reason)
            return trading_states_message(states, self.trading)
        return await self._trading_call(context, run)
