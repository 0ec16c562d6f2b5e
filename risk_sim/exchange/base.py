"""What both venue simulators share: server lifecycle, websockets, faults, admin API, skew.

One aiohttp app per venue serves REST and websockets on the same port (ccxt.pro connects to
venue-specific paths, so any path upgrades to a websocket). The market model notifies price
changes from whatever thread changed them; the server pushes them to subscribed connections from
its own loop. Websocket faults use the route ``ws:<path>`` in the venue's
:class:`~risk_sim.faults.FaultInjector`, so ``*`` hits REST and websockets alike, ``/api/*``
only REST and ``ws:*`` only pushes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from aiohttp import WSMsgType, web

from risk_sim.events import AccountEvent
from risk_sim.faults import Fault, FaultInjector, apply_payload_fault, transform_payload
from risk_sim.market import (
    Market,
    OrderRejected,
    SimError,
    dec,
)
from risk_sim.server import BackgroundServer

WS_FAULT_KINDS = frozenset({"disconnect", "latency", "malformed", "partial", "nan", "negative",
                            "absurd", "stale", "skew"})
WS_QUEUE_LIMIT = 10_000
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class VenueError(Exception):
    """An error answered in the venue's own format (raised by handlers, rendered by middleware)."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body
        self.headers = headers or {}

    def response(self) -> web.Response:
        return web.json_response(self.body, status=self.status, headers=self.headers)


class WsConnection:
    """One websocket client: its subscriptions and an ordered send queue (faults applied there)."""

    def __init__(self, ws: web.WebSocketResponse, path: str, conn_id: int,
                 request: web.Request) -> None:
        self.ws = ws
        self.path = path
        self.id = conn_id
        self.request = request
        self.subscriptions: set[str] = set()
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.sender: asyncio.Task[None] | None = None
        self.messages_sent = 0
        self.account: str | None = None  # set once the connection is authenticated
        self.private: list[dict[str, Any]] = []  # private subscriptions (venue-specific)

    def send(self, payload: Any, *, data: bool = True) -> None:
        """Queue a message; ``data=False`` for acks and pongs, which faults never touch."""
        if self.queue.qsize() >= WS_QUEUE_LIMIT:  # a client this slow is cut off, as venues do
            self.queue.put_nowait(("close", None))
            return
        self.queue.put_nowait(("data" if data else "control", payload))


