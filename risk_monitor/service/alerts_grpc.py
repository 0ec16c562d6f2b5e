"""gRPC RPCs to acknowledge and silence alerts (mixed into ``RiskMonitorServicer``).

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
from risk_monitor.domain.silences import Silence
from risk_monitor.platform.errors import AlertControlError, StorageUnavailableError
from risk_monitor.service.proto import risk_monitor_pb2 as pb
from risk_monitor.service.security import GRPC_CALLER
from risk_monitor.service.sql_state import DatabaseRiskView
from risk_monitor.service.state import RiskViewProvider

T = TypeVar("T")


def _ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def silence_message(s: Silence, now: datetime) -> pb.Silence:
    return pb.Silence(
        id=s.id, matchers=[pb.SilenceMatcher(name=m.name, op=m.op, value=m.value)
                           for m in s.matchers],
        starts_at=_ts(s.starts_at), ends_at=_ts(s.ends_at), created_by=s.created_by,
        comment=s.comment, expired_at=_ts(s.expired_at), active=s.active(now))


def ack_message(item: AckedAlert) -> pb.Acknowledgement:
    ack, target = item.ack, item.target
    return pb.Acknowledgement(
        fingerprint=ack.fingerprint, episode=ack.episode,
        status=f"LIMIT_STATUS_{ack.status.value}",
        acked_by=ack.acked_by, acked_at=_ts(ack.acked_at), comment=ack.comment,
        limit_id=target.limit_id, scope=target.scope,
        correlation_id=target.correlation_id or "")


class AlertControlRpcs:
    """Needs ``self.provider`` and ``self.clock`` (as ``RiskMonitorServicer`` has)."""

    provider: RiskViewProvider
    clock: Callable[[], datetime]
    _alert_controls: SqlAlertControls | None = None

    def _controls(self) -> SqlAlertControls:
        if self._alert_controls is None:
            if not isinstance(self.provider, DatabaseRiskView):
                raise StorageUnavailableError("acknowledgements and silences need the "
                                              "database store", source="alerts_grpc")
            self._alert_controls = SqlAlertControls(self.provider.engine, clock=self.clock)
        return self._alert_controls

    async def _control(self, context: grpc.aio.ServicerContext, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except AlertControlError as exc:
            code = grpc.StatusCode.NOT_FOUND if exc.details.get("reason") == "not_found" \
                else grpc.StatusCode.INVALID_ARGUMENT
            await context.abort(code, f"{exc.code}: {exc.message}")
            raise  # abort raises; this keeps type checkers sure
        except StorageUnavailableError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{exc.code}: {exc.message}")
            raise

    @staticmethod
    def _caller(author: str) -> str:
        client = GRPC_CALLER.get()
        if client:
            return client
        if author.strip():
            return author.strip()
        raise AlertControlError("no caller identity: present a bearer token (or, on a service "
                                "without authentication, give author)")

    async def AcknowledgeAlert(self, request: pb.AcknowledgeAlertRequest,
                               context: grpc.aio.ServicerContext) -> pb.Acknowledgement:
        def run() -> AckedAlert:
            return self._controls().acknowledge(request.key, by=self._caller(request.author),
                                                comment=request.comment)
        return ack_message(await self._control(context, run))

    async def CreateSilence(self, request: pb.CreateSilenceRequest,
                            context: grpc.aio.ServicerContext) -> pb.Silence:
        now = self.clock()

        def run() -> Silence:
            actor = self._caller(request.author)
            starts_at = request.starts_at.ToDatetime(tzinfo=UTC) \
                if request.HasField("starts_at") else now
            has_end = request.HasField("ends_at")
            if has_end == (request.duration_seconds > 0):
                raise AlertControlError("give exactly one of duration_seconds (> 0) and ends_at")
            ends_at = request.ends_at.ToDatetime(tzinfo=UTC) if has_end \
                else starts_at + timedelta(seconds=request.duration_seconds)
            return self._controls().add_silence(list(request.matchers), starts_at=starts_at,
                                                ends_at=ends_at, created_by=actor,
                                                comment=request.comment)
        return silence_message(await self._control(context, run), now)

    async def ExpireSilence(self, request: pb.ExpireSilenceRequest,
                            context: grpc.aio.ServicerContext) -> pb.Silence:
        def run() -> Silence:
            return self._controls().expire_silence(request.id, by=self._caller(request.author))
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
