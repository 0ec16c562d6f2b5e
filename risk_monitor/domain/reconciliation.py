"""Reconciliation: the desk's expected book against the exchanges' and the custodian's.

Three books per venue and item (a perpetual's position in base units, or an asset balance):

- **desk**: what the desk believes it holds, from its own fills (published by the trading client,
  or rebuilt from trades) plus its own record of balances;
- **exchange**: positions and balances the exchanges report;
- **custodian**: balances the custodian reports.

Each venue's desk figure is compared with the book that venue reports (an exchange's positions
and balances, the custodian's vaults). A difference beyond tolerance is a break. A venue whose
report is missing cannot be reconciled: its items are UNKNOWN, never "no break".

Both sides are compared as of the same time: the desk books a fill after the venue made it, so a
venue report as of after the desk's last change of an item must show that change. When the
desk changed the item after the venue's report (the monitor's view lags the desk), a difference
is PENDING ("desk ahead"), not a break: it is compared again once the report catches up. A
fill the desk never booked (a true break) is found at the next report after the desk's change.
Breaks become ``LimitResult`` rows of the ``reconciliation`` series, so they go through the
same alert store, lifecycle and outbox as limits (one alert per venue and item, resolved when
the books agree again).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum

import pandas as pd

from risk_monitor.domain.model import LimitResult, LimitStatus, SourceKind, SourceStatus
from risk_monitor.domain.scopes import scope_key

RECONCILIATION = "reconciliation"


class Book(StrEnum):
    EXCHANGE = "exchange"
    CUSTODIAN = "custodian"


class BreakStatus(StrEnum):
    OK = "OK"
    BREAK = "BREAK"
    UNKNOWN = "UNKNOWN"
    PENDING = "PENDING"  # differs, but the desk changed it after the venue's report


#: (venue, item, kind) with kind "position" (item = instrument) or "balance" (item = asset)
ItemKey = tuple[str, str, str]


@dataclass(frozen=True)
class DeskBook:
    """The desk's expected book and, per item, when the desk last changed it (its trading
    client's clock, UTC; an item without a time is compared by value alone)."""

    items: Mapping[ItemKey, float]
    as_of: Mapping[ItemKey, datetime] = field(default_factory=dict)


def as_of_by_venue(sources: Iterable[SourceStatus], dataset: str,
                   kinds: Iterable[SourceKind] = (SourceKind.EXCHANGE,)) -> dict[str, datetime]:
    """Per venue, the time its report of ``dataset`` is as of: the oldest successful read of
    that venue (a venue with a failed read has none)."""
    wanted = set(kinds)
    out: dict[str, datetime] = {}
    failed: set[str] = set()
    for source in sources:
        if source.kind not in wanted or source.dataset not in (None, dataset) \
                or source.instrument or source.asset:
            continue
        if not source.ok:
            failed.add(source.venue)
            continue
        current = out.get(source.venue)
        out[source.venue] = source.as_of if current is None else min(current, source.as_of)
    return {venue: at for venue, at in out.items() if venue not in failed}


@dataclass(frozen=True)
class Tolerance:
    """A difference is a break when above ``max(absolute, relative * max(|desk|, |venue|))``."""

    absolute: float = 1e-6
    relative: float = 1e-4

    def of(self, desk: float, venue: float) -> float:
        return max(self.absolute, self.relative * max(abs(desk), abs(venue)))


@dataclass(frozen=True)
class Break:
    venue: str
    item: str
    kind: str  # position | balance
    book: Book  # the venue's book compared with the desk's: exchange | custodian
    desk: float | None
    reported: float | None
    difference: float | None
    tolerance: float
    status: BreakStatus
    reason: str = ""

    @property
    def scope(self) -> str:
        dim = "instrument" if self.kind == "position" else "asset"
        return scope_key({"venue": self.venue, dim: self.item})

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "book": self.book.value, "status": self.status.value}