class VenueSimulator:
    """Base of the Binance and OKX simulators: subclasses add routes and wire formats."""

    venue: str = ""

    def __init__(self, market: Market, *, faults: FaultInjector | None = None, seed: int = 0,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.market = market
        self.faults = faults or FaultInjector(seed)
        self.clock_offset_s = 0.0
        self.requests: deque[dict[str, Any]] = deque(maxlen=2000)
        self.ws_connects = 0  # websocket handshakes accepted
        self.ws_refused = 0  # handshakes refused by an outage or a disconnect fault
        self._connections: dict[int, WsConnection] = {}
        self._next_conn = 1
        self._refuse_until: float | None = None  # wall time; inf = until cleared
        self._lock = threading.Lock()
        self._server = BackgroundServer(self._build_app(), host=host, port=port,
                                        name=f"{self.venue}-sim")

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self._server.url

    @property
    def ws_url(self) -> str:
        return self._server.ws_url

    @property
    def port(self) -> int:
        return self._server.port

    def start(self) -> VenueSimulator:
        self._server.start()
        self.market.subscribe(self._on_market_change)
        self.market.subscribe_accounts(self._on_account_events)
        return self

    def stop(self) -> None:
        self.market.unsubscribe(self._on_market_change)
        self.market.unsubscribe_accounts(self._on_account_events)
        if self._server.loop is not None and self._server.loop.is_running():
            with contextlib.suppress(Exception):
                self._server.call(self._close_all, timeout=5)
        self._server.stop()

    def __enter__(self) -> VenueSimulator:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- time -----------------------------------------------------------------------------------
    def now(self) -> float:
        """The venue's clock (wall time plus the configured skew), epoch seconds."""
        return time.time() + self.clock_offset_s

    def now_ms(self) -> int:
        return int(self.now() * 1000)

    def set_clock_offset(self, seconds: float) -> None:
        """Skew this venue's clock: timestamps it serves and its signature time window."""
        self.clock_offset_s = float(seconds)

    # -- websocket control (thread-safe) --------------------------------------------------------
    def disconnect_ws(self, route: str = "*", refuse_seconds: float | None = 0.0) -> int:
        """Close matching connections now; refuse reconnects for a while (None: until cleared)."""
        if refuse_seconds is None or refuse_seconds > 0:
            self.refuse_ws(refuse_seconds)
        if self._server.loop is None:
            return 0

        async def close() -> int:
            return await self._close_matching(route, code=1001, reason="simulated disconnect")

        return self._server.call(close)

    def refuse_ws(self, seconds: float | None) -> None:
        """Refuse websocket handshakes (HTTP 503) for ``seconds``; None until :meth:`accept_ws`."""
        with self._lock:
            self._refuse_until = float("inf") if seconds is None else time.time() + seconds

    def accept_ws(self) -> None:
        with self._lock:
            self._refuse_until = None

    def ws_refusing(self) -> bool:
        with self._lock:
            return self._refuse_until is not None and time.time() < self._refuse_until

    def _connection_snapshot(self) -> list[frozenset[str]]:
        """Subscriptions per open connection, read on the server loop (thread-safe)."""

        def snap() -> list[frozenset[str]]:
            return [frozenset(c.subscriptions) for c in self._connections.values()]

        loop = self._server.loop
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if loop is None or not loop.is_running() or on_loop:
            return snap()

        async def run() -> list[frozenset[str]]:
            return snap()

        return self._server.call(run)

    def ws_connection_count(self) -> int:
        return len(self._connection_snapshot())

    def ws_subscriptions(self) -> list[str]:
        """Every subscription of every open connection (stream names or channel:instId)."""
        return sorted({s for subs in self._connection_snapshot() for s in subs})

    def wait_for_subscription(self, name: str, timeout: float = 10.0) -> None:
        """Block until some connection subscribes to ``name`` (see :meth:`ws_subscriptions`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if name in self.ws_subscriptions():
                return
            time.sleep(0.01)
        raise TimeoutError(f"{self.venue}: nobody subscribed to {name!r} within {timeout}s "
                           f"(subscriptions: {self.ws_subscriptions()})")

    def reset(self) -> None:
        """Clear faults, skew, websocket refusal and the request log (market state untouched)."""
        self.faults.clear()
        self.accept_ws()
        self.clock_offset_s = 0.0
        self.requests.clear()

    # -- to override ----------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def error_body(self, fault: Fault, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    def not_found(self, request: web.Request) -> web.Response:
        return web.json_response({"error": f"no route {request.method} {request.path}"},
                                 status=404)

    async def venue_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        return await handler(request)

    async def on_ws_open(self, conn: WsConnection) -> None:
        """Called after the handshake (e.g. subscriptions named in the URL)."""

    async def on_ws_text(self, conn: WsConnection, text: str) -> None:
        raise NotImplementedError

    def render_updates(self, conn: WsConnection, symbols: set[str]) -> list[Any]:
        """Messages for ``conn`` after the prices of ``symbols`` changed."""
        raise NotImplementedError

    def render_private(self, conn: WsConnection, event: AccountEvent) -> list[Any]:
        """Private-stream messages for an authenticated ``conn`` after an account change."""
        return []

    # -- app ------------------------------------------------------------------------------------
    def _build_app(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            entry: dict[str, Any] = {"method": request.method, "path": request.path,
                                     "time": time.time(), "status": None}
            self.requests.append(entry)
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                entry["status"] = exc.status
                raise
            entry["status"] = response.status
            return response

        @web.middleware
        async def venue(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path.startswith("/__admin"):
                return await handler(request)
            try:
                return await self.venue_middleware(request, handler)
            except VenueError as exc:
                return exc.response()

        app = web.Application(middlewares=[record, self.faults.middleware(self.error_body),
                                           venue])
        app.add_routes(self.faults.admin_routes())
        app.add_routes(self._admin_routes())
        app.add_routes(self.routes())
        app.router.add_route("*", "/{tail:.*}", self._fallback)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_shutdown(self, _: web.Application) -> None:
        await self._close_all()

    async def _close_all(self) -> None:
        await self._close_matching("*", code=1001, reason="server shutting down")

    async def _close_matching(self, route: str, *, code: int, reason: str) -> int:
        closed = 0
        for conn in list(self._connections.values()):
            if fnmatch.fnmatchcase(conn.path, route) or \
                    fnmatch.fnmatchcase(f"ws:{conn.path}", route):
                closed += 1
                await self._drop(conn, code=code, reason=reason)
        return closed

    async def _drop(self, conn: WsConnection, *, code: int, reason: str) -> None:
        self._connections.pop(conn.id, None)
        if conn.sender is not None and conn.sender is not asyncio.current_task():
            conn.sender.cancel()
        with contextlib.suppress(Exception):
            await conn.ws.close(code=code, message=reason.encode())

    async def _fallback(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET" and \
                request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        return self.not_found(request)

    # -- websockets -----------------------------------------------------------------------------
    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if self.ws_refusing():
            self.ws_refused += 1
            return web.Response(status=503, text="service unavailable (simulated outage)")
        ws = web.WebSocketResponse(autoping=True, heartbeat=None, max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = WsConnection(ws, request.path, self._next_conn, request)
        self._next_conn += 1
        self._connections[conn.id] = conn
        self.ws_connects += 1
        conn.sender = asyncio.ensure_future(self._sender(conn))
        try:
            await self.on_ws_open(conn)
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    try:
                        await self.on_ws_text(conn, message.data)
                    except Exception as exc:  # a bad client message must not kill the server
                        conn.send({"error": {"code": 1, "msg": f"simulator: {exc}"}}, data=False)
                elif message.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            self._connections.pop(conn.id, None)
            if conn.sender is not None:
                conn.sender.cancel()
        return ws

    async def _sender(self, conn: WsConnection) -> None:
        route = f"ws:{conn.path}"
        try:
            while True:
                kind, payload = await conn.queue.get()
                if kind == "close":
                    await self._drop(conn, code=1008, reason="too slow")
                    return
                if kind == "data":
                    text: str | None = None
                    for fault in self.faults.take(route, WS_FAULT_KINDS):
                        if fault.kind == "disconnect":
                            refuse = fault.params.get("refuse_seconds")
                            if refuse:
                                self.refuse_ws(float(refuse))
                            await self._drop(conn, code=1001, reason="simulated disconnect")
                            return
                        if fault.kind == "latency":
                            await asyncio.sleep(float(fault.params.get("seconds", 1.0)))
                        elif fault.kind == "malformed":
                            text = apply_payload_fault(fault, json.dumps(payload).encode()).decode(
                                errors="replace")
                        else:
                            payload = transform_payload(fault, payload)
                    message = text if text is not None else \
                        (payload if isinstance(payload, str) else json.dumps(payload))
                else:
                    message = payload if isinstance(payload, str) else json.dumps(payload)
                if conn.ws.closed:
                    return
                await conn.ws.send_str(message)
                conn.messages_sent += 1
        except (ConnectionResetError, RuntimeError, asyncio.CancelledError):
            return

    def _on_market_change(self, changes: dict[str, set[str]]) -> None:
        symbols = changes.get(self.venue)
        loop = self._server.loop
        if not symbols or loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._publish, set(symbols))

    def _on_account_events(self, events: list[AccountEvent]) -> None:
        mine = [e for e in events if e.venue == self.venue]
        loop = self._server.loop
        if not mine or loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._publish_private, mine)

    def _publish_private(self, events: list[AccountEvent]) -> None:
        for conn in list(self._connections.values()):
            if conn.account is None:
                continue
            for event in events:
                if event.account != conn.account:
                    continue
                for message in self.render_private(conn, event):
                    conn.send(message)

    def private_connections(self, account: str | None = None) -> int:
        """Open authenticated (user-data) connections, optionally of one account."""
        def count() -> int:
            return sum(1 for c in self._connections.values() if c.account is not None and
                       (account is None or c.account == account))
        loop = self._server.loop
        if loop is None or not loop.is_running():
            return count()

        async def run() -> int:
            return count()

        return self._server.call(run)

    def _publish(self, symbols: set[str]) -> None:
        for conn in list(self._connections.values()):
            if not conn.subscriptions:
                continue
            for message in self.render_updates(conn, symbols):
                conn.send(message)

    # -- admin API (JSON, no auth, no faults) ---------------------------------------------------
    def _admin_routes(self) -> list[web.RouteDef]:
        market = self.market
        venue = self.venue

        async def body_of(request: web.Request) -> dict[str, Any]:
            if not request.can_read_body:
                return {}
            data = await request.json()
            if not isinstance(data, dict):
                raise web.HTTPBadRequest(text="JSON object expected")
            return data

        def fail(exc: Exception) -> web.Response:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)

        async def state(_: web.Request) -> web.Response:
            full = market.state()
            return web.json_response({
                "venue": venue, "elapsed": full["elapsed"],
                "prices": full["prices"].get(venue, {}),
                "accounts": full["accounts"].get(venue, {}),
                "ws": {"connections": self.ws_connection_count(),
                       "subscriptions": self.ws_subscriptions(),
                       "connects": self.ws_connects, "refusing": self.ws_refusing()},
                "clock_offset_s": self.clock_offset_s,
                "faults": [asdict(f) for f in self.faults.snapshot()],
            })

        async def price(request: web.Request) -> web.Response:
            data = await body_of(request)
            try:
                symbol = market.instrument(venue, data["symbol"]).symbol
                only = venue if data.get("venue_only") else None
                if "price" in data:
                    market.set_price(symbol, data["price"], venue=only)
                elif "pct" in data:
                    market.move_price(symbol, float(data["pct"]), float(data.get("over", 0)),
                                      venue=only)
                elif "points" in data:
                    market.price_path(symbol, [(float(t), p) for t, p in data["points"]])
                else:
                    raise SimError("give 'price', 'pct' (+ 'over') or 'points'")
            except (KeyError, ValueError, SimError) as exc:
                return fail(exc)
            return web.json_response({"ok": True, "quote": _quote_json(market, venue, symbol)})

        async def position(request: web.Request) -> web.Response:
            data = await body_of(request)
            try:
                market.set_position(venue, data.get("account", "main"), data["symbol"],
                                    side=data["side"], contracts=data["contracts"],
                                    entry_price=data.get("entry_price"))
            except (KeyError, ValueError, SimError) as exc:
                return fail(exc)
            return web.json_response({"ok": True})

        async def balance(request: web.Request) -> web.Response:
            data = await body_of(request)
            try:
                market.set_balance(venue, data.get("account", "main"), data["asset"],
                                   dec(data["amount"]))
            except (KeyError, ValueError, SimError) as exc:
                return fail(exc)
            return web.json_response({"ok": True})

        async def position_mode(request: web.Request) -> web.Response:
            data = await body_of(request)
            try:
                market.set_position_mode(venue, data.get("account", "main"), data["mode"])
            except (KeyError, ValueError, SimError) as exc:
                return fail(exc)
            return web.json_response({"ok": True})

        async def order(request: web.Request) -> web.Response:
            data = await body_of(request)
            try:
                placed = market.place_order(
                    venue, data.get("account", "main"), data["symbol"], side=data["side"],
                    amount=data["amount"], order_type=data.get("type", "market"),
                    price=data.get("price"), reduce_only=bool(data.get("reduce_only", False)),
                    position_side=data.get("position_side"))
            except OrderRejected as exc:
                return web.json_response({"ok": False, "reason": exc.reason,
                                          "error": exc.message}, status=400)
            except (KeyError, ValueError, SimError) as exc:
                return fail(exc)
            return web.json_response({"ok": True, "order_id": placed.id,
                                      "average": str(placed.average), "fee": str(placed.fee),
                                      "realized_pnl": str(placed.realized_pnl)})

        async def fill(request: web.Request) -> web.Response:
            """A fill the trading client never sent (reconciliation breaks)."""
            data = await body_of(request)
            try:
                placed = market.inject_fill(
                    venue, data.get("account", "main"), data["symbol"], side=data["side"],
                    amount=data["amount"], price=data.get("price"),
                    position_side=data.get("position_side"),
                    reduce_only=bool(data.get("reduce_only", False)))
            except OrderRejected as exc:
                return web.json_response({"ok": False, "reason": exc.reason,
                                          "error": exc.message}, status=400)
            except (KeyError, ValueError, SimError) as exc:
                return fail(exc)
            return web.json_response({"ok": True, "order_id": placed.id,
                                      "client_order_id": placed.client_order_id,
                                      "average": str(placed.average), "fee": str(placed.fee),
                                      "realized_pnl": str(placed.realized_pnl)})

        async def trading(request: web.Request) -> web.Response:
            """Book depth per symbol and whether limit orders rest (whole market)."""
            data = await body_of(request)
            try:
                if "resting_orders" in data:
                    market.set_resting_orders(bool(data["resting_orders"]))
                if "symbol" in data:
                    market.set_liquidity(market.instrument(venue, data["symbol"]).symbol,
                                         data.get("depth"), data.get("level_bps"))
            except (ValueError, SimError) as exc:
                return fail(exc)
            return web.json_response({"ok": True})

        async def funding(_: web.Request) -> web.Response:
            paid = market.settle_funding(venue)
            return web.json_response({"ok": True, "paid": [
                {"account": a, "symbol": s, "amount": str(x)} for (a, s), x in paid.items()]})

        async def advance(request: web.Request) -> web.Response:
            data = await body_of(request)
            try:
                market.advance(float(data.get("seconds", 0)))
            except ValueError as exc:
                return fail(exc)
            return web.json_response({"ok": True, "elapsed": market.clock.elapsed()})

        async def skew(request: web.Request) -> web.Response:
            data = await body_of(request)
            self.set_clock_offset(float(data.get("seconds", 0)))
            return web.json_response({"ok": True, "clock_offset_s": self.clock_offset_s})

        async def ws_disconnect(request: web.Request) -> web.Response:
            data = await body_of(request)
            refuse = data.get("refuse_seconds", 0)
            if refuse is not None and refuse > 0:
                self.refuse_ws(float(refuse))
            elif refuse is None:
                self.refuse_ws(None)
            closed = await self._close_matching(str(data.get("route", "*")), code=1001,
                                                reason="simulated disconnect")
            return web.json_response({"ok": True, "closed": closed})

        async def ws_accept(_: web.Request) -> web.Response:
            self.accept_ws()
            return web.json_response({"ok": True})

        async def reset(_: web.Request) -> web.Response:
            self.reset()
            return web.json_response({"ok": True})

        return [
            web.get("/__admin/state", state),
            web.post("/__admin/price", price),
            web.post("/__admin/position", position),
            web.post("/__admin/balance", balance),
            web.post("/__admin/position_mode", position_mode),
            web.post("/__admin/order", order),
            web.post("/__admin/fill", fill),
            web.post("/__admin/funding", funding),
            web.post("/__admin/trading", trading),
            web.post("/__admin/clock/advance", advance),
            web.post("/__admin/clock/skew", skew),
            web.post("/__admin/ws/disconnect", ws_disconnect),
            web.post("/__admin/ws/accept", ws_accept),
            web.post("/__admin/reset", reset),
            *self.extra_admin_routes(),
        ]

    def extra_admin_routes(self) -> list[web.RouteDef]:
        return []


def _quote_json(market: Market, venue: str, symbol: str) -> dict[str, str]:
    quote = market.quote(venue, symbol)
    return {"last": str(quote.last), "mark": str(quote.mark), "bid": str(quote.bid),
            "ask": str(quote.ask)}
