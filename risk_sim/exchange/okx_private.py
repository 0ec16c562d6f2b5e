"""OKX v5 private side: order queries and cancels, fills, and the private websocket.

REST routes ccxt 4.5.x uses: ``GET /api/v5/trade/order``, ``POST /api/v5/trade/cancel-order``,
``GET /api/v5/trade/orders-pending``, ``/orders-history``, ``/orders-history-archive``,
``GET /api/v5/trade/fills`` and ``/fills-history`` (fees are negative numbers, newest first).

Private websocket (ccxt connects to ``<ws>/private``): ``{"op": "login", "args": [{apiKey,
passphrase, timestamp, sign}]}`` with sign = base64(HMAC-SHA256(secret, timestamp + "GET" +
"/users/self/verify")) and the timestamp (seconds) within 30 s; then ``orders`` (instType,
optional instId), ``positions`` (instType, optional instId) and ``account`` (optional ccy).
``orders`` pushes every order change, with the fill's ``tradeId``/``fillPx``/``fillSz``/
``fillFee`` when it filled; ``positions`` and ``account`` push a snapshot on subscription and
the changed positions / balances after every fill, funding payment or adjustment (a closed
position is pushed once with ``pos`` "0").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web

from risk_sim.engine import UnknownOrder
from risk_sim.events import AccountEvent
from risk_sim.exchange.base import VenueError, WsConnection
from risk_sim.market import Account, Instrument, Order, PositionView, Trade, fmt, money

if TYPE_CHECKING:
    from risk_sim.market import BalanceView, Market

PRIVATE_CHANNELS = frozenset({"orders", "positions", "account"})
STATE = {"open": "live", "partially_filled": "partially_filled", "filled": "filled",
         "canceled": "canceled", "expired": "canceled"}
LOGIN_WINDOW_S = 30.0


def _err(status: int, code: str, msg: str) -> VenueError:
    return VenueError(status, {"code": code, "msg": msg, "data": []})


def _ok(data: list[Any]) -> web.Response:
    return web.json_response({"code": "0", "msg": "", "data": data})


class OkxPrivate:
    """Mixin of :class:`~risk_sim.exchange.okx.OkxSimulator`."""

    if TYPE_CHECKING:
        venue: str
        market: Market

        async def _signed(self, request: web.Request) -> tuple[Account, str]: ...
        def _instrument(self, inst_id: str | None) -> Instrument: ...
        def _ts(self) -> str: ...
        def now(self) -> float: ...
        def _position_row(self, view: PositionView) -> dict[str, Any]: ...
        def balance_data(self, balances: list[BalanceView], now: str) -> dict[str, Any]: ...

    def private_routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v5/trade/order", self.get_order),
            web.post("/api/v5/trade/cancel-order", self.cancel_order),
            web.get("/api/v5/trade/orders-pending", self.orders_pending),
            web.get("/api/v5/trade/orders-history", self.orders_history),
            web.get("/api/v5/trade/orders-history-archive", self.orders_history),
            web.get("/api/v5/trade/fills", self.fills),
            web.get("/api/v5/trade/fills-history", self.fills),
        ]

    # -- rendering ------------------------------------------------------------------------------
    def order_row(self, inst: Instrument, order: Order, trade: Trade | None = None
                  ) -> dict[str, Any]:
        last = trade
        return {
            "instType": "SWAP", "instId": inst.venue_id, "tgtCcy": "", "ccy": "",
            "ordId": str(order.id), "clOrdId": order.client_order_id, "tag": "",
            "px": fmt(order.price) if order.price is not None else "", "pxUsd": "",
            "pxVol": "", "pxType": "", "sz": fmt(order.amount),
            "pnl": fmt(money(order.realized_pnl)),
            "ordType": order.type, "side": order.side,
            "posSide": order.position_side if order.position_side != "net" else "net",
            "tdMode": order.margin_mode, "accFillSz": fmt(order.filled),
            "fillPx": fmt(last.price) if last else "", "tradeId": str(last.id) if last else "",
            "fillSz": fmt(last.contracts) if last else "0",
            "fillTime": str(last.time_ms) if last else "",
            "avgPx": fmt(order.average) if order.filled else "", "state": STATE[order.status],
            "lever": "", "feeCcy": order.fee_asset,
            "fee": fmt(-order.fee), "rebateCcy": order.fee_asset, "rebate": "0",
            "source": "", "category": "normal", "reduceOnly": str(order.reduce_only).lower(),
            "isTpLimit": "false", "cancelSource": "", "quickMgnType": "", "algoClOrdId": "",
            "algoId": "", "stpId": "", "stpMode": "cancel_maker", "attachAlgoClOrdId": "",
            "attachAlgoOrds": [], "linkedAlgoOrd": {"algoId": ""},
            "uTime": str(order.updated_ms or order.time_ms), "cTime": str(order.time_ms),
        }

    def _fill_row(self, trade: Trade, order: Order | None) -> dict[str, Any]:
        inst = self.market.instrument(self.venue, trade.symbol)
        return {
            "instType": "SWAP", "instId": inst.venue_id, "tradeId": str(trade.id),
            "ordId": str(trade.order_id), "clOrdId": order.client_order_id if order else "",
            "billId": str(trade.id * 10), "subType": "1", "tag": "",
            "fillPx": fmt(trade.price), "fillSz": fmt(trade.contracts), "fillIdxPx": "",
            "fillPnl": fmt(trade.realized_pnl), "fillPxVol": "", "fillPxUsd": "",
            "fillMarkVol": "", "fillFwdPx": "", "fillMarkPx": "", "side": trade.side,
            "posSide": trade.position_side, "execType": "M" if trade.maker else "T",
            "feeCcy": trade.fee_asset, "fee": fmt(-trade.fee), "feeRate": "",
            "ts": str(trade.time_ms), "fillTime": str(trade.time_ms),
        }

    def _ws_order(self, event: AccountEvent) -> dict[str, Any]:
        order = event.order
        assert order is not None
        inst = self.market.instrument(self.venue, order.symbol)
        row = self.order_row(inst, order, event.trade)
        trade = event.trade
        if trade is None:  # no fill in this update: the fill fields stay empty
            row.update(tradeId="", fillPx="", fillSz="0", fillTime="")
        row.update({
            "fillPnl": fmt(trade.realized_pnl) if trade else "0",
            "fillFee": fmt(-trade.fee) if trade else "0",
            "fillFeeCcy": trade.fee_asset if trade else "",
            "execType": ("M" if trade.maker else "T") if trade else "",
            "fillNotionalUsd": fmt(trade.quote_qty) if trade else "",
            "notionalUsd": fmt(money(inst.base_qty(order.amount) *
                                     (order.price or order.average or Decimal(0)))),
            "msg": "", "amendResult": "", "code": "0", "reqId": "", "lastPx": "",
            "fillMarkPx": "",
        })
        return row

    # -- REST -----------------------------------------------------------------------------------
    def _find(self, account: Account, inst: Instrument, ord_id: Any, cl_ord_id: Any
              ) -> Order | None:
        try:
            order_id = int(ord_id) if ord_id not in (None, "") else None
        except ValueError:
            return None
        client = str(cl_ord_id) if cl_ord_id not in (None, "") else None
        if order_id is None and client is None:
            raise _err(400, "51000", "Parameter ordId or clOrdId error")
        order = self.market.find_order(self.venue, account.name, order_id, client)
        return order if order is not None and order.symbol == inst.symbol else None

    async def get_order(self, request: web.Request) -> web.Response:
        account, _ = await self._signed(request)
        q = request.query
        inst = self._instrument(q.get("instId"))
        order = self._find(account, inst, q.get("ordId"), q.get("clOrdId"))
        if order is None:
            raise _err(400, "51603", "Order does not exist")
        return _ok([self.order_row(inst, order, self._order_trade(account, order))])

    def _order_trade(self, account: Account, order: Order) -> Trade | None:
        for trade in reversed(self.market.trades(self.venue, account.name)):
            if trade.order_id == order.id:
                return trade
        return None

    async def cancel_order(self, request: web.Request) -> web.Response:
        account, body = await self._signed(request)
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            raise _err(400, "50002", "Json data format error.") from None
        if not isinstance(data, dict):
            raise _err(400, "50000", "Body can not be empty.")
        inst = self._instrument(data.get("instId"))
        order = self._find(account, inst, data.get("ordId"), data.get("clOrdId"))
        result = {"clOrdId": str(data.get("clOrdId", "")), "ordId": str(data.get("ordId", "")),
                  "ts": self._ts()}
        try:
            if order is None:
                raise UnknownOrder("no such order")
            done = self.market.cancel_order(self.venue, account.name, order.id)
        except UnknownOrder:
            result.update(sCode="51400", sMsg="Cancellation failed as the order has been "
                          "filled, canceled or does not exist.")
            return web.json_response({"code": "1", "msg": "All operations failed",
                                      "data": [result]})
        result.update(ordId=str(done.id), clOrdId=done.client_order_id, sCode="0", sMsg="")
        return _ok([result])

    def _orders(self, account: Account, request: web.Request, *, open_only: bool
                ) -> list[dict[str, Any]]:
        wanted = request.query.get("instId")
        inst_filter = self._instrument(wanted) if wanted else None
        rows = []
        trades: dict[int, Trade] = {}
        for trade in self.market.trades(self.venue, account.name):
            trades[trade.order_id] = trade
        for order in self.market.orders(self.venue, account.name, open_only=open_only):
            if inst_filter is not None and order.symbol != inst_filter.symbol:
                continue
            if not open_only and order.is_open:
                continue  # history lists finished orders only
            inst = self.market.instrument(self.venue, order.symbol)
            rows.append(self.order_row(inst, order, trades.get(order.id)))
        rows.reverse()  # newest first, as OKX lists them
        limit = int(request.query.get("limit", 100))
        return rows[:limit]

    async def orders_pending(self, request: web.Request) -> web.Response:
        account, _ = await self._signed(request)
        return _ok(self._orders(account, request, open_only=True))

    async def orders_history(self, request: web.Request) -> web.Response:
        account, _ = await self._signed(request)
        if not request.query.get("instType"):
            raise _err(400, "50014", "Parameter instType can not be empty.")
        return _ok(self._orders(account, request, open_only=False))

    async def fills(self, request: web.Request) -> web.Response:
        account, _ = await self._signed(request)
        q = request.query
        inst_filter = self._instrument(q["instId"]) if q.get("instId") else None
        ord_id = q.get("ordId")
        orders = {o.id: o for o in self.market.orders(self.venue, account.name)}
        rows = []
        for trade in reversed(self.market.trades(self.venue, account.name)):
            if inst_filter is not None and trade.symbol != inst_filter.symbol:
                continue
            if ord_id and str(trade.order_id) != ord_id:
                continue
            if q.get("begin") and trade.time_ms < int(q["begin"]):
                continue
            if q.get("end") and trade.time_ms > int(q["end"]):
                continue
            rows.append(self._fill_row(trade, orders.get(trade.order_id)))
        return _ok(rows[:int(q.get("limit", 100))])

    # -- websocket ------------------------------------------------------------------------------
    def ws_login(self, conn: WsConnection, message: dict[str, Any]) -> None:
        conn_id = f"{conn.id:08x}"
        args = message.get("args")
        arg = args[0] if isinstance(args, list) and args and isinstance(args[0], dict) else {}
        account = self.market.account_by_key(self.venue, str(arg.get("apiKey", "")))
        stamp = str(arg.get("timestamp", ""))
        failure: tuple[str, str] | None = None
        if account is None:
            failure = ("60005", "Invalid OK_ACCESS_KEY")
        elif not hmac.compare_digest(str(arg.get("passphrase", "")), account.passphrase or ""):
            failure = ("60024", "Wrong passphrase")
        else:
            try:
                sent = float(stamp)
            except ValueError:
                sent = float("nan")
            if not abs(self.now() - sent) <= LOGIN_WINDOW_S:
                failure = ("60006", "Timestamp request expired")
            else:
                expected = base64.b64encode(hmac.new(
                    account.secret.encode(), f"{stamp}GET/users/self/verify".encode(),
                    hashlib.sha256).digest()).decode()
                if not hmac.compare_digest(expected, str(arg.get("sign", ""))):
                    failure = ("60007", "Invalid sign")
        if failure is not None or account is None:
            code, msg = failure or ("60009", "Login failed.")
            conn.send({"event": "error", "code": code, "msg": msg, "connId": conn_id},
                      data=False)
            return
        conn.account = account.name
        conn.send({"event": "login", "code": "0", "msg": "", "connId": conn_id}, data=False)

    def ws_private_subscribe(self, conn: WsConnection, op: str, args: list[Any]) -> None:
        conn_id = f"{conn.id:08x}"
        if conn.account is None:
            conn.send({"event": "error", "code": "60011", "msg": "Please log in",
                       "connId": conn_id}, data=False)
            return
        for arg in args:
            if not isinstance(arg, dict) or arg.get("channel") not in PRIVATE_CHANNELS:
                conn.send({"event": "error", "code": "60018", "msg": f"Wrong URL or channel: "
                           f"{arg!r}", "connId": conn_id}, data=False)
                continue
            inst_id = arg.get("instId")
            if inst_id and self.market.instrument_by_id(self.venue, str(inst_id)) is None:
                conn.send({"event": "error", "code": "60018", "msg": f"instId {inst_id} "
                           "doesn't exist", "connId": conn_id}, data=False)
                continue
            clean = {k: v for k, v in arg.items() if isinstance(v, str)}
            if op == "unsubscribe":
                conn.private = [s for s in conn.private if s != clean]
                conn.send({"event": op, "arg": clean, "connId": conn_id}, data=False)
                continue
            if clean not in conn.private:
                conn.private.append(clean)
            conn.send({"event": op, "arg": clean, "connId": conn_id}, data=False)
            for message in self._snapshot(conn, clean):
                conn.send(message)

    def _uid(self, account_name: str) -> str:
        account = self.market.account(self.venue, account_name)
        return str(int(hashlib.sha256(account.api_key.encode()).hexdigest()[:12], 16))

    def _push_arg(self, conn: WsConnection, sub: dict[str, str]) -> dict[str, str]:
        return {**sub, "uid": self._uid(conn.account or "main")}

    def _snapshot(self, conn: WsConnection, sub: dict[str, str]) -> list[Any]:
        account = conn.account or "main"
        channel = sub["channel"]
        if channel == "positions":
            rows = [self._position_row(v) for v in self.market.positions(self.venue, account)
                    if self._matches(sub, v.instrument)]
            return [{"arg": self._push_arg(conn, sub), "eventType": "snapshot",
                     "curPage": 1, "lastPage": True, "data": rows}]
        if channel == "account":
            balances = self._ccy_filter(sub, self.market.balances(self.venue, account))
            return [{"arg": self._push_arg(conn, sub), "eventType": "snapshot", "curPage": 1,
                     "lastPage": True, "data": [self.balance_data(balances, self._ts())]}]
        return []

    @staticmethod
    def _matches(sub: dict[str, str], inst: Instrument) -> bool:
        if sub.get("instType") not in (None, "", "ANY", "SWAP"):
            return False
        if sub.get("instId") and sub["instId"] != inst.venue_id:
            return False
        family = sub.get("instFamily")
        return not family or family == f"{inst.base}-{inst.quote}"

    @staticmethod
    def _ccy_filter(sub: dict[str, str], balances: list[BalanceView]) -> list[BalanceView]:
        ccy = sub.get("ccy")
        return [b for b in balances if not ccy or b.asset in ccy.split(",")]

    def render_private(self, conn: WsConnection, event: AccountEvent) -> list[Any]:
        out: list[Any] = []
        order_inst = self.market.instrument(self.venue, event.order.symbol) \
            if event.order is not None else None
        changed = event.trade is not None or event.order is None
        for sub in conn.private:
            channel = sub["channel"]
            if channel == "orders" and order_inst is not None and event.execution and \
                    self._matches(sub, order_inst):
                out.append({"arg": self._push_arg(conn, sub), "data": [self._ws_order(event)]})
            elif channel == "positions" and changed:
                rows = [self._position_row(v) for v in event.positions
                        if self._matches(sub, v.instrument)]
                if rows:
                    out.append({"arg": self._push_arg(conn, sub), "eventType": "event_update",
                                "curPage": 1, "lastPage": True, "data": rows})
            elif channel == "account" and changed and event.balances:
                balances = self._ccy_filter(sub, list(event.balances))
                if balances:
                    out.append({"arg": self._push_arg(conn, sub), "eventType": "event_update",
                                "curPage": 1, "lastPage": True,
                                "data": [self.balance_data(balances, self._ts())]})
        return out

