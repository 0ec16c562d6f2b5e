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

from collections import deque
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


@dataclass(frozen=True)
class LegExposure:
    """What is pending on one leg: base units to buy and to sell (both >= 0), and the USD
    gross and net the orders that added exposure add (weighted by what is not shown yet)."""

    base: str
    buy: float = 0.0
    sell: float = 0.0
    gross_usd: float = 0.0
    net_usd: float = 0.0


@dataclass(frozen=True)
class PendingExposure:
    """The pending orders summed per leg, as ``check_order`` reads them (O(legs), not
    O(orders), per check)."""

    legs: Mapping[Leg, LegExposure] = field(default_factory=dict)

    @classmethod
    def of(cls, orders: Iterable[PendingOrder]) -> PendingExposure:
        sums: dict[Leg, list[float]] = {}
        bases: dict[Leg, str] = {}
        for order in orders:
            _accumulate(sums, bases, order, 1.0)
        return cls._from(sums, bases)

    @classmethod
    def _from(cls, sums: Mapping[Leg, list[float]], bases: Mapping[Leg, str]
              ) -> PendingExposure:
        return cls({leg: LegExposure(bases[leg], *values) for leg, values in sums.items()
                    if any(abs(v) > _EPS for v in values)})

    def __bool__(self) -> bool:
        return bool(self.legs)

    def ahead(self, leg: Leg, signed_qty: float) -> float:
        """Signed base units pending on ``leg`` in the order's direction (they fill first)."""
        found = self.legs.get(leg)
        if found is None:
            return 0.0
        return found.buy if signed_qty > 0 else -found.sell

    def elsewhere(self, leg: Leg) -> list[tuple[Leg, LegExposure]]:
        """The other legs where pending orders add exposure."""
        return [(other, e) for other, e in self.legs.items() if other != leg and e.gross_usd > 0]


def _accumulate(sums: dict[Leg, list[float]], bases: dict[Leg, str], order: PendingOrder,
                sign: float) -> None:
    values = sums.setdefault(order.leg, [0.0, 0.0, 0.0, 0.0])
    bases[order.leg] = order.base
    left = order.signed_remaining * sign
    if order.signed_quantity > 0:
        values[0] += left
    else:
        values[1] -= left
    if order.gross_usd > 0:
        values[2] += order.gross_usd * order.remaining * sign
        values[3] += order.net_usd * order.remaining * sign


@dataclass(eq=False)
class _Entry:
    order: PendingOrder
    by_id: bool
    fills: list[tuple[float, datetime]] = field(default_factory=list)  # (base qty, seen at)
    alive: bool = True


