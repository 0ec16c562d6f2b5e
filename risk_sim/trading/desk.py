"""A simulated trading desk: asks CheckOrder before every order, obeys it, books its own fills.

The desk is a real trading client: ccxt (binanceusdm, okx) against the venue simulators'
signed REST APIs, and Risk Monitor's gRPC ``CheckOrder`` as its pre-trade gate. For every
order it (1) asks the gate, (2) sends the order only when the answer is ALLOW, (3) reads the
order's fills back from the venue (``fetch_my_trades``) and books them in its own expected book
(positions, average entry, realised P&L, fees), and (4) writes each step on a timeline. A gate
that cannot be reached denies (fail closed): the desk never trades unchecked.

The expected book is the desk's view only: fills it did not send (a back-office fill injected
on the venue) are not in it, which is what reconciliation must find.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol

Side = Literal["buy", "sell"]
ZERO = Decimal(0)


@dataclass(frozen=True)
class Decision:
    """CheckOrder's answer, as the desk uses it."""

    allowed: bool
    reasons: tuple[str, ...] = ()
    source: str = ""
    config_version: str = ""
    latency_ms: float = 0.0


class RiskGate(Protocol):
    async def check(self, *, venue: str, account: str, symbol: str, side: Side,
                    quantity: float, price: float | None, client_order_id: str,
                    position_side: str) -> Decision: ...


