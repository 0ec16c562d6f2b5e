"""REST routes of the operator controls, behind the bearer-token middleware.

The caller is the name of the token it presented (``service/security.py``), never a name it
claims; only a service running without authentication (loopback development) takes an
``author`` from the body. Every change is audited by the store.

- ``GET /v1/alerts/controls``: active silences and the acknowledgements that still hold
  (``?all=1``: every silence).
- ``POST /v1/alerts/ack`` ``{"key": fingerprint | correlation id, "comment"}``.
- ``POST /v1/alerts/silences`` ``{"matchers": ["venue=okx", ...], "duration_s" | "ends_at",
  "starts_at"?, "comment"}``.
- ``DELETE /v1/alerts/silences/{id}``: unsilence.
- ``GET /v1/trading/state``: the state in force per scope and the manual states behind it.
- ``POST /v1/trading/state`` ``{"scope": "global" | "venue:<id>", "state": "HALTED" |
  "REDUCING" | "ACTIVE", "reason"}``: set a manual state.
- ``GET /v1/trading/orders?limit=N``: the latest pre-trade checks, newest first.
- ``GET /v1/trading/fills``: recent fills and the realised P&L rebuilt from them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from risk_monitor.adapters.sql.alert_controls import (
    SqlAlertControls,
    acked_as_dict,
    silence_as_dict,
)
from risk_monitor.domain.silences import silence_end
from risk_monitor.platform.errors import (
    AlertControlError,
    StorageUnavailableError,
    TradingControlError,
)
from risk_monitor.service.security import caller_identity, error_body
from risk_monitor.service.sql_state import DatabaseRiskView
from risk_monitor.service.state import RiskViewProvider
from risk_monitor.service.trading import TradingControl, verdict_as_dict

MAX_BODY_BYTES = 64 * 1024
Handler = Callable[[Request], Any]


def _guarded(handler: Handler) -> Handler:
    """A refused control answers 404 (unknown alert or silence) or 400, with the typed body."""
    async def run(request: Request) -> JSONResponse:
        try:
            response: JSONResponse = await handler(request)
            return response
        except (AlertControlError, TradingControlError) as exc:
            status = 404 if exc.details.get("reason") == "not_found" else 400
            return JSONResponse(error_body(exc.code, exc.message), status_code=status)
    return run


def alert_control_routes(provider: RiskViewProvider, *,
                         clock: Callable[[], datetime] = lambda: datetime.now(UTC)
                         ) -> list[Route]:
    """The routes; they answer 503 when the provider has no database store behind it."""
    controls = (SqlAlertControls(provider.engine, clock=clock)
                if isinstance(provider, DatabaseRiskView) else None)

    def store() -> SqlAlertControls:
        if controls is None:
            raise StorageUnavailableError("acknowledgements and silences need the database "
                                          "store", source="alerts_api")
        return controls

    async def list_controls(request: Request) -> JSONResponse:
        show_all = request.query_params.get("all") in ("1", "true")
        now = clock()

        def read() -> dict[str, Any]:
            c = store()
            return {"silences": [silence_as_dict(s, now)
                                 for s in c.silences(active_at=None if show_all else now)],
                    "acknowledgements": [acked_as_dict(a) for a in c.current_acknowledgements()]}
        return JSONResponse(await asyncio.to_thread(read))

    async def acknowledge(request: Request) -> JSONResponse:
        body = await _body(request)
        actor = _caller(request, body)
        key = _text(body, "key", required=True)
        comment = _text(body, "comment")
        done = await asyncio.to_thread(
            lambda: store().acknowledge(key, by=actor, comment=comment))
        return JSONResponse(acked_as_dict(done), status_code=201)

    async def create_silence(request: Request) -> JSONResponse:
        body = await _body(request)
        actor = _caller(request, body)
        matchers = body.get("matchers")
        if not isinstance(matchers, list) or not all(isinstance(m, str) for m in matchers):
            raise AlertControlError('"matchers" must be a list of strings like "venue=okx"')
        now = clock()
        starts_at = _time(body, "starts_at") or now
        duration = body.get("duration_s")
        if duration is not None and (isinstance(duration, bool)
                                     or not isinstance(duration, int | float)):
            raise AlertControlError('"duration_s" must be a number of seconds')
        try:
            end = silence_end(starts_at, ends_at=_time(body, "ends_at"),
                              duration=None if duration is None
                              else timedelta(seconds=float(duration)))
        except ValueError as exc:
            raise AlertControlError(f'{exc} ("duration_s" or "ends_at")') from exc
        comment = _text(body, "comment", required=True)
        made = await asyncio.to_thread(lambda: store().add_silence(
            list(matchers), starts_at=starts_at, ends_at=end, created_by=actor,
            comment=comment))
        return JSONResponse(silence_as_dict(made, now), status_code=201)

    async def expire_silence(request: Request) -> JSONResponse:
        actor = _caller(request, {})
        silence_id = request.path_params["silence_id"]
        ended = await asyncio.to_thread(lambda: store().expire_silence(silence_id, by=actor))
        return JSONResponse(silence_as_dict(ended, clock()))

    return [
        Route("/v1/alerts/controls", _guarded(list_controls), methods=["GET"]),
        Route("/v1/alerts/ack", _guarded(acknowledge), methods=["POST"]),
        Route("/v1/alerts/silences", _guarded(create_silence), methods=["POST"]),
        Route("/v1/alerts/silences/{silence_id}", _guarded(expire_silence),
              methods=["DELETE"]),
    ]


def trading_document(control: TradingControl) -> dict[str, Any]:
    return {
        "states": [verdict_as_dict(scope, v) for scope, v in control.states().items()],
        "manual": [{"scope": scope, "state": m.state.value, "changed_by": m.changed_by,
                    "reason": m.reason} for scope, m in sorted(control.manual().items())],
    }


def fills_document(control: TradingControl, limit: int = 100) -> dict[str, Any]:
    """Recent fills from the private streams and the realised P&L rebuilt from them."""
    ledger = control.fills
    if ledger is None:
        return {"streaming": False, "fills": [], "realised": []}
    return {
        "streaming": True,
        "fills": [{"seen_at": at.isoformat(), "venue": f.venue, "instrument": f.instrument,
                   "side": f.side, "quantity": f.quantity, "price": f.price, "fee": f.fee,
                   "fee_currency": f.fee_currency, "trade_id": f.trade_id,
                   "order_id": f.order_id, "client_order_id": f.client_order_id,
                   "time": f.timestamp.isoformat() if f.timestamp else None}
                  for at, f in ledger.recent(limit)],
        "realised": [{"venue": b.venue, "account": b.account, "instrument": b.instrument,
                      "fills": b.fills, "position": b.position, "avg_entry": b.avg_entry,
                      "gross": b.gross, "fees": b.fees, "funding": b.funding, "net": b.net,
                      "venue_reported": b.reported, "complete": b.complete}
                     for b in sorted(ledger.snapshot(),
                                     key=lambda b: (b.venue, b.instrument))],
    }


def trading_routes(control: TradingControl) -> list[Route]:
    async def get_state(_: Request) -> JSONResponse:
        return JSONResponse(await asyncio.to_thread(trading_document, control))

    async def set_state(request: Request) -> JSONResponse:
        body = await _body(request)
        actor = _caller(request, body)
        scope, state, reason = body.get("scope"), body.get("state"), body.get("reason", "")
        if not isinstance(scope, str) or not isinstance(state, str) \
                or not isinstance(reason, str):
            raise TradingControlError('"scope" and "state" must be strings')
        await asyncio.to_thread(control.set_state, scope, state.upper(), by=actor,
                                reason=reason)
        return await get_state(request)

    async def orders(request: Request) -> JSONResponse:
        try:
            limit = max(1, min(1000, int(request.query_params.get("limit", "100"))))
        except ValueError:
            raise TradingControlError("limit must be an integer") from None
        return JSONResponse({"orders": [c.as_dict() for c in control.recent_checks(limit)]})

    async def fills(_: Request) -> JSONResponse:
        return JSONResponse(fills_document(control))

    return [
        Route("/v1/trading/fills", fills, methods=["GET"]),
        Route("/v1/trading/state", get_state, methods=["GET"]),
        Route("/v1/trading/state", _guarded(set_state), methods=["POST"]),
        Route("/v1/trading/orders", _guarded(orders), methods=["GET"]),
    ]


def _caller(request: Request, body: dict[str, Any]) -> str:
    client = request.scope.get("state", {}).get("client")
    return caller_identity(str(client) if client else None, body.get("author"), AlertControlError)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise AlertControlError(f"request body over {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        raise AlertControlError("request body is not JSON") from exc
    if not isinstance(body, dict):
        raise AlertControlError("request body must be a JSON object")
    return body


def _text(body: dict[str, Any], name: str, *, required: bool = False) -> str:
    value = body.get(name, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise AlertControlError(f'"{name}" must be a non-empty string' if required
                                else f'"{name}" must be a string')
    return value


def _time(body: dict[str, Any], name: str) -> datetime | None:
    value = body.get(name)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise AlertControlError(f'"{name}" is not an ISO 8601 time') from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
