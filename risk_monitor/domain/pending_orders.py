"""Orders the pre-trade check allowed whose fills the evaluated positions do not show yet.

An allowed order reaches its venue and fills before the monitor sees the fill (the private
stream about 0.25 s later, a REST poll later still). Judging the next order on the last
evaluated position alone lets a desk that orders faster than that get one increase too many.
So every allowed order stays here as pending exposure, which ``check_order`` adds to the
evaluated position, until the evaluated positions show it:

- matched by id (the service follows the venues' fills and the order has a client order id):
  once its fills add up to its quantity and the evaluated positions show them: either they
  are as of after the last fill was seen (strictly: a tie is no proof), or the evaluated
  position of the order's instrument equals the fill stream's own book after its latest fill
  (a venue may push the position before the trade: then the evaluation that already holds
  it is stamped before the fill was seen); a partial fill keeps the rest pending;
- otherwise: once the evaluated positions of its venue are as of after the allowance;
- in any case after ``ttl_s`` (an order that never filled, a resting order, a lost fill):
  released as ``expired`` (the caller logs and counts it).

Pure: the caller passes the time. A ledger is not thread-safe: the service locks around
"settle, view, check, add" so two concurrent checks never both miss each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from risk_monitor.domain.model import Collected
from risk_monitor.domain.reconciliation import as_of_by_venue

if TYPE_CHECKING:
    from risk_monitor.domain.orders import OrderCheck, OrderRequest

#: (venue, account, instrument, position_side or None)
Leg = tuple[str, str, str, str | None]
#: (venue, account, instrument): one instrument's position, all legs netted
Key = tuple[str, str, str]
_EPS = 1e-9


@dataclass(frozen=True)
class PendingOrder:
    """One allowed order's exposure, as the check projected it when it allowed it."""

    venue: str
    account: str
    instrument: str
    base: str
    position_side: str | None
    signed_quantity: float  # base units allowed (+ buy, - sell)
    gross_usd: float  # gross exposure it adds on top of the evaluated position and the
    net_usd: float  # pending orders ahead of it on its leg (its own increment)
    allowed_at: datetime
    expires_at: datetime
    client_order_id: str = ""
    shown: float = 0.0  # base units of it the evaluated positions show (matched fills)

    @property
    def leg(self) -> Leg:
        return (self.venue, self.account, self.instrument, self.position_side)

    @property
    def key(self) -> Key:
        return (self.venue, self.account, self.instrument)

    @property
    def remaining(self) -> float:
        """The share of the order the evaluated positions do not show yet (0..1)."""
        size = abs(self.signed_quantity)
        return max(0.0, 1.0 - self.shown / size) if size > 0 else 0.0

    @property
    def signed_remaining(self) -> float:
        return self.signed_quantity * self.remaining


def pending_of(order: OrderRequest, check: OrderCheck, now: datetime, ttl_s: float
               ) -> PendingOrder:
    """The pending exposure of an order ``check`` allowed at ``now``."""
    sign = 1.0 if str(order.side) == "buy" else -1.0
    return PendingOrder(
        venue=order.venue, account=order.account, instrument=order.instrument,
        base=check.base, position_side=order.position_side,
        signed_quantity=sign * float(order.quantity), gross_usd=check.added_gross_usd,
        net_usd=check.added_net_usd, allowed_at=now,
        expires_at=now + timedelta(seconds=ttl_s), client_order_id=order.client_order_id)


class Release(StrEnum):
    SHOWN = "shown"  # the evaluated positions show it
    EXPIRED = "expired"  # ttl reached first


@dataclass(frozen=True)
class Released:
    order: PendingOrder
    why: Release


@dataclass
class _Entry:
    order: PendingOrder
    by_id: bool
    fills: list[tuple[float, datetime]] = field(default_factory=list)  # (base qty, seen at)


class PendingOrders:
    """The ledger of pending orders of one service (see the module's docstring)."""

    def __init__(self, *, match_fills: bool) -> None:
        #: True when the caller feeds ``fill`` (a followed fill stream): orders with a client
        #: order id are then released by their fills, not by the positions' time alone
        self.match_fills = match_fills
        self._entries: list[_Entry] = []
        self._by_client_id: dict[tuple[str, str], _Entry] = {}
        #: the fill stream's position per instrument after the latest fill seen
        self._books: dict[Key, float] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, order: PendingOrder) -> None:
        entry = _Entry(order, by_id=self.match_fills and bool(order.client_order_id))
        self._entries.append(entry)
        if entry.by_id:
            self._by_client_id[(order.venue, order.client_order_id)] = entry

    def fill(self, key: Key, client_order_id: str, quantity: float, seen_at: datetime,
             book_position: float | None = None) -> bool:
        """A fill was seen on the stream; ``book_position``: the stream's position of its
        instrument after it. False when it is no pending order's."""
        if book_position is not None:
            self._books[key] = book_position
        entry = self._by_client_id.get((key[0], client_order_id)) if client_order_id else None
        if entry is None:
            return False
        entry.fills.append((abs(quantity), seen_at))
        return True

    def settle(self, positions_as_of: Mapping[str, datetime], now: datetime,
               position_of: Callable[[Key], float | None] = lambda _key: None
               ) -> list[Released]:
        """Release what the evaluated positions (``venue -> as of``; ``position_of``: the
        evaluated position of an instrument) show, and what expired."""
        kept: list[_Entry] = []
        released: list[Released] = []
        for entry in self._entries:
            order = entry.order
            as_of = positions_as_of.get(order.venue)
            if entry.by_id:
                if entry.fills and as_of is not None and as_of > order.allowed_at \
                        and self._caught_up(order.key, position_of):
                    shown = sum(q for q, _ in entry.fills)
                else:
                    shown = sum(q for q, seen in entry.fills
                                if as_of is not None and seen < as_of)
                if shown != order.shown:
                    entry.order = order = replace(order, shown=min(shown,
                                                                   abs(order.signed_quantity)))
                done = order.remaining <= _EPS
            else:
                done = as_of is not None and as_of > order.allowed_at
            if done:
                released.append(Released(order, Release.SHOWN))
            elif now >= order.expires_at:
                released.append(Released(order, Release.EXPIRED))
            else:
                kept.append(entry)
        if released:
            self._entries = kept
            self._by_client_id = {key: e for key, e in self._by_client_id.items()
                                  if any(e is k for k in kept)}
        return released

    def _caught_up(self, key: Key, position_of: Callable[[Key], float | None]) -> bool:
        """The evaluated position of ``key`` is the stream's after its latest fill."""
        book = self._books.get(key)
        evaluated = position_of(key) if book is not None else None
        return evaluated is not None and book is not None and \
            abs(evaluated - book) <= 1e-9 * max(1.0, abs(book))

    def view(self) -> tuple[PendingOrder, ...]:
        """The pending orders as ``check_order`` takes them."""
        return tuple(e.order for e in self._entries)


def positions_as_of(positions: Collected) -> dict[str, datetime]:
    """Per venue, the time the evaluated positions are as of: the oldest successful exchange
    read of that venue (a venue with a failed read has none: nothing of it is released)."""
    return as_of_by_venue(positions.sources, "positions")


def same_leg_ahead(pending: Iterable[PendingOrder], leg: Leg, signed_qty: float) -> float:
    """Base units pending on ``leg`` in the order's direction (those that make it worse)."""
    return sum(p.signed_remaining for p in pending
               if p.leg == leg and p.signed_quantity * signed_qty > 0)