def reconcile(desk: Mapping[ItemKey, float] | DeskBook, exchange: Mapping[ItemKey, float],
              custodian: Mapping[ItemKey, float], *, exchange_venues: Iterable[str],
              custodian_venues: Iterable[str], blind: Iterable[str] = (),
              default: Tolerance = Tolerance(),
              reported_as_of: Mapping[tuple[str, str], datetime] | None = None) -> list[Break]:
    """Every (venue, item) any book mentions, compared; sorted worst first.

    ``reported_as_of``: (venue, kind) -> the time that venue's report is as of. A difference on
    an item the desk changed after it is PENDING, not a break (see the module's docstring).

    ``blind``: venues whose report is missing or failed (their items are UNKNOWN). An item one
    book lacks counts as zero in it, as long as that book's venue reported.
    Balances are compared only on venues where the desk's book holds balances (a desk that
    books positions only does not track wallet cash); positions are compared everywhere.
    """
    desk_as_of: Mapping[ItemKey, datetime] = {}
    if isinstance(desk, DeskBook):
        desk_as_of = desk.as_of
        desk = desk.items
    reported_at = reported_as_of or {}
    ex_venues, cu_venues, blind_venues = set(exchange_venues), set(custodian_venues), set(blind)
    booked_cash = {v for (v, _, kind) in desk if kind == "balance"}
    out: list[Break] = []
    keys = set(desk) | set(exchange) | set(custodian)
    for venue, item, kind in sorted(keys):
        if kind == "balance" and venue not in booked_cash:
            continue
        key = (venue, item, kind)
        if venue in cu_venues:
            book, reported_book = Book.CUSTODIAN, custodian
        elif venue in ex_venues:
            book, reported_book = Book.EXCHANGE, exchange
        else:
            out.append(Break(venue, item, kind, Book.EXCHANGE, desk.get(key), None, None, 0.0,
                             BreakStatus.UNKNOWN, f"{venue} is not a configured venue"))
            continue
        mine = desk.get(key, 0.0)
        if venue in blind_venues:
            out.append(Break(venue, item, kind, book, mine, None, None, default.of(mine, 0.0),
                             BreakStatus.UNKNOWN, f"no {book.value} report from {venue}"))
            continue
        theirs = reported_book.get(key, 0.0)
        diff = mine - theirs
        limit = default.of(mine, theirs)
        broken = abs(diff) > limit
        reason = (f"desk {mine:g} vs {book.value} {theirs:g} (diff {diff:+g}, tolerance "
                  f"{limit:g})") if broken else ""
        status = BreakStatus.BREAK if broken else BreakStatus.OK
        changed, report = desk_as_of.get(key), reported_at.get((venue, kind))
        if broken and changed is not None and report is not None and changed > report:
            status = BreakStatus.PENDING
            reason += (f"; desk ahead: changed at {changed.isoformat()}, after the {book.value} "
                       f"report as of {report.isoformat()}")
        out.append(Break(venue, item, kind, book, mine, theirs, diff, limit, status, reason))
    rank = {BreakStatus.BREAK: 0, BreakStatus.UNKNOWN: 1, BreakStatus.PENDING: 2,
            BreakStatus.OK: 3}
    return sorted(out, key=lambda b: (rank[b.status], b.venue, b.kind, b.item))


def break_results(breaks: Iterable[Break], *, as_of: datetime) -> list[LimitResult]:
    """The ``reconciliation`` alert series: BREACH on a break, UNKNOWN when blind, OK when the
    books agree; nothing for a PENDING item (no evidence either way: its alert stays as is)."""
    status = {BreakStatus.OK: LimitStatus.OK, BreakStatus.BREAK: LimitStatus.BREACH,
              BreakStatus.UNKNOWN: LimitStatus.UNKNOWN}
    out = []
    for b in breaks:
        if b.status is BreakStatus.PENDING:
            continue
        value = abs(b.difference) if b.difference is not None else None
        out.append(LimitResult(
            limit_id=RECONCILIATION, limit_kind=RECONCILIATION, scope=b.scope,
            status=status[b.status], value=value, warn_level=None,
            breach_level=b.tolerance,
            utilisation=(value / b.tolerance) if value is not None and b.tolerance > 0 else None,
            as_of=as_of, config_version=RECONCILIATION, reason=b.reason))
    return out


def reported_books(positions: pd.DataFrame, balances: pd.DataFrame
                   ) -> tuple[dict[ItemKey, float], dict[ItemKey, float]]:
    """(exchange book, custodian book) from collected positions (POSITION_COLUMNS) and
    balances (BALANCE_COLUMNS): signed position quantity per (venue, instrument) and total
    balance per (venue, asset), summed over accounts."""
    exchange: dict[ItemKey, float] = {}
    custodian: dict[ItemKey, float] = {}
    if len(positions):
        grouped = positions.groupby(["venue", "instrument"], as_index=False,
                                    observed=True)["quantity"].sum()  # Categorical keys
        for row in grouped.itertuples(index=False):
            exchange[(str(row.venue), str(row.instrument), "position")] = float(row.quantity)
    if len(balances):
        totals = balances.groupby(["source_type", "venue", "asset"], as_index=False,
                                  observed=True)["total"].sum()
        for row in totals.itertuples(index=False):
            book = custodian if row.source_type == "custodian" else exchange
            book[(str(row.venue), str(row.asset), "balance")] = float(row.total)
    return exchange, custodian
