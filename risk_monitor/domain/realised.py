"""Realised P&L from the fills themselves, checked against what the venue reports.

``domain/pnl.py`` values positions with venue-reported figures; here the desk's own record is
rebuilt from every fill (``fetch_my_trades`` or the private stream), fees and funding, with the
average-cost rule the perpetual venues use (Binance USDⓈ-M, OKX): a fill that reduces a position
realises ``closed * (price - avg_entry) * sign(position)``; a fill that increases it moves the
average entry; a flip closes the old side and opens the new one at the fill price.
Amounts are in the instrument's settle currency (USDT for linear perpetuals).
A fee in another currency cannot be netted without a price: it is counted apart
(``foreign_fees``) and the result is marked incomplete, never silently dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

Key = tuple[str, str, str]  # (venue, account, instrument)


@dataclass(frozen=True)
class Fill:
    """One execution of one of the desk's orders."""

    venue: str
    account: str
    instrument: str  # ccxt unified symbol
    trade_id: str
    side: str  # buy | sell
    quantity: float  # base units, > 0
    price: float
    fee: float = 0.0  # paid (> 0) or rebated (< 0), in fee_currency
    fee_currency: str = ""
    timestamp: datetime | None = None
    order_id: str = ""
    client_order_id: str = ""
    reported_realised: float | None = None  # the venue's own realised P&L of this fill

    @property
    def signed_quantity(self) -> float:
        return self.quantity if self.side == "buy" else -self.quantity

    @property
    def key(self) -> Key:
        return (self.venue, self.account, self.instrument)


@dataclass(frozen=True)
class Funding:
    """A funding payment: ``amount`` > 0 received, < 0 paid, in ``currency``."""

    venue: str
    account: str
    instrument: str
    amount: float
    currency: str = ""
    timestamp: datetime | None = None
    id: str = ""


@dataclass
class RealisedPnl:
    """One (venue, account, instrument) rebuilt from its fills."""

    venue: str
    account: str
    instrument: str
    settle: str
    position: float = 0.0
    avg_entry: float = 0.0
    gross: float = 0.0  # trading P&L before fees
    fees: float = 0.0  # in settle currency
    funding: float = 0.0
    fills: int = 0
    foreign_fees: dict[str, float] = field(default_factory=dict)
    reported: float | None = None  # sum of the venue's per-fill realised P&L, when it gives one
    trade_ids: set[str] = field(default_factory=set)

    @property
    def net(self) -> float:
        """Realised P&L: gross minus fees plus funding (settle currency)."""
        return self.gross - self.fees + self.funding

    @property
    def complete(self) -> bool:
        return not self.foreign_fees


def settle_of(instrument: str) -> str:
    """``BTC/USDT:USDT`` -> USDT; a spot symbol's quote otherwise."""
    _, _, rest = instrument.partition("/")
    quote, _, settle = rest.partition(":")
    return settle or quote


def apply_fill(book: RealisedPnl, fill: Fill) -> None:
    """Average-cost update of one fill (a fill seen twice is ignored: streams replay)."""
    if fill.trade_id and fill.trade_id in book.trade_ids:
        return
    if not (fill.quantity > 0 and math.isfinite(fill.quantity) and fill.price > 0
            and math.isfinite(fill.price)):
        raise ValueError(f"fill {fill.trade_id!r}: quantity and price must be positive")
    if fill.trade_id:
        book.trade_ids.add(fill.trade_id)
    book.fills += 1
    qty = fill.signed_quantity
    pos = book.position
    if pos == 0 or math.copysign(1, pos) == math.copysign(1, qty):
        new = pos + qty
        book.avg_entry = (abs(pos) * book.avg_entry + abs(qty) * fill.price) / abs(new)
        book.position = new
    else:
        closed = min(abs(qty), abs(pos))
        book.gross += closed * (fill.price - book.avg_entry) * math.copysign(1, pos)
        new = pos + qty
        if abs(new) < 1e-12:
            book.position, book.avg_entry = 0.0, 0.0
        elif math.copysign(1, new) != math.copysign(1, pos):  # flipped: the rest opens anew
            book.position, book.avg_entry = new, fill.price
        else:
            book.position = new
    if fill.fee:
        if not fill.fee_currency or fill.fee_currency == book.settle:
            book.fees += fill.fee
        else:
            book.foreign_fees[fill.fee_currency] = (
                book.foreign_fees.get(fill.fee_currency, 0.0) + fill.fee)
    if fill.reported_realised is not None:
        book.reported = (book.reported or 0.0) + fill.reported_realised


def realised_pnl(fills: Iterable[Fill], funding: Iterable[Funding] = ()
                 ) -> dict[Key, RealisedPnl]:
    """Rebuild every instrument's book from its fills in time order (flat before the first)."""
    books: dict[Key, RealisedPnl] = {}

    def book(key: Key) -> RealisedPnl:
        if key not in books:
            books[key] = RealisedPnl(*key, settle=settle_of(key[2]))
        return books[key]

    ordered = sorted(fills, key=lambda f: (f.timestamp is None, f.timestamp or 0, f.trade_id))
    for fill in ordered:
        apply_fill(book(fill.key), fill)
    for payment in funding:
        target = book((payment.venue, payment.account, payment.instrument))
        if payment.currency and payment.currency != target.settle:
            target.foreign_fees[payment.currency] = (
                target.foreign_fees.get(payment.currency, 0.0) - payment.amount)
        else:
            target.funding += payment.amount
    return books


@dataclass(frozen=True)
class RealisedCheck:
    """Our realised P&L against the venue's, for one instrument."""

    key: Key
    computed: float
    reported: float | None
    difference: float | None
    tolerance: float
    ok: bool | None  # None: the venue reported nothing to compare with (or fees incomplete)
    reason: str


def compare_realised(books: Mapping[Key, RealisedPnl], *, abs_tolerance: float = 1.0,
                     rel_tolerance: float = 1e-4) -> list[RealisedCheck]:
    """Flag every instrument whose rebuilt realised P&L (gross) differs from the per-fill
    figures the venue carried by more than ``max(abs_tolerance, rel_tolerance * |reported|)``."""
    out: list[RealisedCheck] = []
    for key in sorted(books):
        book = books[key]
        mine, theirs = book.gross, book.reported
        tolerance = max(abs_tolerance, rel_tolerance * abs(theirs or 0.0))
        if theirs is None:
            out.append(RealisedCheck(key, mine, None, None, tolerance, None,
                                     "the venue reported no realised P&L"))
            continue
        diff = mine - theirs
        if not book.complete:
            out.append(RealisedCheck(key, mine, theirs, diff, tolerance, None,
                                     f"fees in {sorted(book.foreign_fees)} not valued"))
            continue
        ok = abs(diff) <= tolerance
        out.append(RealisedCheck(
            key, mine, theirs, diff, tolerance, ok,
            "" if ok else f"rebuilt {mine:,.2f} vs venue {theirs:,.2f} (diff {diff:,.2f} > "
                          f"{tolerance:,.2f})"))
    return out