class GrpcRiskGate:
    """CheckOrder over gRPC (grpc.aio), with a bearer token when the service wants one."""

    def __init__(self, target: str, *, token: str | None = None, timeout_s: float = 5.0) -> None:
        import grpc

        self._channel = grpc.aio.insecure_channel(target)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout_s
        from risk_monitor.service.proto import risk_monitor_pb2_grpc as pb_grpc

        self._stub = pb_grpc.RiskMonitorStub(self._channel)

    async def check(self, *, venue: str, account: str, symbol: str, side: Side,
                    quantity: float, price: float | None, client_order_id: str,
                    position_side: str) -> Decision:
        import grpc

        from risk_monitor.service.proto import risk_monitor_pb2 as pb

        request = pb.CheckOrderRequest(
            venue=venue, account=account, instrument=symbol,
            side=pb.SIDE_BUY if side == "buy" else pb.SIDE_SELL, quantity=quantity,
            client_order_id=client_order_id, position_side=position_side)
        if price is not None:
            request.price = price
        started = time.perf_counter()
        try:
            response = await self._stub.CheckOrder(request, metadata=self._metadata,
                                                   timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:  # unreachable or refused: fail closed
            return Decision(False, (f"DENY gate unavailable: {exc.code().name}",),
                            latency_ms=(time.perf_counter() - started) * 1000)
        return Decision(bool(response.allowed), tuple(response.reasons),
                        response.evaluation_source, response.limit_config_version,
                        (time.perf_counter() - started) * 1000)

    async def close(self) -> None:
        await self._channel.close()


# -- the desk's own book ----------------------------------------------------------------------------
@dataclass
class BookPosition:
    """Signed base quantity with its average entry, realised P&L and fees (desk's view)."""

    quantity: Decimal = ZERO
    entry: Decimal = ZERO
    realized: Decimal = ZERO
    fees: Decimal = ZERO

    def apply(self, side: Side, qty: Decimal, price: Decimal, fee: Decimal) -> Decimal:
        """Book one fill; return the realised P&L it produced (before fees)."""
        signed = qty if side == "buy" else -qty
        self.fees += fee
        realized = ZERO
        if self.quantity == 0 or (self.quantity > 0) == (signed > 0):
            total = abs(self.quantity) + qty
            self.entry = (abs(self.quantity) * self.entry + qty * price) / total
            self.quantity += signed
            return realized
        closing = min(qty, abs(self.quantity))
        direction = 1 if self.quantity > 0 else -1
        realized = (price - self.entry) * closing * direction
        self.realized += realized
        self.quantity += signed
        if self.quantity == 0:
            self.entry = ZERO
        elif (self.quantity > 0) != (direction > 0):  # flipped: the rest opened at price
            self.entry = price
        return realized


@dataclass
class ExpectedBook:
    """Per (venue, account, symbol, position side): what the desk believes it holds."""

    positions: dict[tuple[str, str, str, str], BookPosition] = field(default_factory=dict)

    def apply(self, venue: str, account: str, symbol: str, position_side: str, side: Side,
              qty: Decimal, price: Decimal, fee: Decimal) -> Decimal:
        key = (venue, account, symbol, position_side or "net")
        return self.positions.setdefault(key, BookPosition()).apply(side, qty, price, fee)

    def quantity(self, venue: str, symbol: str, account: str = "main") -> Decimal:
        """Net base quantity over the position sides (long - short)."""
        total = ZERO
        for (v, a, s, pside), pos in self.positions.items():
            if (v, a, s) == (venue, account, symbol):
                total += -abs(pos.quantity) if pside == "short" else pos.quantity
        return total

    def realized(self) -> Decimal:
        return sum((p.realized for p in self.positions.values()), ZERO)

    def fees(self) -> Decimal:
        return sum((p.fees for p in self.positions.values()), ZERO)


# -- timeline ---------------------------------------------------------------------------------------
EventKind = Literal["order", "decision", "sent", "fill", "reject", "cancel", "pnl", "alert",
                    "check", "note"]


@dataclass(frozen=True)
class TimelineEvent:
    t: float  # seconds since the desk started
    kind: EventKind
    venue: str
    symbol: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        where = f"{self.venue} {self.symbol}".strip()
        return f"{self.t:7.2f}s  {self.kind:<8} {where:<24} {self.text}"


@dataclass
class OrderOutcome:
    client_order_id: str
    venue: str
    symbol: str
    side: Side
    quantity: float  # base units
    decision: Decision
    sent: bool = False
    order_id: str | None = None
    status: str | None = None
    filled: float = 0.0  # base units
    average: float | None = None
    fees: Decimal = ZERO
    realized: Decimal = ZERO
    error: str | None = None


@dataclass
class VenueAccess:
    """One venue account the desk trades: a ccxt async client already pointed at it."""

    venue: str
    client: Any
    account: str = "main"
    hedged: bool = False  # hedge mode: orders name the position side


class Desk:
    """Checks, sends, books and logs; one instance per trading session."""

    def __init__(self, venues: list[VenueAccess], gate: RiskGate, *,
                 printer: Callable[[str], None] | None = None, name: str = "desk",
                 publish: Callable[[str, str, Decimal], None] | None = None) -> None:
        self.venues = {v.venue: v for v in venues}
        #: publishes the desk's net position per (venue, symbol) after each change, as a real
        #: trading client feeds Risk Monitor's reconciliation (``adapters/redis_desk_book.py``)
        self._publish = publish
        self.gate = gate
        self.book = ExpectedBook()
        self.timeline: list[TimelineEvent] = []
        self.outcomes: list[OrderOutcome] = []
        self.checked: list[str] = []  # client order ids, in the order they were checked
        self.sent: list[str] = []  # client order ids actually sent to a venue
        self._printer = printer
        self._name = name
        self._ids = itertools.count(1)
        self._started = time.monotonic()
        #: awaited after every step (an order checked and, if allowed, sent and booked; a
        #: cancel) with what happened: the session compares the monitor with the venues there
        self.after_step: Callable[[str], Awaitable[object]] | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> Desk:
        await asyncio.gather(*(v.client.load_markets() for v in self.venues.values()))
        self._started = time.monotonic()
        return self

    async def load_start_of_day(self) -> None:
        """Open the book with the venues' positions (the desk's start-of-day positions).

        The timeline's clock starts here: the session begins with the book.
        """
        self._started = time.monotonic()
        for access in self.venues.values():
            for pos in await access.client.fetch_positions():
                contracts = Decimal(str(pos.get("contracts") or 0))
                if contracts == 0:
                    continue
                qty = contracts * Decimal(str(pos.get("contractSize") or 1))
                side = str(pos.get("side"))
                key_side = side if access.hedged else "net"
                book = self.book.positions.setdefault(
                    (access.venue, access.account, pos["symbol"], key_side), BookPosition())
                book.quantity = qty if (side == "long" or access.hedged) else -qty
                book.entry = Decimal(str(pos.get("entryPrice") or 0))
                self.log("note", access.venue, pos["symbol"], f"start of day {side} "
                         f"{qty.normalize():f} @ {book.entry.normalize():f}")
                self.publish_position(access.venue, pos["symbol"])

    def publish_position(self, venue: str, symbol: str) -> None:
        """Tell the monitor what the desk believes it holds (its expected book)."""
        if self._publish is not None:
            self._publish(venue, symbol, self.book.quantity(venue, symbol))

    async def close(self) -> None:
        await asyncio.gather(*(v.client.close() for v in self.venues.values()),
                             return_exceptions=True)
        closer = getattr(self.gate, "close", None)
        if closer is not None:
            await closer()

    # -- timeline -------------------------------------------------------------------------------
    def log(self, kind: EventKind, venue: str, symbol: str, text: str, **data: Any) -> None:
        event = TimelineEvent(round(time.monotonic() - self._started, 3), kind, venue, symbol,
                              text, data)
        self.timeline.append(event)
        if self._printer is not None:
            self._printer(event.line())

    # -- trading --------------------------------------------------------------------------------
    def contracts(self, venue: str, symbol: str, base_qty: float) -> float:
        market = self.venues[venue].client.market(symbol)
        size = float(market.get("contractSize") or 1.0)
        return float(self.venues[venue].client.amount_to_precision(symbol, base_qty / size))

    async def submit(self, venue: str, symbol: str, side: Side, quantity: float, *,
                     order_type: Literal["market", "limit"] = "market",
                     price: float | None = None, position_side: str = "",
                     reduce_only: bool = False) -> OrderOutcome:
        """Check, then (only if allowed) send an order of ``quantity`` base units."""
        access = self.venues[venue]
        client_order_id = f"{self._name}{next(self._ids):05d}"
        if access.hedged and not position_side:
            position_side = "long" if (side == "buy") != reduce_only else "short"
        self.log("order", venue, symbol, f"{client_order_id} {side} {quantity:g} "
                 f"{order_type}{f' @ {price:g}' if price is not None else ''}"
                 f"{' reduce-only' if reduce_only else ''}", client_order_id=client_order_id)
        self.checked.append(client_order_id)
        decision = await self.gate.check(
            venue=venue, account=access.account, symbol=symbol, side=side, quantity=quantity,
            price=price, client_order_id=client_order_id, position_side=position_side)
        outcome = OrderOutcome(client_order_id, venue, symbol, side, quantity, decision)
        self.outcomes.append(outcome)
        verdict = "ALLOW" if decision.allowed else "DENY"
        first_reason = decision.reasons[0] if decision.reasons else ""
        self.log("decision", venue, symbol, f"{client_order_id} {verdict} "
                 f"({decision.latency_ms:.1f} ms) {first_reason}".rstrip(),
                 client_order_id=client_order_id, allowed=decision.allowed,
                 reasons=list(decision.reasons))
        if decision.allowed:
            await self._send(access, outcome, order_type=order_type, price=price,
                             position_side=position_side, reduce_only=reduce_only)
        await self._stepped(f"{client_order_id} {side} {quantity:g} {venue} "
                            + (f"{outcome.status or 'rejected'}" if decision.allowed
                               else "denied"))
        return outcome

    async def _stepped(self, step: str) -> None:
        if self.after_step is not None:
            await self.after_step(step)

    async def _send(self, access: VenueAccess, outcome: OrderOutcome, *, order_type: str,
                    price: float | None, position_side: str, reduce_only: bool) -> None:
        import ccxt

        client = access.client
        symbol = outcome.symbol
        params: dict[str, Any] = {"clientOrderId": outcome.client_order_id}
        if access.hedged:
            params["positionSide" if access.venue == "binance" else "posSide"] = \
                position_side.upper() if access.venue == "binance" else position_side
        elif reduce_only:
            params["reduceOnly"] = True
        amount = self.contracts(access.venue, symbol, outcome.quantity)
        self.sent.append(outcome.client_order_id)
        outcome.sent = True
        try:
            order = await client.create_order(symbol, order_type, outcome.side, amount, price,
                                              params)
        except ccxt.BaseError as exc:
            outcome.error = f"{type(exc).__name__}: {str(exc)[:160]}"
            self.log("reject", access.venue, symbol, f"{outcome.client_order_id} venue "
                     f"rejected: {outcome.error}", client_order_id=outcome.client_order_id)
            return
        outcome.order_id = str(order["id"])
        self.log("sent", access.venue, symbol, f"{outcome.client_order_id} -> order "
                 f"{outcome.order_id}", client_order_id=outcome.client_order_id,
                 order_id=outcome.order_id)
        await self.book_fills(access, outcome)

    async def book_fills(self, access: VenueAccess, outcome: OrderOutcome) -> None:
        """Read the order's fills back from the venue and book them in the expected book."""
        client = access.client
        symbol = outcome.symbol
        size = Decimal(str(client.market(symbol).get("contractSize") or 1))
        order = await client.fetch_order(outcome.order_id, symbol)
        outcome.status = order.get("status")
        fills = [t for t in await client.fetch_my_trades(symbol, None, 100)
                 if str(t["order"]) == outcome.order_id]
        fills.sort(key=lambda t: int(t["id"]))
        position_side = str((order.get("info") or {}).get("posSide") or
                            (order.get("info") or {}).get("positionSide") or "net").lower()
        if position_side == "both":
            position_side = "net"
        quote_total = ZERO
        for trade in fills:
            qty = Decimal(str(trade["amount"])) * size
            price = Decimal(str(trade["price"]))
            fee = abs(Decimal(str((trade.get("fee") or {}).get("cost") or 0)))
            realized = self.book.apply(access.venue, access.account, symbol, position_side,
                                       outcome.side, qty, price, fee)
            outcome.filled += float(qty)
            outcome.fees += fee
            outcome.realized += realized
            quote_total += qty * price
            self.log("fill", access.venue, symbol, f"{outcome.client_order_id} {outcome.side} "
                     f"{qty.normalize():f} @ {price.normalize():f} fee {fee.normalize():f}"
                     + (f" realised {realized:.2f}" if realized else ""),
                     client_order_id=outcome.client_order_id, trade_id=str(trade["id"]),
                     qty=str(qty), price=str(price), fee=str(fee), realized=str(realized))
        if outcome.filled:
            outcome.average = float(quote_total / Decimal(str(outcome.filled)))
        if fills:
            self.publish_position(access.venue, symbol)
        self.log("pnl", access.venue, symbol, f"book {self.book.quantity(access.venue, symbol)}"
                 f" base; desk realised {self.book.realized():.2f}, fees "
                 f"{self.book.fees():.2f}", realized=str(self.book.realized()),
                 fees=str(self.book.fees()))

    async def cancel(self, venue: str, symbol: str, order_id: str) -> bool:
        import ccxt

        try:
            await self.venues[venue].client.cancel_order(order_id, symbol)
        except ccxt.BaseError as exc:
            self.log("cancel", venue, symbol, f"order {order_id} not cancelled: "
                     f"{type(exc).__name__}")
            return False
        self.log("cancel", venue, symbol, f"order {order_id} cancelled")
        await self._stepped(f"cancel of order {order_id} on {venue}")
        return True

    # -- summaries ------------------------------------------------------------------------------
    def denied(self) -> list[OrderOutcome]:
        return [o for o in self.outcomes if not o.decision.allowed]

    def allowed(self) -> list[OrderOutcome]:
        return [o for o in self.outcomes if o.decision.allowed]

    def violations(self) -> list[str]:
        """Orders sent without a check, or sent despite a DENY (must be empty)."""
        problems = [f"{c} sent unchecked" for c in self.sent if c not in self.checked]
        denied = {o.client_order_id for o in self.denied()}
        problems += [f"{c} sent although denied" for c in self.sent if c in denied]
        return problems


async def repeat_until(step: Callable[[], Awaitable[OrderOutcome]], *, max_orders: int,
                       stop: Callable[[OrderOutcome], bool]) -> list[OrderOutcome]:
    """Run ``step`` up to ``max_orders`` times, stopping after the first outcome ``stop`` takes."""
    outcomes = []
    for _ in range(max_orders):
        outcome = await step()
        outcomes.append(outcome)
        if stop(outcome):
            break
    return outcomes
