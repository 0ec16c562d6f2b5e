"""Binance USDⓈ-M futures on loopback: the REST routes and websocket streams ccxt 4.5.90 uses.

Every Binance host ccxt knows (fapi, sapi, api, ...) maps to this one server by path. Signed
routes check ``X-MBX-APIKEY``, the HMAC-SHA256 hex signature over the query string plus body,
and ``timestamp`` against the venue clock and ``recvWindow``, answering with Binance's codes
(-2014/-2015 key, -1022 signature, -1021 timestamp) so ccxt raises the same errors as in
production. Request weight is counted per minute (``X-MBX-USED-WEIGHT-1M``); over the limit the
answer is 429 with -1003 and ``Retry-After``.

Websockets accept any path (ccxt.pro uses ``/market/ws/<n>``), ``SUBSCRIBE`` /
``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS``, stream names in the URL (``/ws/btcusdt@ticker``) and
combined streams (``/stream?streams=a/b``). Streams: ``<sym>@miniTicker``, ``<sym>@ticker``,
``<sym>@markPrice[@1s]``, ``<sym>@bookTicker``, ``!miniTicker@arr``, ``!ticker@arr``,
``!markPrice@arr[@1s]``, ``!bookTicker``. Right after a subscription the current state is sent
once (like the venue's first periodic push); afterwards a message goes out whenever the market
model's published prices change.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from risk_sim.exchange.base import Handler, VenueError, VenueSimulator, WsConnection
from risk_sim.exchange.binance_private import BinancePrivate
from risk_sim.faults import Fault
from risk_sim.market import (
    Account,
    Instrument,
    Market,
    OrderRejected,
    PositionMode,
    PositionView,
    Quote,
    StateConflict,
    fmt,
    money,
)

#: Binance's own default is 2400 per minute; ours is high so tests never hit it by accident.
DEFAULT_WEIGHT_LIMIT = 100_000
NEXT_FUNDING_PERIOD_MS = 8 * 3600 * 1000

_REJECT_CODES: dict[str, tuple[int, str]] = {
    "unknown_symbol": (-1121, "Invalid symbol."),
    "bad_side": (-1117, "Invalid side."),
    "bad_type": (-1116, "Invalid orderType."),
    "bad_quantity": (-1111, "Precision is over the maximum defined for this asset."),
    "below_min": (-4003, "Quantity less than or equal to zero or below the minimum."),
    "would_rest": (-1013, "Simulator: only marketable orders are filled; this limit order "
                          "would rest on the book."),
    "position_side_mismatch": (-4061, "Order's position side does not match user's setting."),
    "position_side_required": (-4061, "Order's position side does not match user's setting."),
    "reduce_only_rejected": (-2022, "ReduceOnly Order is rejected."),
    "reduce_only_not_allowed": (-1106, "Parameter 'reduceonly' sent when not required."),
    "reduce_exceeds_position": (-2022, "ReduceOnly Order is rejected."),
    "insufficient_margin": (-2019, "Margin is insufficient."),
}

_STREAM = re.compile(
    r"^(?:(?P<sym>[a-z0-9]+)@(?P<kind>miniTicker|ticker|markPrice|bookTicker)(?P<freq>@1s)?"
    r"|!(?P<all>miniTicker@arr|ticker@arr|markPrice@arr(?:@1s)?|bookTicker))$")


def _places(step: Decimal) -> int:
    exponent = step.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _err(status: int, code: int, msg: str) -> VenueError:
    return VenueError(status, {"code": code, "msg": msg})


class _WeightWindow:
    """Request weight per fixed wall-clock minute, as Binance counts it per IP."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._minute = 0
        self.used = 0

    def charge(self, weight: int) -> tuple[bool, int, int]:
        """(allowed, used after the charge, seconds until the window resets)."""
        now = time.time()
        minute = int(now // 60)
        with self._lock:
            if minute != self._minute:
                self._minute, self.used = minute, 0
            retry_after = max(1, int(60 - now % 60) + 1)
            if self.used + weight > self.limit:
                return False, self.used, retry_after
            self.used += weight
            return True, self.used, retry_after

    def reset(self) -> None:
        with self._lock:
            self.used = 0


class BinanceSimulator(BinancePrivate, VenueSimulator):
    """Binance USDⓈ-M futures (REST + websocket) over the shared market model."""

    venue = "binance"

    def __init__(self, market: Market, *, weight_limit: int = DEFAULT_WEIGHT_LIMIT,
                 **kwargs: Any) -> None:
        self.weights = _WeightWindow(weight_limit)
        super().__init__(market, **kwargs)

    def set_weight_limit(self, limit: int | None = None, *, reset: bool = True) -> None:
        """Change the per-minute weight limit (None: the default) and optionally the count."""
        self.weights.limit = DEFAULT_WEIGHT_LIMIT if limit is None else int(limit)
        if reset:
            self.weights.reset()

    def reset(self) -> None:
        super().reset()
        self.set_weight_limit(None)

    # -- plumbing -------------------------------------------------------------------------------
    def error_body(self, fault: Fault, request: web.Request) -> web.StreamResponse:
        if fault.kind == "rate_limit":
            retry = str(fault.params.get("retry_after", 1))
            return web.json_response(
                {"code": -1003, "msg": "Too many requests; current limit of IP(127.0.0.1) is "
                 f"{self.weights.limit} requests per minute. Please use the websocket for live "
                 "updates to avoid polling the API."}, status=429, headers={"Retry-After": retry})
        if fault.kind == "auth_error":
            return web.json_response({"code": -2015, "msg": "Invalid API-key, IP, or permissions "
                                      "for action."}, status=401)
        status = int(fault.params.get("status", 500))
        if fault.params.get("body") == "text":
            return web.Response(status=status, text="Service Unavailable")
        return web.json_response({"code": -1001, "msg": "Internal error; unable to process your "
                                  "request. Please try again."}, status=status)

    def not_found(self, request: web.Request) -> web.Response:
        return web.json_response({"code": -5000, "msg": f"Path {request.path}, Method "
                                  f"{request.method} is invalid"}, status=404)

    async def venue_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await handler(request)
        weight = self._weight(request)
        allowed, used, retry_after = self.weights.charge(weight)
        headers = {"X-MBX-USED-WEIGHT-1M": str(used)}
        if not allowed:
            return web.json_response(
                {"code": -1003, "msg": "Too many requests; current limit of IP(127.0.0.1) is "
                 f"{self.weights.limit} requests per minute. Please use the websocket for live "
                 "updates to avoid polling the API."},
                status=429, headers={**headers, "Retry-After": str(retry_after)})
        try:
            response = await handler(request)
        except VenueError as exc:
            exc.headers.update(headers)
            raise
        response.headers.update(headers)
        return response

    @staticmethod
    def _weight(request: web.Request) -> int:
        path = request.path
        has_symbol = "symbol" in request.query
        if path.endswith("/ticker/24hr"):
            return 1 if has_symbol else 40
        if path.endswith("/premiumIndex"):
            return 1 if has_symbol else 10
        if path.endswith(("/ticker/price", "/ticker/bookTicker")):
            return 1 if has_symbol else 2
        if path.endswith(("/account", "/positionRisk", "/userTrades", "/symbolConfig")):
            return 5
        if path.endswith("/positionSide/dual"):
            return 30
        if path.endswith("/capital/config/getall"):
            return 10
        return 1

    async def _signed(self, request: web.Request) -> tuple[Account, dict[str, str]]:
        """Verify key, signature and timestamp exactly as Binance does; return the params."""
        key = request.headers.get("X-MBX-APIKEY", "")
        if not key:
            raise _err(401, -2014, "API-key format invalid.")
        account = self.market.account_by_key(self.venue, key)
        if account is None:
            raise _err(401, -2015, "Invalid API-key, IP, or permissions for action.")
        raw_query = request.rel_url.raw_query_string
        body = (await request.text()) if request.can_read_body else ""
        signature = None
        parts = []
        for part in (raw_query, body):
            kept = []
            for item in part.split("&") if part else []:
                if item.startswith("signature="):
                    signature = item[len("signature="):]
                else:
                    kept.append(item)
            parts.append("&".join(kept))
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        params.update(parse_qsl(body, keep_blank_values=True))
        params.pop("signature", None)
        if signature is None:
            raise _err(400, -1022, "Signature for this request is not valid.")
        expected = hmac.new(account.secret.encode(), "".join(parts).encode(),
                            hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise _err(400, -1022, "Signature for this request is not valid.")
        try:
            timestamp = int(params["timestamp"])
        except (KeyError, ValueError):
            raise _err(400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/"
                       "null, or malformed.") from None
        try:
            recv_window = int(params.get("recvWindow", 5000))
        except ValueError:
            raise _err(400, -1102, "Parameter 'recvWindow' was malformed.") from None
        if recv_window > 60_000:
            raise _err(400, -1131, "recvWindow must be less than 60000")
        now = self.now_ms()
        if timestamp > now + 1000:
            raise _err(400, -1021, "Timestamp for this request was 1000ms ahead of the server's "
                       "time.")
        if now - timestamp > recv_window:
            raise _err(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        return account, params

    def _instrument(self, venue_id: str | None) -> Instrument:
        inst = self.market.instrument_by_id(self.venue, venue_id or "")
        if inst is None:
            raise _err(400, -1121, "Invalid symbol.")
        return inst

    def _selected(self, request: web.Request) -> list[Instrument]:
        symbol = request.query.get("symbol")
        if symbol is not None:
            return [self._instrument(symbol)]
        return list(self.market.instruments[self.venue].values())

    # -- routes ---------------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        r = [
            web.get("/fapi/v1/ping", self.ping),
            web.get("/fapi/v1/time", self.time),
            web.get("/fapi/v1/exchangeInfo", self.exchange_info),
            web.get("/fapi/v1/ticker/24hr", self.ticker_24hr),
            web.get("/fapi/v1/ticker/price", self.ticker_price),
            web.get("/fapi/v2/ticker/price", self.ticker_price),
            web.get("/fapi/v1/ticker/bookTicker", self.book_ticker),
            web.get("/fapi/v1/premiumIndex", self.premium_index),
            web.get("/fapi/v2/account", self.account_v2),
            web.get("/fapi/v3/account", self.account_v3),
            web.get("/fapi/v2/balance", self.balance),
            web.get("/fapi/v3/balance", self.balance),
            web.get("/fapi/v2/positionRisk", self.position_risk_v2),
            web.get("/fapi/v3/positionRisk", self.position_risk_v3),
            web.get("/fapi/v1/leverageBracket", self.leverage_bracket),
            web.get("/fapi/v1/positionSide/dual", self.position_mode),
            web.post("/fapi/v1/positionSide/dual", self.set_position_mode),
            web.get("/fapi/v1/symbolConfig", self.symbol_config),
            web.post("/fapi/v1/leverage", self.set_leverage),
            web.post("/fapi/v1/order", self.create_order),
            web.get("/fapi/v1/userTrades", self.user_trades),
            web.get("/sapi/v1/capital/config/getall", self.capital_config),
            web.get("/sapi/v1/margin/allPairs", self.margin_pairs),
            web.get("/sapi/v1/margin/isolated/allPairs", self.margin_pairs),
            *self.private_routes(),
        ]
        return r

    def extra_admin_routes(self) -> list[web.RouteDef]:
        async def rate_limit(request: web.Request) -> web.Response:
            data = await request.json() if request.can_read_body else {}
            self.set_weight_limit(data.get("limit"), reset=bool(data.get("reset", True)))
            return web.json_response({"ok": True, "limit": self.weights.limit})

        async def expire_keys(_: web.Request) -> web.Response:
            return web.json_response({"ok": True,
                                      "closed": await self._end_streams(
                                          set(self._expire_all_keys()), expired=True)})

        return [web.post("/__admin/rate_limit", rate_limit),
                web.post("/__admin/listen_keys/expire", expire_keys)]

    async def ping(self, _: web.Request) -> web.Response:
        return web.json_response({})

    async def time(self, _: web.Request) -> web.Response:
        return web.json_response({"serverTime": self.now_ms()})

    async def exchange_info(self, _: web.Request) -> web.Response:
        symbols = []
        assets: set[str] = set()
        for inst in self.market.instruments[self.venue].values():
            assets.add(inst.settle)
            price_places = _places(inst.tick_size)
            qty_places = _places(inst.lot_size)
            symbols.append({
                "symbol": inst.venue_id, "pair": inst.venue_id, "contractType": "PERPETUAL",
                "deliveryDate": 4133404800000, "onboardDate": 1569398400000,
                "status": "TRADING", "maintMarginPercent": "2.5000",
                "requiredMarginPercent": "5.0000", "baseAsset": inst.base,
                "quoteAsset": inst.quote, "marginAsset": inst.settle,
                "pricePrecision": price_places, "quantityPrecision": qty_places,
                "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN",
                "underlyingSubType": [], "settlePlan": 0, "triggerProtect": "0.0500",
                "liquidationFee": "0.012500", "marketTakeBound": "0.05",
                "maxMoveOrderLimit": 10000,
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": fmt(inst.tick_size),
                     "maxPrice": "10000000", "tickSize": fmt(inst.tick_size)},
                    {"filterType": "LOT_SIZE", "minQty": fmt(inst.min_qty), "maxQty": "1000000",
                     "stepSize": fmt(inst.lot_size)},
                    {"filterType": "MARKET_LOT_SIZE", "minQty": fmt(inst.min_qty),
                     "maxQty": "1000000", "stepSize": fmt(inst.lot_size)},
                    {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                    {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                    {"filterType": "MIN_NOTIONAL", "notional": "5"},
                    {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500",
                     "multiplierDown": "0.9500", "multiplierDecimal": "4"},
                ],
                "orderTypes": ["LIMIT", "MARKET"],
                "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
            })
        return web.json_response({
            "timezone": "UTC", "serverTime": self.now_ms(), "futuresType": "U_MARGINED",
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": self.weights.limit},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1,
                 "limit": 1200}],
            "exchangeFilters": [],
            "assets": [{"asset": a, "marginAvailable": True, "autoAssetExchange": "-10000"}
                       for a in sorted(assets)],
            "symbols": symbols,
        })

    # -- market data renderers (REST and websocket share them) ----------------------------------
    def _ticker_24hr(self, inst: Instrument, quote: Quote) -> dict[str, Any]:
        now = self.now_ms()
        change = quote.last - quote.open
        pct = (change / quote.open * 100) if quote.open else Decimal(0)
        vwap = (quote.quote_volume / quote.volume) if quote.volume else quote.last
        return {
            "symbol": inst.venue_id, "priceChange": fmt(change),
            "priceChangePercent": f"{pct:.3f}", "weightedAvgPrice": fmt(inst.round_price(vwap)),
            "lastPrice": fmt(quote.last), "lastQty": fmt(inst.min_qty),
            "openPrice": fmt(quote.open), "highPrice": fmt(quote.high),
            "lowPrice": fmt(quote.low), "volume": fmt(quote.volume),
            "quoteVolume": fmt(quote.quote_volume), "openTime": now - 86_400_000,
            "closeTime": now, "firstId": 1, "lastId": 1 + quote.trades,
            "count": 1 + quote.trades,
        }

    def _mark(self, inst: Instrument, quote: Quote) -> dict[str, Any]:
        now = self.now_ms()
        return {
            "symbol": inst.venue_id, "markPrice": fmt(quote.mark), "indexPrice": fmt(quote.index),
            "estimatedSettlePrice": fmt(quote.index), "lastFundingRate": fmt(quote.funding_rate),
            "interestRate": "0.00010000",
            "nextFundingTime": (now // NEXT_FUNDING_PERIOD_MS + 1) * NEXT_FUNDING_PERIOD_MS,
            "time": now,
        }

    async def ticker_24hr(self, request: web.Request) -> web.Response:
        rows = [self._ticker_24hr(i, self.market.quote(self.venue, i.symbol))
                for i in self._selected(request)]
        return web.json_response(rows[0] if "symbol" in request.query else rows)

    async def ticker_price(self, request: web.Request) -> web.Response:
        rows = [{"symbol": i.venue_id, "price": fmt(self.market.quote(self.venue, i.symbol).last),
                 "time": self.now_ms()} for i in self._selected(request)]
        return web.json_response(rows[0] if "symbol" in request.query else rows)

    async def book_ticker(self, request: web.Request) -> web.Response:
        rows = []
        for inst in self._selected(request):
            q = self.market.quote(self.venue, inst.symbol)
            rows.append({"symbol": inst.venue_id, "bidPrice": fmt(q.bid),
                         "bidQty": fmt(q.bid_qty), "askPrice": fmt(q.ask),
                         "askQty": fmt(q.ask_qty), "time": self.now_ms(),
                         "lastUpdateId": 1 + q.trades})
        return web.json_response(rows[0] if "symbol" in request.query else rows)

    async def premium_index(self, request: web.Request) -> web.Response:
        rows = [self._mark(i, self.market.quote(self.venue, i.symbol))
                for i in self._selected(request)]
        return web.json_response(rows[0] if "symbol" in request.query else rows)

    # -- account --------------------------------------------------------------------------------
    def _asset_rows(self, account: Account) -> list[dict[str, Any]]:
        rows = []
        for b in self.market.balances(self.venue, account.name):
            rows.append({
                "asset": b.asset, "walletBalance": fmt(b.wallet),
                "unrealizedProfit": fmt(b.unrealized_pnl), "marginBalance": fmt(b.margin_balance),
                "maintMargin": fmt(b.maint_margin), "initialMargin": fmt(b.initial_margin),
                "positionInitialMargin": fmt(b.initial_margin), "openOrderInitialMargin": "0",
                "crossWalletBalance": fmt(b.wallet), "crossUnPnl": fmt(b.unrealized_pnl),
                "availableBalance": fmt(b.available), "maxWithdrawAmount": fmt(b.available),
                "marginAvailable": True,
                # Binance sends 0 for assets never touched; ccxt drops those rows
                "updateTime": b.updated_ms,
            })
        return rows

    def _position_common(self, view: PositionView) -> dict[str, Any]:
        pos = view.position
        signed_notional = view.notional if view.side == "long" else -view.notional
        isolated = view.margin_mode == "isolated"
        isolated_wallet = money(view.contracts * view.instrument.contract_size *
                                pos.entry_price / view.leverage) if isolated else Decimal(0)
        return {
            "symbol": view.instrument.venue_id,
            "positionSide": "BOTH" if pos.side == "net" else pos.side.upper(),
            "positionAmt": fmt(view.quantity),
            "unRealizedProfit": fmt(view.unrealized_pnl),
            "isolatedMargin": fmt(money(isolated_wallet + view.unrealized_pnl)) if isolated
            else "0",
            "notional": fmt(signed_notional),
            "isolatedWallet": fmt(isolated_wallet),
            "updateTime": pos.updated_ms,
        }

    def _position_v3(self, view: PositionView) -> dict[str, Any]:
        pos = view.position
        fee = self.market.venues[self.venue].taker_fee
        direction = 1 if view.side == "long" else -1
        row = self._position_common(view)
        row.update({
            "entryPrice": fmt(pos.entry_price),
            "breakEvenPrice": fmt(money(pos.entry_price * (1 + direction * 2 * fee))),
            "markPrice": fmt(view.mark), "liquidationPrice": fmt(view.liquidation_price),
            "marginAsset": view.instrument.settle, "initialMargin": fmt(view.initial_margin),
            "maintMargin": fmt(view.maint_margin),
            "positionInitialMargin": fmt(view.initial_margin), "openOrderInitialMargin": "0",
            "adl": 1, "bidNotional": "0", "askNotional": "0",
        })
        return row

    def _position_v2(self, view: PositionView) -> dict[str, Any]:
        row = self._position_v3(view)
        for key in ("marginAsset", "initialMargin", "maintMargin", "positionInitialMargin",
                    "openOrderInitialMargin", "adl", "bidNotional", "askNotional"):
            row.pop(key, None)
        row.update({"leverage": str(view.leverage), "maxNotionalValue": "1000000000",
                    "marginType": view.margin_mode, "isAutoAddMargin": "false",
                    "isolated": view.margin_mode == "isolated", "adlQuantile": 1})
        return row

    def _positions(self, account: Account, symbol: str | None) -> list[PositionView]:
        views = self.market.positions(self.venue, account.name)
        if symbol is not None:
            inst = self._instrument(symbol)
            views = [v for v in views if v.symbol == inst.symbol]
        return views

    def _account_totals(self, account: Account) -> dict[str, Any]:
        balances = self.market.balances(self.venue, account.name)

        def total(attr: str) -> str:
            return fmt(sum((getattr(b, attr) for b in balances), Decimal(0)))

        return {
            "totalInitialMargin": total("initial_margin"), "totalMaintMargin": total("maint_margin"),
            "totalWalletBalance": total("wallet"), "totalUnrealizedProfit": total("unrealized_pnl"),
            "totalMarginBalance": total("margin_balance"),
            "totalPositionInitialMargin": total("initial_margin"),
            "totalOpenOrderInitialMargin": "0", "totalCrossWalletBalance": total("wallet"),
            "totalCrossUnPnl": total("unrealized_pnl"), "availableBalance": total("available"),
            "maxWithdrawAmount": total("available"),
        }

    async def account_v3(self, request: web.Request) -> web.Response:
        account, _ = await self._signed(request)
        body = self._account_totals(account)
        body["assets"] = self._asset_rows(account)
        body["positions"] = []
        for view in self._positions(account, None):
            row = self._position_common(view)
            row.update({"initialMargin": fmt(view.initial_margin),
                        "maintMargin": fmt(view.maint_margin)})
            body["positions"].append(row)
        return web.json_response(body)

    async def account_v2(self, request: web.Request) -> web.Response:
        account, _ = await self._signed(request)
        body = self._account_totals(account)
        body.update({"feeTier": 0, "canTrade": True, "canDeposit": True, "canWithdraw": True,
                     "updateTime": 0, "multiAssetsMargin": False, "tradeGroupId": -1})
        body["assets"] = self._asset_rows(account)
        body["positions"] = []
        for view in self._positions(account, None):
            row = self._position_common(view)
            row.update({"initialMargin": fmt(view.initial_margin),
                        "maintMargin": fmt(view.maint_margin),
                        "positionInitialMargin": fmt(view.initial_margin),
                        "openOrderInitialMargin": "0", "leverage": str(view.leverage),
                        "isolated": view.margin_mode == "isolated",
                        "entryPrice": fmt(view.position.entry_price),
                        "maxNotional": "1000000000", "bidNotional": "0", "askNotional": "0"})
            body["positions"].append(row)
        return web.json_response(body)

    async def balance(self, request: web.Request) -> web.Response:
        account, _ = await self._signed(request)
        rows = [{"accountAlias": "SgsR", "asset": a["asset"], "balance": a["walletBalance"],
                 "crossWalletBalance": a["crossWalletBalance"], "crossUnPnl": a["crossUnPnl"],
                 "availableBalance": a["availableBalance"],
                 "maxWithdrawAmount": a["maxWithdrawAmount"], "marginAvailable": True,
                 "updateTime": a["updateTime"]} for a in self._asset_rows(account)]
        return web.json_response(rows)

    async def position_risk_v3(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        return web.json_response([self._position_v3(v)
                                  for v in self._positions(account, params.get("symbol"))])

    async def position_risk_v2(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        return web.json_response([self._position_v2(v)
                                  for v in self._positions(account, params.get("symbol"))])

    async def leverage_bracket(self, request: web.Request) -> web.Response:
        _, params = await self._signed(request)
        insts = [self._instrument(params["symbol"])] if "symbol" in params else \
            list(self.market.instruments[self.venue].values())
        rows = [{"symbol": i.venue_id, "notionalCoef": 1.0, "brackets": [
            {"bracket": 1, "initialLeverage": i.max_leverage, "notionalCap": 1_000_000_000,
             "notionalFloor": 0, "maintMarginRatio": float(i.maint_margin_rate), "cum": 0.0}]}
            for i in insts]
        return web.json_response(rows[0] if "symbol" in params else rows)

    async def position_mode(self, request: web.Request) -> web.Response:
        account, _ = await self._signed(request)
        return web.json_response({"dualSidePosition": account.position_mode == "hedge"})

    async def set_position_mode(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        wanted = params.get("dualSidePosition", "").lower()
        if wanted not in ("true", "false"):
            raise _err(400, -1102, "Mandatory parameter 'dualSidePosition' was not sent, was "
                       "empty/null, or malformed.")
        mode: PositionMode = "hedge" if wanted == "true" else "one_way"
        if account.position_mode == mode:
            raise _err(400, -4059, "No need to change position side.")
        try:
            self.market.set_position_mode(self.venue, account.name, mode)
        except StateConflict:
            raise _err(400, -4068, "Position side cannot be changed if there exists "
                       "position.") from None
        return web.json_response({"code": 200, "msg": "success"})

    async def symbol_config(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        insts = [self._instrument(params["symbol"])] if "symbol" in params else \
            list(self.market.instruments[self.venue].values())
        return web.json_response([{
            "symbol": i.venue_id,
            "marginType": "ISOLATED" if account.margin_mode_for(i.symbol) == "isolated"
            else "CROSSED", "isAutoAddMargin": "false",
            "leverage": account.leverage_for(i.symbol), "maxNotionalValue": "1000000000"}
            for i in insts])

    async def set_leverage(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        inst = self._instrument(params.get("symbol"))
        try:
            leverage = int(params["leverage"])
            self.market.set_leverage(self.venue, account.name, inst.symbol, leverage)
        except (KeyError, ValueError):
            raise _err(400, -1102, "Mandatory parameter 'leverage' was not sent, was empty/null, "
                       "or malformed.") from None
        except Exception:
            raise _err(400, -4028, "Leverage is not valid") from None
        return web.json_response({"leverage": leverage, "maxNotionalValue": "1000000000",
                                  "symbol": inst.venue_id})

    async def create_order(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        inst = self._instrument(params.get("symbol"))
        order_type = params.get("type", "").upper()
        if order_type not in ("MARKET", "LIMIT"):
            raise _err(400, -1116, "Invalid orderType.")
        if "quantity" not in params:
            raise _err(400, -1102, "Mandatory parameter 'quantity' was not sent, was empty/null, "
                       "or malformed.")
        position_side = params.get("positionSide", "BOTH").upper()
        reduce_only = params.get("reduceOnly", "false").lower() == "true"
        try:
            order = self.market.place_order(
                self.venue, account.name, inst.symbol, side=params.get("side", "").lower(),
                amount=params["quantity"], order_type=order_type.lower(),
                price=params.get("price"), reduce_only=reduce_only,
                position_side=None if position_side == "BOTH" else position_side.lower(),
                client_order_id=params.get("newClientOrderId"))
        except OrderRejected as exc:
            code, msg = _REJECT_CODES[exc.reason]
            raise _err(400, code, msg) from None
        body = self.order_json(inst, order)
        body["timeInForce"] = params.get("timeInForce", "GTC")
        body["positionSide"] = position_side
        return web.json_response(body)

    async def user_trades(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        if "symbol" not in params:
            raise _err(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, "
                       "or malformed.")
        inst = self._instrument(params["symbol"])
        rows = []
        for t in self.market.account(self.venue, account.name).trades:
            if t.symbol != inst.symbol:
                continue
            rows.append({
                "buyer": t.side == "buy", "commission": fmt(t.fee), "commissionAsset": t.fee_asset,
                "id": t.id, "maker": t.maker, "orderId": t.order_id, "price": fmt(t.price),
                "qty": fmt(t.base_qty), "quoteQty": fmt(t.quote_qty),
                "realizedPnl": fmt(t.realized_pnl), "side": t.side.upper(),
                "positionSide": "BOTH" if t.position_side == "net" else t.position_side.upper(),
                "symbol": inst.venue_id, "time": t.time_ms})
        limit = int(params.get("limit", 500))
        return web.json_response(rows[-limit:])

    async def capital_config(self, request: web.Request) -> web.Response:
        account, _ = await self._signed(request)
        coins: set[str] = set(account.balances)
        for inst in self.market.instruments[self.venue].values():
            coins.update((inst.base, inst.quote, inst.settle))
        rows = []
        for coin in sorted(coins):
            rows.append({
                "coin": coin, "depositAllEnable": True, "withdrawAllEnable": True, "name": coin,
                "free": "0", "locked": "0", "freeze": "0", "withdrawing": "0", "ipoing": "0",
                "ipoable": "0", "storage": "0", "isLegalMoney": False, "trading": True,
                "networkList": [{
                    "network": coin, "coin": coin, "withdrawIntegerMultiple": "0.00000001",
                    "isDefault": True, "depositEnable": True, "withdrawEnable": True,
                    "depositDesc": "", "withdrawDesc": "", "specialTips": "", "name": coin,
                    "resetAddressStatus": False, "addressRegex": "", "memoRegex": "",
                    "withdrawFee": "0.0005", "withdrawMin": "0.001", "withdrawMax": "9999999",
                    "minConfirm": 1, "unLockConfirm": 2, "sameAddress": False,
                    "estimatedArrivalTime": 5, "busy": False}],
            })
        return web.json_response(rows)

    async def margin_pairs(self, request: web.Request) -> web.Response:
        """The spot margin pairs ccxt asks for while loading currencies (``fetchMargins``)."""
        await self._signed(request)
        return web.json_response([{
            "id": n, "symbol": i.venue_id, "base": i.base, "quote": i.quote,
            "isMarginTrade": True, "isBuyAllowed": True, "isSellAllowed": True}
            for n, i in enumerate(self.market.instruments[self.venue].values(), start=1)])

    # -- websockets -----------------------------------------------------------------------------
    async def on_ws_open(self, conn: WsConnection) -> None:
        account = self.listen_key_account(conn)
        if account is False:
            await self._drop(conn, code=1008, reason="invalid listen key")
            return
        if isinstance(account, str):
            conn.account = account  # a user-data stream: pushes come from render_private
            return
        streams: list[str] = []
        if conn.path.rstrip("/").endswith("/stream") or conn.path == "/stream":
            raw = conn.request.query.get("streams", "")
            streams = [s for s in raw.split("/") if s]
        else:
            last = conn.path.rstrip("/").rsplit("/", 1)[-1]
            if "@" in last or last.startswith("!"):
                streams = [last]
        valid = [s for s in streams if _STREAM.match(s)]
        if valid:
            conn.subscriptions.update(valid)
            self._snapshot(conn, valid)

    def _combined(self, conn: WsConnection) -> bool:
        return conn.path.rstrip("/").endswith("/stream")

    async def on_ws_text(self, conn: WsConnection, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            conn.send({"error": {"code": 3, "msg": "Invalid JSON: expected value at line 1 "
                                 "column 1"}}, data=False)
            return
        if not isinstance(message, dict):
            conn.send({"error": {"code": 3, "msg": "Invalid JSON"}}, data=False)
            return
        method = str(message.get("method", "")).upper()
        request_id = message.get("id")
        params = message.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                conn.send({"error": {"code": 2, "msg": "Invalid request: request params must "
                                     "be an array of strings"}, "id": request_id}, data=False)
                return
            bad = [p for p in params if not _STREAM.match(p)]
            if bad:
                conn.send({"error": {"code": 2, "msg": f"Invalid request: invalid stream "
                                     f"{bad[0]}"}, "id": request_id}, data=False)
                return
            if method == "SUBSCRIBE":
                conn.subscriptions.update(params)
                conn.send({"result": None, "id": request_id}, data=False)
                self._snapshot(conn, params)
            else:
                conn.subscriptions.difference_update(params)
                conn.send({"result": None, "id": request_id}, data=False)
        elif method == "LIST_SUBSCRIPTIONS":
            conn.send({"result": sorted(conn.subscriptions), "id": request_id}, data=False)
        elif method in ("SET_PROPERTY", "GET_PROPERTY"):
            conn.send({"result": None if method == "SET_PROPERTY" else False, "id": request_id},
                      data=False)
        else:
            conn.send({"error": {"code": 2, "msg": f"Invalid request: unknown method {method}"},
                       "id": request_id}, data=False)

    def _snapshot(self, conn: WsConnection, streams: list[str]) -> None:
        symbols = set(self.market.instruments[self.venue])
        saved = conn.subscriptions
        conn.subscriptions = set(streams)
        try:
            for message in self.render_updates(conn, symbols):
                conn.send(message)
        finally:
            conn.subscriptions = saved

    def render_updates(self, conn: WsConnection, symbols: set[str]) -> list[Any]:
        out: list[Any] = []
        by_id: dict[str, tuple[Instrument, Quote]] = {}
        for symbol in symbols:
            inst = self.market.instruments[self.venue].get(symbol)
            if inst is None:
                continue
            by_id[inst.venue_id.lower()] = (inst, self.market.quote(self.venue, inst.symbol))
        now = self.now_ms()
        combined = self._combined(conn)
        for stream in sorted(conn.subscriptions):
            match = _STREAM.match(stream)
            if match is None:
                continue
            if match.group("all"):
                kind = match.group("all")
                items = [v for _, v in sorted(by_id.items())]
                if not items:
                    continue
                if kind.startswith("bookTicker"):
                    events: Any = [self._book_event(i, q, now) for i, q in items]
                    for event in events:
                        out.append({"stream": stream, "data": event} if combined else event)
                    continue
                if kind.startswith("miniTicker"):
                    payload: Any = [self._mini_event(i, q, now) for i, q in items]
                elif kind.startswith("ticker"):
                    payload = [self._ticker_event(i, q, now) for i, q in items]
                else:
                    payload = [self._mark_event(i, q, now) for i, q in items]
                out.append({"stream": stream, "data": payload} if combined else payload)
                continue
            entry = by_id.get(match.group("sym"))
            if entry is None:
                continue
            inst, quote = entry
            kind = match.group("kind")
            if kind == "miniTicker":
                event = self._mini_event(inst, quote, now)
            elif kind == "ticker":
                event = self._ticker_event(inst, quote, now)
            elif kind == "markPrice":
                event = self._mark_event(inst, quote, now)
            else:
                event = self._book_event(inst, quote, now)
            out.append({"stream": stream, "data": event} if combined else event)
        return out

    @staticmethod
    def _mini_event(inst: Instrument, q: Quote, now: int) -> dict[str, Any]:
        return {"e": "24hrMiniTicker", "E": now, "s": inst.venue_id, "c": fmt(q.last),
                "o": fmt(q.open), "h": fmt(q.high), "l": fmt(q.low), "v": fmt(q.volume),
                "q": fmt(q.quote_volume)}

    def _ticker_event(self, inst: Instrument, q: Quote, now: int) -> dict[str, Any]:
        rest = self._ticker_24hr(inst, q)
        return {"e": "24hrTicker", "E": now, "s": inst.venue_id, "p": rest["priceChange"],
                "P": rest["priceChangePercent"], "w": rest["weightedAvgPrice"],
                "c": fmt(q.last), "Q": fmt(inst.min_qty), "o": fmt(q.open), "h": fmt(q.high),
                "l": fmt(q.low), "v": fmt(q.volume), "q": fmt(q.quote_volume),
                "O": now - 86_400_000, "C": now, "F": 1, "L": 1 + q.trades, "n": 1 + q.trades}

    @staticmethod
    def _mark_event(inst: Instrument, q: Quote, now: int) -> dict[str, Any]:
        return {"e": "markPriceUpdate", "E": now, "s": inst.venue_id, "p": fmt(q.mark),
                "ap": fmt(q.mark), "P": fmt(q.index), "i": fmt(q.index),
                "r": fmt(q.funding_rate),
                "T": (now // NEXT_FUNDING_PERIOD_MS + 1) * NEXT_FUNDING_PERIOD_MS}

    @staticmethod
    def _book_event(inst: Instrument, q: Quote, now: int) -> dict[str, Any]:
        return {"e": "bookTicker", "u": 1 + q.trades, "E": now, "T": now, "s": inst.venue_id,
                "b": fmt(q.bid), "B": fmt(q.bid_qty), "a": fmt(q.ask), "A": fmt(q.ask_qty)}
