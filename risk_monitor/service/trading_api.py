"""REST routes of the trading state, behind the bearer-token middleware.

- ``GET /v1/trading/state``: the state in force per scope and the manual states behind it.
- ``POST /v1/trading/state`` ``{"scope": "global" | "venue:<id>", "state": "HALTED" |
  "REDUCING" | "ACTIVE", "reason"}``: set a manual state (audited; the caller is the token's
  name, ``author`` is read only without authentication).
- ``GET /v1/trading/orders?limit=N``: the latest pre-trade checks, newest first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from risk_monitor.platform.errors import AlertControlError, TradingControlError
from risk_monitor.service.alerts_api import _body, _caller
from risk_monitor.service.security import error_body
from risk_monitor.service.trading import TradingControl, verdict_as_dict


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
        try:
            body = await _body(request)
            actor = _caller(request, body)
            scope, state, reason = body.get("scope"), body.get("state"), body.get("reason", "")
            if not isinstance(scope, str) or not isinstance(state, str) \
                    or not isinstance(reason, str):
                raise TradingControlError('"scope" and "state" must be strings')
            await asyncio.to_thread(control.set_state, scope, state.upper(), by=actor,
                                    reason=reason)
        except (TradingControlError, AlertControlError) as exc:
            return JSONResponse(error_body(exc.code, exc.message), status_code=400)
        return JSONResponse(await asyncio.to_thread(trading_document, control))

    async def orders(request: Request) -> JSONResponse:
        try:
            limit = max(1, min(1000, int(request.query_params.get("limit", "100"))))
        except ValueError:
            return JSONResponse(error_body("RM610", "limit must be an integer"),
                                status_code=400)
        return JSONResponse({"orders": [c.as_dict() for c in control.recent_checks(limit)]})

    async def fills(request: Request) -> JSONResponse:
        return JSONResponse(fills_document(control))

    return [
        Route("/v1/trading/fills", fills, methods=["GET"]),
        Route("/v1/trading/state", get_state, methods=["GET"]),
        Route("/v1/trading/state", set_state, methods=["POST"]),
        Route("/v1/trading/orders", orders, methods=["GET"]),
    ]
