"""OKX v5 (perpetual swaps) on loopback: the REST routes and websocket channels ccxt uses.

Every body is wrapped as ``{"code": "0", "msg": "", "data": [...]}``. Private routes check
``OK-ACCESS-KEY``, ``-PASSPHRASE``, ``-TIMESTAMP`` (ISO 8601, within 30 s of the venue clock) and
``-SIGN`` = base64(HMAC-SHA256(secret, timestamp + METHOD + path?query + body)), answering with
OKX's codes (50111 key, 50105 passphrase, 50113 signature, 50102 timestamp) so ccxt raises the
same errors as in production; a request flagged ``x-simulated-trading: 1`` (OKX demo trading)
is refused with 50101, as production keys are. Rate limit: requests per route per 2 s window,
then 429 with code 50011.

Websockets accept any path (ccxt appends ``/public``); ``{"op": "subscribe", "args":
[{"channel": "tickers" | "mark-price", "instId": ...}]}`` is acknowledged with ``{"event":
"subscribe", "arg": ..., "connId": ...}`` followed by a snapshot, then a push per price change;
the text ``ping`` is answered with ``pong``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from datetime import datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from risk_sim.exchange.base import Handler, VenueError, VenueSimulator, WsConnection
from risk_sim.exchange.okx_private import PRIVATE_CHANNELS, OkxPrivate
from risk_sim.faults import Fault
from risk_sim.market import (
    Account,
    BalanceView,
    Instrument,
    Market,
    OrderRejected,
    PositionView,
    Quote,
    StateConflict,
    fmt,
    money,
)

DEFAULT_REQUESTS_PER_WINDOW = 10_000  # per route per 2 s; OKX's own limits are 10-20
WINDOW_SECONDS = 2.0
TIMESTAMP_TOLERANCE_S = 30.0

_REJECT_CODES: dict[str, tuple[str, str]] = {
    "unknown_symbol": ("51001", "Instrument ID does not exist."),
    "bad_side": ("51000", "Parameter side error"),
    "bad_type": ("51000", "Parameter ordType error"),
    "bad_quantity": ("51121", "Order quantity must be a multiple of the lot size."),
    "below_min": ("51020", "Order quantity must be greater than the minimum."),
    "would_rest": ("51000", "Parameter px error: the simulator fills marketable orders only"),
    "position_side_mismatch": ("51000", "Parameter posSide error"),
    "position_side_required": ("51000", "Parameter posSide error"),
    "reduce_only_rejected": ("51169", "Order failed because you don't have any positions in "
                                      "this direction for this contract to reduce or close."),
    "reduce_only_not_allowed": ("51000", "Parameter reduceOnly error"),
    "reduce_exceeds_position": ("51205", "Reduce Only is not available."),
    "insufficient_margin": ("51008", "Order failed. Insufficient USDT margin in account"),
}
_CHANNELS = frozenset({"tickers", "mark-price"})


def _err(status: int, code: str, msg: str) -> VenueError:
    return VenueError(status, {"code": code, "msg": msg, "data": []})


def _ok(data: list[Any]) -> web.Response:
    return web.json_response({"code": "0", "msg": "", "data": data})


class _RouteWindows:
    """Requests per route in fixed 2-second windows."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[int, int]] = {}

    def allow(self, route: str) -> bool:
        window = int(time.time() // WINDOW_SECONDS)
        with self._lock:
            current, count = self._windows.get(route, (window, 0))
            if current != window:
                count = 0
            if count >= self.limit:
                self._windows[route] = (window, count)
                return False
            self._windows[route] = (window, count + 1)
            return True

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()


class OkxSimulator(OkxPrivate, VenueSimulator):
    """OKX perpetual swaps (REST + websocket) over the shared market model."""

    venue = "okx"

    def __init__(self, market: Market, *, requests_per_window: int = DEFAULT_REQUESTS_PER_WINDOW,
                 **kwargs: Any) -> None:
        self.windows = _RouteWindows(requests_per_window)
        super().__init__(market, **kwargs)

    def set_rate_limit(self, requests_per_window: int | None = None, *,
                       reset: bool = True) -> None:
        """Requests allowed per route per 2 s (None: the default)."""
        self.windows.limit = DEFAULT_REQUESTS_PER_WINDOW if requests_per_window is None \
            else int(requests_per_window)
        if reset:
            self.windows.reset()

    def reset(self) -> None:
        super().reset()
        self.set_rate_limit(None)

    # -- plumbing -------------------------------------------------------------------------------
    def error_body(self, fault: Fault, request: web.Request) -> web.StreamResponse:
        if fault.kind == "rate_limit":
            return web.json_response(
                {"code": "50011", "msg": "Rate limit reached. Please refer to API documentation "
                 "and throttle requests accordingly.", "data": []}, status=429,
                headers={"Retry-After": str(fault.params.get("retry_after", 1))})
        if fault.kind == "auth_error":
            return web.json_response({"code": "50111", "msg": "Invalid OK-ACCESS-KEY.",
                                      "data": []}, status=401)
        status = int(fault.params.get("status", 500))
        if fault.params.get("body") == "text":
            return web.Response(status=status, text="Service Unavailable")
        return web.json_response({"code": "50026", "msg": "System error. Try again later.",
                                  "data": []}, status=status)

    def not_found(self, request: web.Request) -> web.Response:
        return web.json_response({"code": "404", "msg": f"Not Found {request.path}",
                                  "data": []}, status=404)

    async def venue_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await handler(request)
        if not self.windows.allow(request.path):
            return web.json_response(
                {"code": "50011", "msg": "Rate limit reached. Please refer to API documentation "
                 "and throttle requests accordingly.", "data": []}, status=429,
                headers={"Retry-After": str(int(WINDOW_SECONDS))})
        return await handler(request)

    async def _signed(self, request: web.Request) -> tuple[Account, str]:
        """Verify the OKX signature headers; return the account and the raw body."""
        headers = request.headers
        key = headers.get("OK-ACCESS-KEY", "")
        sign = headers.get("OK-ACCESS-SIGN", "")
        stamp = headers.get("OK-ACCESS-TIMESTAMP", "")
        passphrase = headers.get("OK-ACCESS-PASSPHRASE", "")
        if not key:
            raise _err(401, "50103", "Request header OK-ACCESS-KEY cannot be empty.")
        if not passphrase:
            raise _err(401, "50104", "Request header OK-ACCESS-PASSPHRASE cannot be empty.")
        if not sign:
            raise _err(401, "50106", "Request header OK-ACCESS-SIGN cannot be empty.")
        if not stamp:
            raise _err(401, "50107", "Request header OK-ACCESS-TIMESTAMP cannot be empty.")
        if headers.get("x-simulated-trading") == "1":
            raise _err(401, "50101", "APIKey does not match current environment.")
        account = self.market.account_by_key(self.venue, key)
        if account is None:
            raise _err(401, "50111", "Invalid OK-ACCESS-KEY.")
        try:
            sent = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise _err(401, "50112", "Invalid OK-ACCESS-TIMESTAMP.") from None
        if abs(self.now() - sent) > TIMESTAMP_TOLERANCE_S:
            raise _err(401, "50102", "Timestamp request expired.")
        if not hmac.compare_digest(passphrase, account.passphrase or ""):
            raise _err(401, "50105", "Invalid OK-ACCESS-PASSPHRASE.")
        body = (await request.text()) if request.can_read_body else ""
        prehash = f"{stamp}{request.method.upper()}{request.raw_path}{body}"
        expected = base64.b64encode(hmac.new(account.secret.encode(), prehash.encode(),
                                             hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(expected, sign):
            raise _err(401, "50113", "Invalid Sign.")
        return account, body

    def _ts(self) -> str:
        return str(self.now_ms())

    def _instrument(self, inst_id: str | None) -> Instrument:
        inst = self.market.instrument_by_id(self.venue, inst_id or "")
        if inst is None:
            raise _err(400, "51001", "Instrument ID does not exist.")
        return inst

    def _inst_type(self, request: web.Request, required: bool = True) -> str | None:
        inst_type = request.query.get("instType")
        if inst_type is None and required:
            raise _err(400, "50014", "Parameter instType can not be empty.")
        if inst_type is not None and inst_type not in ("SPOT", "MARGIN", "SWAP", "FUTURES",
                                                        "OPTION", "ANY"):
            raise _err(400, "51000", "Parameter instType error")
        return inst_type

    # -- routes ---------------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v5/public/time", self.time),
            web.get("/api/v5/public/instruments", self.instruments),
            web.get("/api/v5/market/tickers", self.tickers),
            web.get("/api/v5/market/ticker", self.ticker),
            web.get("/api/v5/public/mark-price", self.mark_price),
            web.get("/api/v5/public/funding-rate", self.funding_rate),
            web.get("/api/v5/account/balance", self.balance),
            web.get("/api/v5/account/positions", self.positions),
            web.get("/api/v5/account/config", self.config),
            web.post("/api/v5/account/set-position-mode", self.set_position_mode),
            web.post("/api/v5/account/set-leverage", self.set_leverage),
            web.post("/api/v5/trade/order", self.order),
            web.post("/api/v5/trade/batch-orders", self.batch_orders),
            web.get("/api/v5/asset/currencies", self.currencies),
            *self.private_routes(),
        ]

    def extra_admin_routes(self) -> list[web.RouteDef]:
        async def rate_limit(request: web.Request) -> web.Response:
            data = await request.json() if request.can_read_body else {}
            self.set_rate_limit(data.get("limit"), reset=bool(data.get("reset", True)))
            return web.json_response({"ok": True, "limit": self.windows.limit})

        return [web.post("/__admin/rate_limit", rate_limit)]

    async def time(self, _: web.Request) -> web.Response:
        return _ok([{"ts": self._ts()}])

    async def instruments(self, request: web.Request) -> web.Response:
        inst_type = self._inst_type(request)
        if inst_type != "SWAP":
            return _ok([])
        inst_id = request.query.get("instId")
        family = request.query.get("instFamily") or request.query.get("uly")
        rows = []
        for inst in self.market.instruments[self.venue].values():
            if inst_id and inst.venue_id != inst_id:
                continue
            if family and f"{inst.base}-{inst.quote}" != family:
                continue
            rows.append({
                "alias": "", "auctionEndTime": "", "baseCcy": "", "category": "1",
                "ctMult": "1", "ctType": "linear", "ctVal": fmt(inst.contract_size),
                "ctValCcy": inst.base, "expTime": "", "instFamily": f"{inst.base}-{inst.quote}",
                "instId": inst.venue_id, "instType": "SWAP", "lever": str(inst.max_leverage),
                "listTime": "1611916828000", "lotSz": fmt(inst.lot_size),
                "maxIcebergSz": "100000000", "maxLmtAmt": "20000000",
                "maxLmtSz": "100000000", "maxMktAmt": "", "maxMktSz": "12000",
                "maxStopSz": "12000", "maxTriggerSz": "100000000", "maxTwapSz": "100000000",
                "minSz": fmt(inst.min_qty), "optType": "", "quoteCcy": "", "ruleType": "normal",
                "settleCcy": inst.settle, "state": "live", "stk": "",
                "tickSz": fmt(inst.tick_size), "uly": f"{inst.base}-{inst.quote}",
            })
        if inst_id and not rows:
            raise _err(400, "51001", "Instrument ID does not exist.")
        return _ok(rows)

    def _ticker_row(self, inst: Instrument, q: Quote) -> dict[str, Any]:
        return {
            "instType": "SWAP", "instId": inst.venue_id, "last": fmt(q.last),
            "lastSz": fmt(inst.min_qty), "askPx": fmt(q.ask), "askSz": fmt(q.ask_qty),
            "bidPx": fmt(q.bid), "bidSz": fmt(q.bid_qty), "open24h": fmt(q.open),
            "high24h": fmt(q.high), "low24h": fmt(q.low),
            "volCcy24h": fmt(q.volume), "vol24h": fmt(q.volume / inst.contract_size),
            "sodUtc0": fmt(q.open), "sodUtc8": fmt(q.open), "ts": self._ts(),
        }

    def _mark_row(self, inst: Instrument, q: Quote) -> dict[str, Any]:
        return {"instType": "SWAP", "instId": inst.venue_id, "markPx": fmt(q.mark),
                "ts": self._ts()}

    async def tickers(self, request: web.Request) -> web.Response:
        if self._inst_type(request) != "SWAP":
            return _ok([])
        family = request.query.get("instFamily") or request.query.get("uly")
        return _ok([self._ticker_row(i, self.market.quote(self.venue, i.symbol))
                    for i in self.market.instruments[self.venue].values()
                    if not family or f"{i.base}-{i.quote}" == family])

    async def ticker(self, request: web.Request) -> web.Response:
        inst_id = request.query.get("instId")
        if not inst_id:
            raise _err(400, "50014", "Parameter instId can not be empty.")
        inst = self._instrument(inst_id)
        return _ok([self._ticker_row(inst, self.market.quote(self.venue, inst.symbol))])

    async def mark_price(self, request: web.Request) -> web.Response:
        inst_type = self._inst_type(request)
        if inst_type != "SWAP":
            return _ok([])
        inst_id = request.query.get("instId")
        insts = [self._instrument(inst_id)] if inst_id else \
            list(self.market.instruments[self.venue].values())
        return _ok([self._mark_row(i, self.market.quote(self.venue, i.symbol)) for i in insts])

    async def funding_rate(self, request: web.Request) -> web.Response:
        inst_id = request.query.get("instId")
        if not inst_id:
            raise _err(400, "50014", "Parameter instId can not be empty.")
        insts = list(self.market.instruments[self.venue].values()) if inst_id == "ANY" else \
            [self._instrument(inst_id)]
        period = 8 * 3600 * 1000
        now = self.now_ms()
        funding_time = (now // period + 1) * period
        rows = []
        for inst in insts:
            q = self.market.quote(self.venue, inst.symbol)
            rows.append({
                "instType": "SWAP", "instId": inst.venue_id, "fundingRate": fmt(q.funding_rate),
                "nextFundingRate": "", "fundingTime": str(funding_time),
                "nextFundingTime": str(funding_time + period), "minFundingRate": "-0.0075",
                "maxFundingRate": "0.0075", "method": "current_period",
                "settState": "settled", "settFundingRate": fmt(q.funding_rate),
                "premium": fmt((q.mark - q.index) / q.index) if q.index else "0",
                "impactValue": "", "interestRate": "0.0001", "formulaType": "withRate",
                "ts": self._ts()})
        return _ok(rows)

    # -- account --------------------------------------------------------------------------------
    async def balance(self, request: web.Request) -> web.Response:
        account, _ = await self._signed(request)
        wanted = request.query.get("ccy")
        currencies = set(wanted.split(",")) if wanted else None
        balances = [b for b in self.market.balances(self.venue, account.name)
                    if currencies is None or b.asset in currencies]
        return _ok([self.balance_data(balances, self._ts())])

    def balance_data(self, balances: list[BalanceView], now: str) -> dict[str, Any]:
        """The account-level balance document (REST and the ``account`` channel)."""
        details = []
        totals = {"eq": Decimal(0), "imr": Decimal(0), "mmr": Decimal(0), "upl": Decimal(0)}
        for b in balances:
            totals["eq"] += b.margin_balance
            totals["imr"] += b.initial_margin
            totals["mmr"] += b.maint_margin
            totals["upl"] += b.unrealized_pnl
            details.append({
                "ccy": b.asset, "eq": fmt(b.margin_balance), "cashBal": fmt(b.wallet),
                "uTime": str(b.updated_ms), "isoEq": "0", "availEq": fmt(b.available),
                "disEq": fmt(b.margin_balance), "fixedBal": "0",
                "availBal": fmt(max(Decimal(0), b.wallet - b.initial_margin)),
                "frozenBal": fmt(b.initial_margin), "ordFrozen": "0", "liab": "0",
                "upl": fmt(b.unrealized_pnl), "uplLiab": "0", "crossLiab": "0", "isoLiab": "0",
                "mgnRatio": "", "interest": "0", "twap": "0", "maxLoan": "0",
                "eqUsd": fmt(b.margin_balance), "borrowFroz": "0", "notionalLever": "",
                "stgyEq": "0", "isoUpl": "0", "spotInUseAmt": "", "spotIsoBal": "0",
                "imr": fmt(b.initial_margin), "mmr": fmt(b.maint_margin),
                "smtSyncEq": "0", "spotCopyTradingEq": "0", "spotBal": "", "openAvgPx": "",
                "accAvgPx": "", "spotUpl": "", "spotUplRatio": "", "totalPnl": "",
                "totalPnlRatio": "",
            })
        ratio = fmt(money(totals["eq"] / totals["mmr"])) if totals["mmr"] else ""
        return {
            "adjEq": fmt(totals["eq"]), "borrowFroz": "", "details": details,
            "imr": fmt(totals["imr"]), "isoEq": "0", "mgnRatio": ratio, "mmr": fmt(totals["mmr"]),
            "notionalUsd": "", "ordFroz": "0", "totalEq": fmt(totals["eq"]), "uTime": now,
            "upl": fmt(totals["upl"]),
        }

    def _position_row(self, view: PositionView) -> dict[str, Any]:
        pos = view.position
        inst = view.instrument
        isolated = view.margin_mode == "isolated"
        margin = money(view.contracts * inst.contract_size * pos.entry_price / view.leverage)
        pos_value = view.contracts if pos.side != "net" else \
            (view.contracts if view.side == "long" else -view.contracts)
        entry_notional = view.contracts * inst.contract_size * pos.entry_price
        upl_ratio = (view.unrealized_pnl / (entry_notional / view.leverage)) if entry_notional \
            else Decimal(0)
        collateral = (margin if isolated else view.initial_margin) + view.unrealized_pnl
        return {
            "adl": "1", "availPos": fmt(view.contracts), "avgPx": fmt(pos.entry_price),
            "baseBal": "", "baseBorrowed": "", "baseInterest": "", "bePx": fmt(pos.entry_price),
            "bizRefId": "", "bizRefType": "", "cTime": str(pos.opened_ms), "ccy": inst.settle,
            "clSpotInUseAmt": "", "closeOrderAlgo": [], "deltaBS": "", "deltaPA": "",
            "fee": fmt(-money(pos.fees)), "fundingFee": "0", "gammaBS": "", "gammaPA": "",
            "idxPx": fmt(self.market.quote(self.venue, inst.symbol).index),
            "imr": "" if isolated else fmt(view.initial_margin), "instId": inst.venue_id,
            "instType": "SWAP", "interest": "", "last": fmt(view.last),
            "lever": str(view.leverage), "liab": "", "liabCcy": "", "liqPenalty": "0",
            "liqPx": fmt(view.liquidation_price), "margin": fmt(margin) if isolated else "",
            "markPx": fmt(view.mark), "maxSpotInUseAmt": "", "mgnMode": view.margin_mode,
            "mgnRatio": fmt(money(collateral / view.maint_margin)) if view.maint_margin else "",
            "mmr": fmt(view.maint_margin), "notionalUsd": fmt(view.notional), "optVal": "",
            "pendingCloseOrdLiabVal": "", "pnl": fmt(money(pos.realized_pnl)),
            "pos": fmt(pos_value), "posCcy": "", "posId": pos.position_id,
            "posSide": pos.side, "quoteBal": "", "quoteBorrowed": "", "quoteInterest": "",
            "realizedPnl": fmt(money(pos.realized_pnl - pos.fees)), "spotInUseAmt": "",
            "spotInUseCcy": "", "thetaBS": "", "thetaPA": "", "tradeId": str(pos.opened_ms),
            "uTime": str(pos.updated_ms), "upl": fmt(view.unrealized_pnl),
            "uplLastPx": fmt(money((view.last - pos.entry_price) * view.quantity)),
            "uplRatio": fmt(money(upl_ratio)), "uplRatioLastPx": "", "usdPx": "", "vegaBS": "",
            "vegaPA": "", "nonSettleAvgPx": "", "settledPnl": "",
        }

    async def positions(self, request: web.Request) -> web.Response:
        account, _ = await self._signed(request)
        inst_type = self._inst_type(request, required=False)
        if inst_type not in (None, "SWAP", "ANY"):
            return _ok([])
        wanted = request.query.get("instId")
        ids = set(wanted.split(",")) if wanted else None
        rows = [self._position_row(v) for v in self.market.positions(self.venue, account.name)
                if ids is None or v.instrument.venue_id in ids]
        return _ok(rows)

    async def config(self, request: web.Request) -> web.Response:
        account, _ = await self._signed(request)
        uid = str(int(hashlib.sha256(account.api_key.encode()).hexdigest()[:12], 16))
        return _ok([{
            "acctLv": "2", "acctStpMode": "cancel_maker", "autoLoan": False,
            "ctIsoMode": "automatic", "enableSpotBorrow": False, "greeksType": "PA",
            "ip": "", "kycLv": "2", "label": f"risk-sim-{account.name}", "level": "Lv1",
            "levelTmp": "", "liquidationGear": "-1", "mainUid": uid, "mgnIsoMode": "automatic",
            "opAuth": "0", "perm": "read_only,trade",
            "posMode": "long_short_mode" if account.position_mode == "hedge" else "net_mode",
            "roleType": "0", "spotBorrowAutoRepay": False, "spotOffsetType": "",
            "spotRoleType": "0", "spotTraderInsts": [], "traderInsts": [], "type": "0",
            "uid": uid, "settleCcy": "USDT", "settleCcyList": ["USDT", "USDC"],
        }])

    async def set_position_mode(self, request: web.Request) -> web.Response:
        account, body = await self._signed(request)
        data = _json_body(body)
        pos_mode = data.get("posMode") if isinstance(data, dict) else None
        if pos_mode not in ("long_short_mode", "net_mode"):
            raise _err(400, "51000", "Parameter posMode error")
        try:
            self.market.set_position_mode(
                self.venue, account.name, "hedge" if pos_mode == "long_short_mode" else "one_way")
        except StateConflict:
            raise _err(400, "59000", "Your settings failed as you have positions or open "
                       "orders.") from None
        return _ok([{"posMode": pos_mode}])

    async def set_leverage(self, request: web.Request) -> web.Response:
        account, body = await self._signed(request)
        data = _json_body(body)
        if not isinstance(data, dict):
            raise _err(400, "50000", "Body can not be empty.")
        inst = self._instrument(data.get("instId"))
        try:
            lever = int(float(data.get("lever", "")))
            self.market.set_leverage(self.venue, account.name, inst.symbol, lever)
        except Exception:
            raise _err(400, "51000", "Parameter lever error") from None
        return _ok([{"instId": inst.venue_id, "lever": str(lever),
                     "mgnMode": data.get("mgnMode", "cross"), "posSide": data.get("posSide", "")}])

    def _place(self, account: Account, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            return {"clOrdId": "", "ordId": "", "sCode": "51000", "sMsg": "Parameter error",
                    "tag": "", "ts": self._ts()}
        client_id = str(data.get("clOrdId", ""))
        tag = str(data.get("tag", ""))
        reduce_only = str(data.get("reduceOnly", "false")).lower() == "true"
        pos_side = str(data.get("posSide", "") or "")
        if account.position_mode == "one_way" and pos_side == "net":
            pos_side = ""
        ord_type = str(data.get("ordType", "")).lower()
        if ord_type in ("ioc", "fok", "optimal_limit_ioc"):
            ord_type = "limit" if data.get("px") else "market"
        try:
            inst = self._instrument(data.get("instId"))
            if str(data.get("tdMode", "cross")) not in ("cross", "isolated"):
                raise OrderRejected("bad_type", "tdMode must be cross or isolated for swaps")
            order = self.market.place_order(
                self.venue, account.name, inst.symbol, side=str(data.get("side", "")),
                amount=data.get("sz", ""), order_type=ord_type, price=data.get("px"),
                reduce_only=reduce_only, position_side=pos_side or None,
                client_order_id=client_id or None, margin_mode=str(data.get("tdMode", "")))
        except VenueError as exc:
            return {"clOrdId": client_id, "ordId": "", "sCode": exc.body["code"],
                    "sMsg": exc.body["msg"], "tag": tag, "ts": self._ts()}
        except OrderRejected as exc:
            code, msg = _REJECT_CODES[exc.reason]
            return {"clOrdId": client_id, "ordId": "", "sCode": code, "sMsg": msg, "tag": tag,
                    "ts": self._ts()}
        return {"clOrdId": client_id, "ordId": str(order.id), "sCode": "0",
                "sMsg": "Order placed", "tag": tag, "ts": self._ts()}

    @staticmethod
    def _orders_response(results: list[dict[str, Any]]) -> web.Response:
        failed = [r for r in results if r["sCode"] != "0"]
        if not failed:
            return web.json_response({"code": "0", "msg": "", "data": results, "inTime": "",
                                      "outTime": ""})
        code = "1" if len(failed) == len(results) else "2"
        msg = "All operations failed" if code == "1" else "Bulk operation partially succeeded."
        return web.json_response({"code": code, "msg": msg, "data": results, "inTime": "",
                                  "outTime": ""})

    async def order(self, request: web.Request) -> web.Response:
        account, body = await self._signed(request)
        return self._orders_response([self._place(account, _json_body(body))])

    async def batch_orders(self, request: web.Request) -> web.Response:
        account, body = await self._signed(request)
        data = _json_body(body)
        if not isinstance(data, list) or not data:
            raise _err(400, "50000", "Body can not be empty.")
        return self._orders_response([self._place(account, item) for item in data])

    async def currencies(self, request: web.Request) -> web.Response:
        account, _ = await self._signed(request)
        coins: set[str] = set(account.balances)
        for inst in self.market.instruments[self.venue].values():
            coins.update((inst.base, inst.quote, inst.settle))
        rows = [{
            "canDep": True, "canInternal": True, "canWd": True, "ccy": c,
            "chain": f"{c}-{c}", "depQuotaFixed": "", "depQuoteDailyLayer2": "",
            "fee": "0.0005", "logoLink": "", "mainNet": True, "maxFee": "0.001",
            "maxFeeForCtAddr": "", "maxWd": "9999999", "minDep": "0.00005",
            "minDepArrivalConfirm": "1", "minFee": "0.0005", "minFeeForCtAddr": "",
            "minInternal": "0.0001", "minWd": "0.001", "minWdUnlockConfirm": "2",
            "name": c, "needTag": False, "usedDepQuotaFixed": "", "usedWdQuota": "0",
            "wdQuota": "10000000", "wdTickSz": "8"} for c in sorted(coins)]
        return _ok(rows)

    # -- websockets -----------------------------------------------------------------------------
    async def on_ws_text(self, conn: WsConnection, text: str) -> None:
        conn_id = f"{conn.id:08x}"
        if text == "ping":
            conn.send("pong", data=False)
            return
        try:
            message = json.loads(text)
        except ValueError:
            conn.send({"event": "error", "code": "60012",
                       "msg": f"Invalid request: {text[:100]}", "connId": conn_id}, data=False)
            return
        op = message.get("op") if isinstance(message, dict) else None
        args = message.get("args") if isinstance(message, dict) else None
        if op == "login":
            self.ws_login(conn, message)
            return
        if op in ("subscribe", "unsubscribe") and isinstance(args, list) and args and all(
                isinstance(a, dict) and a.get("channel") in PRIVATE_CHANNELS for a in args):
            self.ws_private_subscribe(conn, op, args)
            return
        if op not in ("subscribe", "unsubscribe") or not isinstance(args, list):
            conn.send({"event": "error", "code": "60012",
                       "msg": f"Invalid request: {text[:100]}", "connId": conn_id}, data=False)
            return
        for arg in args:
            channel = arg.get("channel") if isinstance(arg, dict) else None
            inst_id = arg.get("instId") if isinstance(arg, dict) else None
            if channel not in _CHANNELS or self.market.instrument_by_id(self.venue,
                                                                        inst_id or "") is None:
                conn.send({"event": "error", "code": "60018",
                           "msg": f"Wrong URL or channel:{channel},instId:{inst_id} doesn't "
                           "exist. Please use the correct URL, channel and parameters referring "
                           "to API document.", "connId": conn_id}, data=False)
                continue
            name = f"{channel}:{inst_id}"
            reply = {"event": op, "arg": {"channel": channel, "instId": inst_id},
                     "connId": conn_id}
            if op == "subscribe":
                conn.subscriptions.add(name)
                conn.send(reply, data=False)
                inst = self.market.instrument_by_id(self.venue, inst_id or "")
                assert inst is not None
                for update in self._render(conn, {inst.symbol}, only={name}):
                    conn.send(update)
            else:
                conn.subscriptions.discard(name)
                conn.send(reply, data=False)

    def render_updates(self, conn: WsConnection, symbols: set[str]) -> list[Any]:
        return self._render(conn, symbols)

    def _render(self, conn: WsConnection, symbols: set[str],
                only: set[str] | None = None) -> list[Any]:
        out = []
        for symbol in sorted(symbols):
            inst = self.market.instruments[self.venue].get(symbol)
            if inst is None:
                continue
            quote = self.market.quote(self.venue, symbol)
            for channel in ("tickers", "mark-price"):
                name = f"{channel}:{inst.venue_id}"
                if name not in conn.subscriptions or (only is not None and name not in only):
                    continue
                row = self._ticker_row(inst, quote) if channel == "tickers" else \
                    self._mark_row(inst, quote)
                out.append({"arg": {"channel": channel, "instId": inst.venue_id}, "data": [row]})
        return out


def _json_body(body: str) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        raise _err(400, "50002", "Json data format error.") from None
