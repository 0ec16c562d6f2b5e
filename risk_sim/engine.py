"""The market's trading engine: orders fill against book depth, rest, cancel, and emit events.

Venue rules (on top of those in :mod:`risk_sim.market`):

* book depth: with an instrument's ``depth`` unset, the touch has unlimited size and a taker
  order fills in one trade at the touch (bid/ask). With ``depth`` set (base units per level),
  the book has levels ``level_bps`` apart (at least one tick): a taker order walks them, one
  trade per level, so a large order fills in several partial fills at worse prices (slippage).
* limit orders fill their marketable part at once (taker); the rest is rejected
  (``would_rest``) unless the market allows resting orders (``MarketSpec.resting_orders``),
  then it rests and fills at its limit price (maker fee) when the market crosses it, one
  level's depth per price refresh, until filled or cancelled.
* every state change of an account (order accepted, fill, cancel, expiry, balance or position
  change by the admin API, funding) becomes an account event (:mod:`risk_sim.events`); the
  venue servers render them as their private websocket pushes. Events are delivered in the
  order they happened, outside the market lock.
* :meth:`TradingEngine.inject_fill` books a trade the trading client never sent (a manual or
  back-office fill): it appears in the venue's private REST and streams like any other fill.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, Any, Literal, cast

from risk_sim.events import AccountEvents
from risk_sim.model import (
    ZERO,
    Account,
    Balance,
    BalanceView,
    Instrument,
    MarginMode,
    Order,
    OrderRejected,
    Position,
    PositionSide,
    PositionView,
    Side,
    SimError,
    Trade,
    UnknownInstrument,
    _round_to,
    dec,
    money,
)

if TYPE_CHECKING:
    from risk_sim.market import InstrumentSpec, MarketSpec, Quote, VenueSpec

MAX_LEVELS = 200


class UnknownOrder(SimError):
    """No open (or no such) order with that id on that account."""




class TradingEngine(AccountEvents):
    """Mixin of :class:`risk_sim.market.Market`: everything that trades."""

    if TYPE_CHECKING:
        _lock: threading.RLock
        spec: MarketSpec
        accounts: dict[str, dict[str, Account]]
        instruments: dict[str, dict[str, Instrument]]
        instrument_specs: dict[str, InstrumentSpec]
        venues: dict[str, VenueSpec]
        _published: dict[tuple[str, str], Quote]
        _stats: dict[tuple[str, str], dict[str, Any]]
        _next_order_id: dict[str, int]
        _next_trade_id: dict[str, int]

        def account(self, venue: str, name: str = "main") -> Account: ...
        def instrument(self, venue: str, symbol: str) -> Instrument: ...
        def refresh(self) -> dict[str, set[str]]: ...
        def _new_position_id(self, venue: str) -> str: ...
        def _position_view_locked(self, acc: Account, pos: Position) -> PositionView: ...
        def _balance_view_locked(self, acc: Account, asset: str) -> BalanceView: ...
        @staticmethod
        def _wall_ms() -> int: ...

    def _init_engine(self) -> None:
        self._init_events()

    # -- book -----------------------------------------------------------------------------------
    def _level_size(self, inst: Instrument) -> Decimal | None:
        depth = self.instrument_specs[inst.symbol].depth
        if depth is None:
            return None
        return max(inst.lot_size, _round_to(dec(depth) / inst.contract_size, inst.lot_size,
                                            ROUND_FLOOR))

    def _levels(self, venue: str, inst: Instrument, side: str
                ) -> Iterator[tuple[Decimal, Decimal | None]]:
        """(price, contracts available) from the touch outwards; the last level is unlimited."""
        quote = self._published[(venue, inst.symbol)]
        touch = quote.ask if side == "buy" else quote.bid
        size = self._level_size(inst)
        if size is None:
            yield touch, None
            return
        spec = self.instrument_specs[inst.symbol]
        step = max(inst.tick_size, _round_to(quote.last * Decimal(repr(spec.level_bps / 1e4)),
                                             inst.tick_size, ROUND_CEILING))
        for level in range(MAX_LEVELS):
            price = touch + step * level if side == "buy" else touch - step * level
            if price <= 0:
                return
            yield price, (None if level == MAX_LEVELS - 1 else size)

    def set_liquidity(self, symbol: str, depth: Any | None, level_bps: float | None = None
                      ) -> None:
        """Book depth (base units per level; None: unlimited at the touch) from now on."""
        with self._lock:
            spec = self.instrument_specs.get(symbol)
            if spec is None:
                raise UnknownInstrument(f"no instrument {symbol!r} in the market")
            if depth is not None and dec(depth) <= 0:
                raise ValueError("depth must be > 0")
            spec.depth = None if depth is None else dec(depth)
            if level_bps is not None:
                if level_bps < 0:
                    raise ValueError("level_bps must be >= 0")
                spec.level_bps = float(level_bps)

    def set_resting_orders(self, enabled: bool) -> None:
        """Let limit orders that do not cross rest on the book (else they are rejected)."""
        with self._lock:
            self.spec.resting_orders = bool(enabled)

    # -- orders ---------------------------------------------------------------------------------
    def place_order(self, venue: str, account: str, symbol: str, *, side: str, amount: Any,
                    order_type: str = "market", price: Any | None = None,
                    reduce_only: bool = False, position_side: str | None = None,
                    client_order_id: str | None = None, margin_mode: str | None = None) -> Order:
        """Fill an order by the venue rules (module docstrings); raise OrderRejected otherwise."""
        try:
            with self._lock:
                order = self._place_locked(
                    venue, account, symbol, side=side, amount=amount, order_type=order_type,
                    price=price, reduce_only=reduce_only, position_side=position_side,
                    client_order_id=client_order_id, margin_mode=margin_mode)
        finally:
            self._flush_events()
        self.refresh()  # traded volume is part of the tickers
        return order

    def inject_fill(self, venue: str, account: str, symbol: str, *, side: str, amount: Any,
                    price: Any | None = None, position_side: str | None = None,
                    reduce_only: bool = False) -> Order:
        """Book a fill the trading client never sent (at ``price``, or at the touch)."""
        try:
            with self._lock:
                order = self._place_locked(
                    venue, account, symbol, side=side, amount=amount, order_type="market",
                    price=None, reduce_only=reduce_only, position_side=position_side,
                    client_order_id=None, margin_mode=None, external=True,
                    fill_price=None if price is None else dec(price))
        finally:
            self._flush_events()
        self.refresh()
        return order

    def _place_locked(self, venue: str, account_name: str, symbol: str, *, side: str,
                      amount: Any, order_type: str, price: Any | None, reduce_only: bool,
                      position_side: str | None, client_order_id: str | None,
                      margin_mode: str | None, external: bool = False,
                      fill_price: Decimal | None = None) -> Order:
        acc = self.account(venue, account_name)
        try:
            inst = self.instrument(venue, symbol)
        except UnknownInstrument:
            raise OrderRejected("unknown_symbol", f"unknown symbol {symbol!r}") from None
        side = side.lower()
        if side not in ("buy", "sell"):
            raise OrderRejected("bad_side", f"side must be buy or sell, not {side!r}")
        order_type = order_type.lower()
        if order_type not in ("market", "limit"):
            raise OrderRejected("bad_type", f"order type {order_type!r} is not simulated")
        try:
            qty = dec(amount)
        except ValueError:
            raise OrderRejected("bad_quantity", f"quantity {amount!r} is not a number") from None
        if qty <= 0 or qty % inst.lot_size != 0:
            raise OrderRejected("bad_quantity", f"quantity {qty} is not a positive multiple of "
                                f"the lot size {inst.lot_size}")
        if qty < inst.min_qty:
            raise OrderRejected("below_min", f"quantity {qty} is below the minimum "
                                f"{inst.min_qty}")
        quote = self._published[(venue, inst.symbol)]
        touch = quote.ask if side == "buy" else quote.bid
        limit_price: Decimal | None = None
        resting = self.spec.resting_orders
        if order_type == "limit":
            if price is None:
                raise OrderRejected("bad_quantity", "a limit order needs a price")
            limit_price = dec(price)
            if limit_price <= 0:
                raise OrderRejected("bad_quantity", "a limit price must be > 0")
            marketable = (side == "buy" and limit_price >= quote.ask) or \
                (side == "sell" and limit_price <= quote.bid)
            if not marketable and not resting:
                raise OrderRejected("would_rest", "the simulator fills marketable orders only; "
                                    "this limit order would rest on the book")
        sign = 1 if side == "buy" else -1
        pside = (position_side or "").lower()
        if acc.position_mode == "one_way":
            if pside not in ("", "net", "both"):
                raise OrderRejected("position_side_mismatch", "position side "
                                    f"{position_side!r} does not match one-way mode")
            pside = "net"
            current = acc.positions.get((inst.symbol, "net"))
            held = current.contracts if current else ZERO
            if reduce_only:
                if held == 0 or (held > 0) == (sign > 0):
                    raise OrderRejected("reduce_only_rejected",
                                        "reduce-only order would not reduce the position")
                qty = min(qty, abs(held))
            increase = qty if held == 0 or (held > 0) == (sign > 0) else max(ZERO, qty - abs(held))
        else:
            if pside not in ("long", "short"):
                raise OrderRejected("position_side_required",
                                    "hedge mode needs the position side long or short")
            if reduce_only:
                raise OrderRejected("reduce_only_not_allowed",
                                    "reduce-only is not used in hedge mode")
            current = acc.positions.get((inst.symbol, pside))
            held = current.contracts if current else ZERO
            opening = (pside == "long") == (sign > 0)
            if not opening and qty > held:
                raise OrderRejected("reduce_exceeds_position",
                                    f"closing {qty} but the {pside} position holds {held}")
            increase = qty if opening else ZERO
        mode: MarginMode = acc.margin_mode_for(inst.symbol)
        if margin_mode in ("cross", "isolated") and current is None:
            mode = cast(MarginMode, margin_mode)
        reference = fill_price or (limit_price if limit_price is not None and
                                   order_type == "limit" and side == "buy" and
                                   limit_price > touch else touch)
        if increase > 0 and not external:
            leverage = acc.leverage_for(inst.symbol)
            fee = money(inst.base_qty(qty) * reference * self.venues[venue].taker_fee)
            required = inst.base_qty(increase) * reference / leverage + fee
            available = self._balance_view_locked(acc, inst.settle).available
            if required > available:
                raise OrderRejected("insufficient_margin",
                                    f"margin is insufficient: needs {money(required)} "
                                    f"{inst.settle}, available {available}")
        # -- accepted: record the order, then fill what crosses ------------------------------
        now = self._wall_ms()
        order_id = self._next_order_id[venue]
        self._next_order_id[venue] = order_id + 1
        prefix = "external" if external else "sim"
        order = Order(
            id=order_id, client_order_id=client_order_id or f"{prefix}-{venue}-{order_id}",
            symbol=inst.symbol, side=cast(Side, side),
            type="market" if order_type == "market" else "limit", position_side=pside,
            amount=qty, price=limit_price, average=ZERO, filled=ZERO, status="open",
            reduce_only=reduce_only, fee=ZERO, fee_asset=inst.settle, realized_pnl=ZERO,
            time_ms=now, margin_mode=mode, updated_ms=now, external=external)
        acc.orders.append(order)
        self._event_locked(acc, inst.symbol, order=order, execution="NEW")
        if fill_price is not None:
            pieces: list[tuple[Decimal, Decimal]] = [(fill_price, qty)]
        else:
            pieces = []
            remaining = qty
            for level_price, available_qty in self._levels(venue, inst, side):
                if limit_price is not None and ((side == "buy" and level_price > limit_price) or
                                                (side == "sell" and level_price < limit_price)):
                    break
                take = remaining if available_qty is None else min(remaining, available_qty)
                pieces.append((level_price, take))
                remaining -= take
                if remaining == 0:
                    break
        for piece_price, piece_qty in pieces:
            self._fill_locked(acc, inst, order, piece_qty, piece_price, maker=False, now=now)
        if order.remaining > 0:
            if order.type == "limit" and resting:
                acc.open_orders[order.id] = order
            else:  # nothing left on the book within the limit: the rest expires
                order.status = "expired"
                order.updated_ms = now
                self._event_locked(acc, inst.symbol, order=order, execution="EXPIRED")
        return order

    def _fill_locked(self, acc: Account, inst: Instrument, order: Order, qty: Decimal,
                     fill: Decimal, *, maker: bool, now: int) -> Trade:
        """Apply one fill of ``order`` to the account: position, wallet, fee, realized P&L."""
        venue = acc.venue
        sign = 1 if order.side == "buy" else -1
        key = (inst.symbol, order.position_side)
        current = acc.positions.get(key)
        mode = order.margin_mode
        fee_rate = self.venues[venue].maker_fee if maker else self.venues[venue].taker_fee
        base_qty = inst.base_qty(qty)
        fee = money(base_qty * fill * fee_rate)
        realized = ZERO
        if acc.position_mode == "one_way":
            held = current.contracts if current else ZERO
            signed_qty = qty * sign
            if current is None or held == 0:
                acc.positions[key] = self._open(venue, inst, "net", signed_qty, price=fill,
                                                mode=mode, now=now)
                acc.positions[key].fees += fee
            elif (held > 0) == (sign > 0):
                self._increase(current, signed_qty, fill, now)
                current.fees += fee
            else:
                closing = min(qty, abs(held))
                realized = (fill - current.entry_price) * inst.base_qty(closing) * \
                    current.direction
                close_fee = money(fee * closing / qty)
                current.realized_pnl += realized
                current.fees += close_fee
                current.contracts = held + signed_qty
                current.updated_ms = now
                if current.contracts == 0 or (current.contracts > 0) != (held > 0):
                    rest = abs(held + signed_qty)
                    del acc.positions[key]
                    if rest > 0:
                        flipped = self._open(venue, inst, "net", held + signed_qty,
                                             price=fill, mode=mode, now=now)
                        flipped.fees += fee - close_fee
                        acc.positions[key] = flipped
        elif (order.position_side == "long") == (sign > 0):
            if current is None:
                acc.positions[key] = self._open(venue, inst, order.position_side, qty,
                                                price=fill, mode=mode, now=now)
                acc.positions[key].fees += fee
            else:
                self._increase(current, qty, fill, now)
                current.fees += fee
        else:
            assert current is not None
            realized = (fill - current.entry_price) * base_qty * current.direction
            current.realized_pnl += realized
            current.fees += fee
            current.contracts -= qty
            current.updated_ms = now
            if current.contracts == 0:
                del acc.positions[key]
        realized = money(realized)
        settle = inst.settle
        balance = acc.balances.setdefault(settle, Balance(settle, ZERO, now))
        balance.wallet = money(balance.wallet + realized - fee)
        balance.updated_ms = now
        acc.realized_pnl[settle] = acc.realized_pnl.get(settle, ZERO) + realized
        acc.fees_paid[settle] = acc.fees_paid.get(settle, ZERO) + fee
        stats = self._stats[(venue, inst.symbol)]
        stats["volume"] += base_qty
        stats["quote_volume"] += money(base_qty * fill)
        stats["trades"] += 1
        trade_id = self._next_trade_id[venue]
        self._next_trade_id[venue] = trade_id + 1
        trade = Trade(
            id=trade_id, order_id=order.id, symbol=inst.symbol, side=order.side,
            position_side=order.position_side, price=fill, contracts=qty, base_qty=base_qty,
            quote_qty=money(base_qty * fill), fee=fee, fee_asset=settle, realized_pnl=realized,
            time_ms=now, maker=maker)
        acc.trades.append(trade)
        order.filled += qty
        order.quote_filled += base_qty * fill
        order.average = (order.quote_filled / inst.base_qty(order.filled)).quantize(
            Decimal("1e-10")).normalize()
        order.fee += fee
        order.realized_pnl += realized
        order.status = "filled" if order.remaining == 0 else "partially_filled"
        order.updated_ms = now
        if order.remaining == 0:
            acc.open_orders.pop(order.id, None)
        self._event_locked(acc, inst.symbol, order=order, execution="TRADE", trade=trade)
        return trade

    def _open(self, venue: str, inst: Instrument, side: str, contracts: Decimal, *,
              price: Decimal, mode: MarginMode, now: int) -> Position:
        return Position(symbol=inst.symbol, side=cast(PositionSide, side), contracts=contracts,
                        entry_price=price, position_id=self._new_position_id(venue),
                        margin_mode=mode, opened_ms=now, updated_ms=now)

    @staticmethod
    def _increase(pos: Position, signed_qty: Decimal, price: Decimal, now: int) -> None:
        old = abs(pos.contracts)
        add = abs(signed_qty)
        pos.entry_price = (old * pos.entry_price + add * price) / (old + add)
        pos.entry_price = pos.entry_price.quantize(Decimal("1e-10"))
        pos.contracts += signed_qty
        pos.updated_ms = now

    def target_notional(self, venue: str, account: str, symbol: str, notional: Any,
                        side: Literal["long", "short"] = "long") -> Order | None:
        """Trade (market order) so the position's notional at mark is about ``notional``."""
        with self._lock:
            acc = self.account(venue, account)
            inst = self.instrument(venue, symbol)
            mark = self._published[(venue, inst.symbol)].mark
            target = _round_to(dec(notional) / (mark * inst.contract_size), inst.lot_size)
            if acc.position_mode == "one_way":
                pos = acc.positions.get((inst.symbol, "net"))
                held = pos.contracts if pos else ZERO
                wanted = target if side == "long" else -target
                delta = wanted - held
                if delta == 0:
                    return None
                order_side = "buy" if delta > 0 else "sell"
                return self.place_order(venue, account, inst.symbol, side=order_side,
                                        amount=abs(delta))
            pos = acc.positions.get((inst.symbol, side))
            held = pos.contracts if pos else ZERO
            delta = target - held
            if delta == 0:
                return None
            opening = delta > 0
            order_side = ("buy" if side == "long" else "sell") if opening else \
                ("sell" if side == "long" else "buy")
            return self.place_order(venue, account, inst.symbol, side=order_side,
                                    amount=abs(delta), position_side=side)

    # -- resting orders -------------------------------------------------------------------------
    def _match_resting_locked(self) -> None:
        """Fill resting limit orders the published prices now cross (one level per call)."""
        for by_name in self.accounts.values():
            for acc in by_name.values():
                for order in list(acc.open_orders.values()):
                    self._match_one_locked(acc, order)

    def _match_one_locked(self, acc: Account, order: Order) -> None:
        inst = self.instruments[acc.venue][order.symbol]
        quote = self._published[(acc.venue, inst.symbol)]
        assert order.price is not None
        crossed = quote.ask <= order.price if order.side == "buy" else quote.bid >= order.price
        if not crossed:
            return
        size = self._level_size(inst)
        take = order.remaining if size is None else min(order.remaining, size)
        now = self._wall_ms()
        sign = 1 if order.side == "buy" else -1
        current = acc.positions.get((inst.symbol, order.position_side))
        held = current.contracts if current else ZERO
        if acc.position_mode == "one_way" and order.reduce_only:
            reducible = abs(held) if held != 0 and (held > 0) != (sign > 0) else ZERO
            take = min(take, reducible)
        elif acc.position_mode == "hedge" and (order.position_side == "long") != (sign > 0):
            take = min(take, held)
        if take <= 0:
            order.status = "expired"
            order.updated_ms = now
            acc.open_orders.pop(order.id, None)
            self._event_locked(acc, inst.symbol, order=order, execution="EXPIRED")
            return
        self._fill_locked(acc, inst, order, take, order.price, maker=True, now=now)

    def cancel_order(self, venue: str, account: str, order_id: int | None = None,
                     client_order_id: str | None = None) -> Order:
        """Cancel an open order by id or client id; UnknownOrder when it is not open."""
        try:
            with self._lock:
                acc = self.account(venue, account)
                order = self._find_locked(acc, order_id, client_order_id)
                if order is None or not order.is_open:
                    raise UnknownOrder(f"no open order {order_id or client_order_id!r} on "
                                       f"{venue}/{account}")
                order.status = "canceled"
                order.updated_ms = self._wall_ms()
                acc.open_orders.pop(order.id, None)
                self._event_locked(acc, order.symbol, order=order, execution="CANCELED")
                return order.snapshot()
        finally:
            self._flush_events()

    @staticmethod
    def _find_locked(acc: Account, order_id: int | None, client_order_id: str | None
                     ) -> Order | None:
        for order in reversed(acc.orders):
            if (order_id is not None and order.id == order_id) or \
                    (client_order_id is not None and order.client_order_id == client_order_id):
                return order
        return None

    def find_order(self, venue: str, account: str, order_id: int | None = None,
                   client_order_id: str | None = None) -> Order | None:
        """A snapshot of an order (any status) by id or client id."""
        with self._lock:
            order = self._find_locked(self.account(venue, account), order_id, client_order_id)
            return order.snapshot() if order is not None else None

    def orders(self, venue: str, account: str, *, open_only: bool = False) -> list[Order]:
        with self._lock:
            acc = self.account(venue, account)
            return [o.snapshot() for o in acc.orders if o.is_open or not open_only]

    def trades(self, venue: str, account: str) -> list[Trade]:
        with self._lock:
            return list(self.account(venue, account).trades)

    # -- funding --------------------------------------------------------------------------------
    def settle_funding(self, venue: str | None = None) -> dict[tuple[str, str], Decimal]:
        """Pay funding on every open position at mark * rate: longs pay a positive rate."""
        paid: dict[tuple[str, str], Decimal] = {}
        try:
            with self._lock:
                for venue_name, by_name in self.accounts.items():
                    if venue is not None and venue_name != venue:
                        continue
                    for acc in by_name.values():
                        for pos in list(acc.positions.values()):
                            if pos.contracts == 0:
                                continue
                            view = self._position_view_locked(acc, pos)
                            rate = self.instrument_specs[pos.symbol].funding_rate
                            amount = money(-view.quantity * view.mark * rate)
                            settle = view.instrument.settle
                            now = self._wall_ms()
                            balance = acc.balances.setdefault(settle, Balance(settle, ZERO, now))
                            balance.wallet = money(balance.wallet + amount)
                            balance.updated_ms = now
                            acc.funding[settle] = acc.funding.get(settle, ZERO) + amount
                            acc.funding_log.append((now, pos.symbol, settle, amount))
                            paid[(acc.name, pos.symbol)] = amount
                            self._event_locked(acc, pos.symbol, reason="FUNDING_FEE",
                                               funding=amount)
        finally:
            self._flush_events()
        return paid