class PendingOrders:
    """The ledger of pending orders of one service (see the module's docstring).

    A check costs O(legs) plus what it releases: the sums per leg are kept up to date as
    orders come and go; orders were allowed in time order, so expiry and the positions' time
    release from the front of a queue; only orders with matched fills are looked at one by one.
    """

    def __init__(self, *, match_fills: bool) -> None:
        #: True when the caller feeds ``fill`` (a followed fill stream): orders with a client
        #: order id are then released by their fills, not by the positions' time alone
        self.match_fills = match_fills
        self._queue: deque[_Entry] = deque()  # every live order, oldest first (expiry)
        self._timed: dict[str, deque[_Entry]] = {}  # per venue: orders released by time
        self._filled: list[_Entry] = []  # orders with matched fills, not released yet
        self._by_client_id: dict[tuple[str, str], _Entry] = {}
        self._count = 0
        #: the fill stream's position per instrument after the latest fill seen
        self._books: dict[Key, float] = {}
        self._sums: dict[Leg, list[float]] = {}
        self._bases: dict[Leg, str] = {}
        self._exposure: PendingExposure | None = None

    def __len__(self) -> int:
        return self._count

    def add(self, order: PendingOrder) -> None:
        entry = _Entry(order, by_id=self.match_fills and bool(order.client_order_id))
        self._queue.append(entry)
        if entry.by_id:
            self._by_client_id[(order.venue, order.client_order_id)] = entry
        else:
            self._timed.setdefault(order.venue, deque()).append(entry)
        self._count += 1
        self._account(order, 1.0)

    def fill(self, key: Key, client_order_id: str, quantity: float, seen_at: datetime,
             book_position: float | None = None) -> bool:
        """A fill was seen on the stream; ``book_position``: the stream's position of its
        instrument after it. False when it is no pending order's."""
        if book_position is not None:
            self._books[key] = book_position
        entry = self._by_client_id.get((key[0], client_order_id)) if client_order_id else None
        if entry is None:
            return False
        if not entry.fills:
            self._filled.append(entry)
        entry.fills.append((abs(quantity), seen_at))
        return True

    def settle(self, positions_as_of: Mapping[str, datetime], now: datetime,
               position_of: Callable[[Key], float | None] = lambda _key: None
               ) -> list[Released]:
        """Release what the evaluated positions (``venue -> as of``; ``position_of``: the
        evaluated position of an instrument) show, and what expired."""
        released: list[Released] = []
        for venue, timed in self._timed.items():
            as_of = positions_as_of.get(venue)
            while timed and (not timed[0].alive or (
                    as_of is not None and as_of > timed[0].order.allowed_at)):
                entry = timed.popleft()
                if entry.alive:
                    released.append(self._drop(entry, Release.SHOWN))
        if self._filled:
            self._filled = [e for e in self._filled
                            if e.alive and not self._shown(e, positions_as_of, position_of,
                                                           released)]
        while self._queue and (not self._queue[0].alive
                               or now >= self._queue[0].order.expires_at):
            entry = self._queue.popleft()
            if entry.alive:
                released.append(self._drop(entry, Release.EXPIRED))
        return released

    def _shown(self, entry: _Entry, positions_as_of: Mapping[str, datetime],
               position_of: Callable[[Key], float | None], released: list[Released]) -> bool:
        """Update what the positions show of an order with fills; True once released."""
        order = entry.order
        as_of = positions_as_of.get(order.venue)
        if as_of is not None and as_of > order.allowed_at \
                and self._caught_up(order.key, position_of):
            shown = sum(q for q, _ in entry.fills)
        else:
            shown = sum(q for q, seen in entry.fills if as_of is not None and seen < as_of)
        shown = min(shown, abs(order.signed_quantity))
        if shown != order.shown:
            self._account(order, -1.0)
            entry.order = order = replace(order, shown=shown)
            self._account(order, 1.0)
        if order.remaining > _EPS:
            return False
        released.append(self._drop(entry, Release.SHOWN))
        return True

    def _drop(self, entry: _Entry, why: Release) -> Released:
        entry.alive = False
        self._count -= 1
        if entry.by_id:
            self._by_client_id.pop((entry.order.venue, entry.order.client_order_id), None)
        self._account(entry.order, -1.0)
        return Released(entry.order, why)

    def _account(self, order: PendingOrder, sign: float) -> None:
        if self._count == 0:  # empty: start the sums afresh (no float drift left behind)
            self._sums, self._bases = {}, {}
        else:
            _accumulate(self._sums, self._bases, order, sign)
        self._exposure = None

    def _caught_up(self, key: Key, position_of: Callable[[Key], float | None]) -> bool:
        """The evaluated position of ``key`` is the stream's after its latest fill."""
        book = self._books.get(key)
        evaluated = position_of(key) if book is not None else None
        return evaluated is not None and book is not None and \
            abs(evaluated - book) <= 1e-9 * max(1.0, abs(book))

    def exposure(self) -> PendingExposure:
        """What ``check_order`` adds to the evaluated positions (cached until a change)."""
        if self._exposure is None:
            self._exposure = PendingExposure._from(self._sums, self._bases)
        return self._exposure

    def view(self) -> tuple[PendingOrder, ...]:
        """The pending orders, oldest first."""
        return tuple(e.order for e in self._queue if e.alive)


def positions_as_of(positions: Collected) -> dict[str, datetime]:
    """Per venue, the time the evaluated positions are as of: the oldest successful exchange
    read of that venue (a venue with a failed read has none: nothing of it is released)."""
    return as_of_by_venue(positions.sources, "positions")
