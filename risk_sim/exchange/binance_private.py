"""Binance USDⓈ-M private side: orders, cancels, listen keys and the user-data stream.

What ccxt (and ccxt.pro) 4.5.x use: ``GET/DELETE /fapi/v1/order``, ``GET /fapi/v1/openOrders``,
``GET /fapi/v1/allOrders``, ``DELETE /fapi/v1/allOpenOrders``, ``GET /fapi/v1/income``, and
``POST/PUT/DELETE /fapi/v1/listenKey`` (API key header only, no signature, as on Binance). The
user-data stream connects to ``/private/ws?listenKey=<key>`` (ccxt 4.5) or ``/ws/<key>`` (the
classic URL) and pushes ``ORDER_TRADE_UPDATE`` for every order change (NEW, TRADE, CANCELED,
EXPIRED) and ``ACCOUNT_UPDATE`` (reason ORDER, FUNDING_FEE or ADJUSTMENT) with the balances
and the positions of the symbol after every fill or account change, the account update first.
A listen key lives 60 minutes unless kept alive; `expire_listen_keys()` ends every stream
with `listenKeyExpired` then a close, and `DELETE` closes the key's streams.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from risk_sim.engine import UnknownOrder
from risk_sim.events import AccountEvent
from risk_sim.exchange.base import VenueError, WsConnection
from risk_sim.market import Account, Instrument, Order, PositionView, fmt, money

if TYPE_CHECKING:
    from risk_sim.market import Market
    from risk_sim.server import BackgroundServer

LISTEN_KEY_TTL_S = 3600.0
STATUS = {"open": "NEW", "partially_filled": "PARTIALLY_FILLED", "filled": "FILLED",
          "canceled": "CANCELED", "expired": "EXPIRED"}


def _err(status: int, code: int, msg: str) -> VenueError:
    return VenueError(status, {"code": code, "msg": msg})


class BinancePrivate:
    """Mixin of :class:`~risk_sim.exchange.binance.BinanceSimulator`."""

    if TYPE_CHECKING:
        venue: str
        market: Market

        async def _signed(self, request: web.Request) -> tuple[Account, dict[str, str]]: ...
        def _instrument(self, venue_id: str | None) -> Instrument: ...
        def now_ms(self) -> int: ...
        async def _drop(self, conn: WsConnection, *, code: int, reason: str) -> None: ...

        _connections: dict[int, WsConnection]
        _server: BackgroundServer

    _listen_keys: dict[str, tuple[str, float]]  # key -> (account name, expiry wall time)

    def private_routes(self) -> list[web.RouteDef]:
        self._listen_keys = {}
        return [
            web.get("/fapi/v1/order", self.get_order),
            web.delete("/fapi/v1/order", self.cancel_order),
            web.get("/fapi/v1/openOrders", self.open_orders),
            web.get("/fapi/v1/openOrder", self.get_order),
            web.get("/fapi/v1/allOrders", self.all_orders),
            web.delete("/fapi/v1/allOpenOrders", self.cancel_all),
            web.get("/fapi/v1/income", self.income),
            web.post("/fapi/v1/listenKey", self.listen_key_create),
            web.put("/fapi/v1/listenKey", self.listen_key_keepalive),
            web.delete("/fapi/v1/listenKey", self.listen_key_delete),
        ]

    # -- rendering ------------------------------------------------------------------------------
    def order_json(self, inst: Instrument, order: Order) -> dict[str, Any]:
        kind = order.type.upper()
        return {
            "orderId": order.id, "symbol": inst.venue_id, "status": STATUS[order.status],
            "clientOrderId": order.client_order_id,
            "price": fmt(order.price) if order.price is not None else "0",
            "avgPrice": fmt(order.average), "origQty": fmt(order.amount),
            "executedQty": fmt(order.filled), "cumQty": fmt(order.filled),
            "cumQuote": fmt(money(order.quote_filled)), "timeInForce": "GTC", "type": kind,
            "reduceOnly": order.reduce_only, "closePosition": False,
            "side": order.side.upper(),
            "positionSide": "BOTH" if order.position_side == "net" else
            order.position_side.upper(),
            "stopPrice": "0", "workingType": "CONTRACT_PRICE", "priceProtect": False,
            "origType": kind, "priceMatch": "NONE", "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": 0, "time": order.time_ms, "updateTime": order.updated_ms or
            order.time_ms,
        }

    def _order_update(self, event: AccountEvent) -> dict[str, Any]:
        order = event.order
        assert order is not None and event.execution is not None
        inst = self.market.instrument(self.venue, order.symbol)
        trade = event.trade
        body: dict[str, Any] = {
            "s": inst.venue_id, "c": order.client_order_id, "S": order.side.upper(),
            "o": order.type.upper(), "f": "GTC", "q": fmt(order.amount),
            "p": fmt(order.price) if order.price is not None else "0",
            "ap": fmt(order.average), "sp": "0", "x": event.execution,
            "X": STATUS[order.status], "i": order.id,
            "l": fmt(trade.contracts) if trade else "0", "z": fmt(order.filled),
            "L": fmt(trade.price) if trade else "0", "N": order.fee_asset,
            "n": fmt(trade.fee) if trade else "0", "T": event.time_ms,
            "t": trade.id if trade else 0, "b": "0", "a": "0",
            "m": bool(trade.maker) if trade else False, "R": order.reduce_only,
            "wt": "CONTRACT_PRICE", "ot": order.type.upper(),
            "ps": "BOTH" if order.position_side == "net" else order.position_side.upper(),
            "cp": False, "rp": fmt(trade.realized_pnl) if trade else "0", "pP": False,
            "si": 0, "ss": 0, "V": "EXPIRE_MAKER", "pm": "NONE", "gtd": 0,
        }
        return {"e": "ORDER_TRADE_UPDATE", "E": event.time_ms, "T": event.time_ms, "o": body}

    @staticmethod
    def _ws_position(view: PositionView) -> dict[str, Any]:
        pos = view.position
        amount = pos.contracts * view.instrument.contract_size
        if pos.side == "short":
            amount = -amount
        return {
            "s": view.instrument.venue_id, "pa": fmt(amount), "ep": fmt(pos.entry_price),
            "bep": fmt(pos.entry_price), "cr": fmt(money(pos.realized_pnl)),
            "up": fmt(view.unrealized_pnl), "mt": view.margin_mode,
            "iw": "0", "ps": "BOTH" if pos.side == "net" else pos.side.upper(),
            "ma": view.instrument.settle,
        }

    def _account_update(self, event: AccountEvent) -> dict[str, Any]:
        return {
            "e": "ACCOUNT_UPDATE", "E": event.time_ms, "T": event.time_ms,
            "a": {"m": event.reason,
                  "B": [{"a": b.asset, "wb": fmt(b.wallet), "cw": fmt(b.wallet),
                         "bc": fmt(event.funding) if event.funding is not None else "0"}
                        for b in event.balances],
                  "P": [self._ws_position(v) for v in event.positions]},
        }

    def render_private(self, conn: WsConnection, event: AccountEvent) -> list[Any]:
        out: list[Any] = []
        if event.trade is not None or event.order is None:
            out.append(self._account_update(event))
        if event.order is not None and event.execution is not None:
            out.append(self._order_update(event))
        return out

    # -- orders ---------------------------------------------------------------------------------
    @staticmethod
    def _ids(params: dict[str, str]) -> tuple[int | None, str | None]:
        raw = params.get("orderId")
        try:
            order_id = int(raw) if raw else None
        except ValueError:
            raise _err(400, -1102, "Parameter 'orderId' was malformed.") from None
        client = params.get("origClientOrderId") or None
        if order_id is None and client is None:
            raise _err(400, -1102, "Either orderId or origClientOrderId must be sent.")
        return order_id, client

    async def get_order(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        inst = self._instrument(params.get("symbol"))
        order_id, client = self._ids(params)
        order = self.market.find_order(self.venue, account.name, order_id, client)
        if order is None or order.symbol != inst.symbol:
            raise _err(400, -2013, "Order does not exist.")
        return web.json_response(self.order_json(inst, order))

    async def cancel_order(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        inst = self._instrument(params.get("symbol"))
        order_id, client = self._ids(params)
        found = self.market.find_order(self.venue, account.name, order_id, client)
        if found is None or found.symbol != inst.symbol:
            raise _err(400, -2011, "Unknown order sent.")
        try:
            order = self.market.cancel_order(self.venue, account.name, found.id)
        except UnknownOrder:
            raise _err(400, -2011, "Unknown order sent.") from None
        return web.json_response(self.order_json(inst, order))

    async def cancel_all(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        inst = self._instrument(params.get("symbol"))
        for order in self.market.orders(self.venue, account.name, open_only=True):
            if order.symbol == inst.symbol:
                with contextlib.suppress(UnknownOrder):  # filled meanwhile
                    self.market.cancel_order(self.venue, account.name, order.id)
        return web.json_response({"code": 200, "msg": "The operation of cancel all open order "
                                  "is done."})

    def _listed(self, account: Account, params: dict[str, str], *, open_only: bool
                ) -> list[dict[str, Any]]:
        wanted = self._instrument(params["symbol"]) if "symbol" in params else None
        rows = []
        for order in self.market.orders(self.venue, account.name, open_only=open_only):
            if wanted is not None and order.symbol != wanted.symbol:
                continue
            rows.append(self.order_json(self.market.instrument(self.venue, order.symbol), order))
        return rows

    async def open_orders(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        if request.path.endswith("/openOrder"):
            return await self.get_order(request)
        return web.json_response(self._listed(account, params, open_only=True))

    async def all_orders(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        if "symbol" not in params:
            raise _err(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, "
                       "or malformed.")
        rows = self._listed(account, params, open_only=False)
        limit = int(params.get("limit", 500))
        return web.json_response(rows[-limit:])

    async def income(self, request: web.Request) -> web.Response:
        """Realized P&L, commissions and funding as income rows (``fetch_funding_history``)."""
        account, params = await self._signed(request)
        wanted = self._instrument(params["symbol"]) if "symbol" in params else None
        kind = params.get("incomeType")
        rows: list[dict[str, Any]] = []
        acc = self.market.account(self.venue, account.name)
        for t in self.market.trades(self.venue, account.name):
            if wanted is not None and t.symbol != wanted.symbol:
                continue
            venue_id = self.market.instrument(self.venue, t.symbol).venue_id
            if t.realized_pnl != 0:
                rows.append({"symbol": venue_id, "incomeType": "REALIZED_PNL",
                             "income": fmt(t.realized_pnl), "asset": t.fee_asset, "info": "",
                             "time": t.time_ms, "tranId": t.id * 10, "tradeId": str(t.id)})
            rows.append({"symbol": venue_id, "incomeType": "COMMISSION",
                         "income": fmt(-t.fee), "asset": t.fee_asset, "info": "",
                         "time": t.time_ms, "tranId": t.id * 10 + 1, "tradeId": str(t.id)})
        for n, (time_ms, symbol, asset, amount) in enumerate(acc.funding_log):
            venue_id = self.market.instrument(self.venue, symbol).venue_id
            if wanted is not None and symbol != wanted.symbol:
                continue
            rows.append({"symbol": venue_id, "incomeType": "FUNDING_FEE",
                         "income": fmt(amount), "asset": asset, "info": "FUNDING_FEE",
                         "time": time_ms, "tranId": 9_000_000 + n, "tradeId": ""})
        if kind:
            rows = [r for r in rows if r["incomeType"] == kind]
        rows.sort(key=lambda r: (r["time"], r["tranId"]))
        return web.json_response(rows[-int(params.get("limit", 100)):])

    # -- listen keys and the user-data stream ---------------------------------------------------
    def _key_account(self, request: web.Request) -> Account:
        key = request.headers.get("X-MBX-APIKEY", "")
        if not key:
            raise _err(401, -2014, "API-key format invalid.")
        account = self.market.account_by_key(self.venue, key)
        if account is None:
            raise _err(401, -2015, "Invalid API-key, IP, or permissions for action.")
        return account

    async def listen_key_create(self, request: web.Request) -> web.Response:
        account = self._key_account(request)
        now = time.time()
        for key, (name, expires) in self._listen_keys.items():
            if name == account.name and expires > now:  # Binance hands back the active key
                self._listen_keys[key] = (name, now + LISTEN_KEY_TTL_S)
                return web.json_response({"listenKey": key})
        key = secrets.token_urlsafe(48)
        self._listen_keys[key] = (account.name, now + LISTEN_KEY_TTL_S)
        return web.json_response({"listenKey": key})

    def _active_key(self, account: Account) -> str:
        now = time.time()
        for key, (name, expires) in self._listen_keys.items():
            if name == account.name and expires > now:
                return key
        raise _err(400, -1125, "This listenKey does not exist.")

    async def listen_key_keepalive(self, request: web.Request) -> web.Response:
        account = self._key_account(request)
        key = self._active_key(account)
        self._listen_keys[key] = (account.name, time.time() + LISTEN_KEY_TTL_S)
        return web.json_response({"listenKey": key})

    async def listen_key_delete(self, request: web.Request) -> web.Response:
        account = self._key_account(request)
        key = self._active_key(account)
        del self._listen_keys[key]
        await self._end_streams({key}, expired=False)
        return web.json_response({})

    async def _end_streams(self, keys: set[str], *, expired: bool) -> int:
        """Close the user-data streams of ``keys`` (after ``listenKeyExpired`` if expired)."""
        closed = 0
        for conn in list(self._connections.values()):
            key = next((p.get("listenKey") for p in conn.private if "listenKey" in p), None)
            if key not in keys:
                continue
            if expired:
                with contextlib.suppress(Exception):
                    await conn.ws.send_json({"e": "listenKeyExpired", "E": self.now_ms(),
                                             "listenKey": key})
            await self._drop(conn, code=1000, reason="listen key expired" if expired
                             else "listen key closed")
            closed += 1
        return closed

    def _expire_all_keys(self) -> set[str]:
        keys = set(self._listen_keys)
        self._listen_keys.clear()
        return keys

    def expire_listen_keys(self) -> int:
        """Expire every listen key now: its streams get ``listenKeyExpired`` and close."""
        keys = self._expire_all_keys()
        if self._server.loop is None:
            return 0

        async def end() -> int:
            return await self._end_streams(keys, expired=True)

        return int(self._server.call(end))

    def listen_key_account(self, conn: WsConnection) -> str | bool | None:
        """The account of a user-data connection; None: public; False: a bad listen key."""
        key = conn.request.query.get("listenKey")
        if key is None and conn.path.startswith("/ws/"):  # the classic /ws/<listenKey>
            last = conn.path[len("/ws/"):].rstrip("/")
            if last and "/" not in last and "@" not in last and not last.startswith("!"):
                key = last
        if key is None:
            return None
        entry = self._listen_keys.get(key)
        if entry is None or entry[1] <= time.time():
            return False
        conn.private = [{"listenKey": key}]
        return entry[0]

