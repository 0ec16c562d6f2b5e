"""Account events of the simulated market: every change of an account, in order, with snapshots.

An order accepted, a fill, a cancel or expiry, a balance or position set by the admin API and a
funding payment each queue one :class:`AccountEvent` while the market lock is held; they are
delivered after it is released, in the order they were queued, to the listeners registered with
``subscribe_accounts`` (the venue servers, which render them as private websocket pushes).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Literal, cast

from risk_sim.model import (
    ZERO,
    Account,
    BalanceView,
    Instrument,
    Order,
    Position,
    PositionSide,
    PositionView,
    Trade,
)

Execution = Literal["NEW", "TRADE", "CANCELED", "EXPIRED"]


@dataclass(frozen=True)
class AccountEvent:
    """One change of one account, with snapshots taken when it happened."""

    venue: str
    account: str
    time_ms: int
    reason: str  # ORDER | FUNDING_FEE | ADJUSTMENT
    order: Order | None = None
    execution: Execution | None = None
    trade: Trade | None = None
    positions: tuple[PositionView, ...] = ()  # the symbol's positions after (0 contracts: closed)
    balances: tuple[BalanceView, ...] = ()
    funding: Decimal | None = None  # for FUNDING_FEE: the amount credited (negative: paid)


AccountListener = Callable[[list[AccountEvent]], None]


class AccountEvents:
    """Mixin of the market: queue account events under the lock, deliver them outside it."""

    if TYPE_CHECKING:
        _lock: threading.RLock
        instruments: dict[str, dict[str, Instrument]]

        def _position_view_locked(self, acc: Account, pos: Position) -> PositionView: ...
        def _balance_view_locked(self, acc: Account, asset: str) -> BalanceView: ...
        @staticmethod
        def _wall_ms() -> int: ...

    def _init_events(self) -> None:
        self._account_listeners: list[AccountListener] = []
        self._pending_events: deque[AccountEvent] = deque()
        self._emit_lock = threading.Lock()

    # -- events -------------------------------------------------------------------------------
    def subscribe_accounts(self, listener: AccountListener) -> None:
        """Call ``listener(events)`` after account changes, in order (any thread)."""
        with self._lock:
            self._account_listeners.append(listener)

    def unsubscribe_accounts(self, listener: AccountListener) -> None:
        with self._lock:
            if listener in self._account_listeners:
                self._account_listeners.remove(listener)

    def _flush_events(self) -> None:
        """Deliver queued events; the emit lock keeps them in the order they were queued."""
        with self._emit_lock:  # never takes the market lock: a flush may run inside it
            events: list[AccountEvent] = []
            while self._pending_events:
                events.append(self._pending_events.popleft())
            listeners = list(self._account_listeners)
            if events:
                for listener in listeners:
                    listener(events)

    def _event_locked(self, acc: Account, symbol: str | None, *, reason: str = "ORDER",
                      order: Order | None = None, execution: Execution | None = None,
                      trade: Trade | None = None, funding: Decimal | None = None,
                      assets: set[str] | None = None) -> None:
        positions: list[PositionView] = []
        wanted = set(assets or ())
        if symbol is not None:
            inst = self.instruments[acc.venue][symbol]
            wanted.add(inst.settle)
            sides = ("net",) if acc.position_mode == "one_way" else ("long", "short")
            for side in sides:
                pos = acc.positions.get((symbol, side))
                if pos is None or pos.contracts == 0:
                    if trade is None and order is None and reason != "ADJUSTMENT":
                        continue
                    pos = Position(symbol=symbol, side=cast(PositionSide, side),
                                   contracts=ZERO, entry_price=ZERO, position_id="0",
                                   margin_mode=acc.margin_mode_for(symbol),
                                   updated_ms=self._wall_ms())
                positions.append(replace(self._position_view_locked(acc, pos),
                                         position=replace(pos)))
        balances = tuple(self._balance_view_locked(acc, a) for a in sorted(wanted))
        self._pending_events.append(AccountEvent(
            venue=acc.venue, account=acc.name, time_ms=self._wall_ms(), reason=reason,
            order=order.snapshot() if order is not None else None, execution=execution,
            trade=trade, positions=tuple(positions), balances=balances, funding=funding))
