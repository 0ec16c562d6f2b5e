"""What the monitor reports against what the venues hold: one comparison per scenario step.

The monitor's side is what it shows its users, ``GET /v1/dashboard/trading``: ``positions``
(the hot path's latest collection: quantity, entry, mark, unrealised P&L) and ``realised`` (the
fill ledger's books: gross realised P&L and fees rebuilt from the private streams' fills). The
truth is the venue simulators' own state: their positions and every trade on the account.

Per (venue, instrument) a comparison checks, within :class:`Tolerance`:

- the signed base quantity (exact up to ``quantity``);
- the entry price, and the unrealised P&L *at the monitor's mark*: ``(mark - entry) x qty`` with
  the venue's entry and quantity, so a price that moved since the monitor's read is not a
  divergence, while a wrong entry, quantity or sign is;
- the monitor's mark against the venue's mark now (``mark_rel``: the drift of one read);
- realised P&L gross and fees against the sum over the venue's trades on that instrument (the
  ledger follows every fill since the service started, which is before the desk's first order).

The monitor may lag the venue by one private-stream event: :func:`compare_until_caught_up` polls
until it agrees or ``deadline_s`` passes and keeps how long it waited. Test tooling only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from risk_sim.market import Market

ZERO = Decimal(0)


@dataclass(frozen=True)
class Tolerance:
    """How close the monitor's figures must be to the venue's (absolute unless ``_rel``)."""

    quantity: float = 1e-9  # base units
    entry_rel: float = 1e-6
    mark_rel: float = 0.005  # the monitor's last read vs the venue's mark now
    money: float = 0.01  # quote currency: unrealised at the monitor's mark, realised, fees
    money_rel: float = 1e-7  # of the position's notional (float rounding on large books)

    def stated(self) -> str:
        return (f"qty ±{self.quantity:g}, entry ±{self.entry_rel:.0e} rel, mark ±"
                f"{self.mark_rel:.1%}, P&L ±{self.money:g} + {self.money_rel:.0e} x notional")


@dataclass(frozen=True)
class Figures:
    """One (venue, instrument) as one side sees it."""

    quantity: float = 0.0
    entry: float | None = None
    mark: float | None = None
    unrealised: float = 0.0
    realised: float = 0.0  # gross, before fees
    fees: float = 0.0

    def text(self) -> str:
        entry = f" @ {self.entry:.2f}" if self.entry else ""
        return (f"qty {self.quantity:g}{entry} upl {self.unrealised:.2f} realised "
                f"{self.realised:.2f} fees {self.fees:.4f}")


@dataclass(frozen=True)
class Row:
    venue: str
    instrument: str
    truth: Figures
    monitor: Figures
    diverged: tuple[tuple[str, str], ...] = ()  # (field, what)

    @property
    def ok(self) -> bool:
        return not self.diverged

    @property
    def problems(self) -> tuple[str, ...]:
        return tuple(what for _, what in self.diverged)


@dataclass
class Comparison:
    """One step: every (venue, instrument) compared, how long the monitor took to agree."""

    step: str
    rows: list[Row] = field(default_factory=list)
    waited_s: float = 0.0
    error: str = ""
    skipped: tuple[str, ...] = ()  # venues not compared (declared dark by the scenario)

    @property
    def ok(self) -> bool:
        return not self.error and all(r.ok for r in self.rows)

    def problems(self) -> list[str]:
        found = [f"{r.venue} {r.instrument}: {p}" for r in self.rows for p in r.problems]
        return [self.error, *found] if self.error else found

    def fields(self) -> set[tuple[str, str, str]]:
        """(venue, instrument, field) of every figure that disagrees."""
        return {(r.venue, r.instrument, f) for r in self.rows for f, _ in r.diverged}

    def line(self) -> str:
        verdict = "match" if self.ok else "DIVERGE"
        compared = ", ".join(f"{r.venue} {r.instrument.split('/')[0]} {r.monitor.quantity:g}"
                             for r in self.rows)
        skipped = f"; not compared: {', '.join(self.skipped)} (dark)" if self.skipped else ""
        detail = f"; {'; '.join(self.problems())}" if not self.ok else ""
        return (f"monitor vs venues after {self.step}: {verdict} in {self.waited_s:.2f}s "
                f"[{compared}]{skipped}{detail}")


# -- the two sides ----------------------------------------------------------------------------------
def venue_truth(market: Market, venues: Iterable[str], account: str = "main"
                ) -> dict[tuple[str, str], Figures]:
    """Positions and session realised P&L per (venue, instrument), from the simulators."""
    out: dict[tuple[str, str], Figures] = {}
    for venue in venues:
        realised: dict[str, Decimal] = {}
        fees: dict[str, Decimal] = {}
        for trade in market.trades(venue, account):
            realised[trade.symbol] = realised.get(trade.symbol, ZERO) + trade.realized_pnl
            fees[trade.symbol] = fees.get(trade.symbol, ZERO) + trade.fee
        held = {v.symbol: v for v in market.positions(venue, account)}  # one-way: one per symbol
        for symbol in sorted(set(held) | set(realised)):
            view = held.get(symbol)
            out[(venue, symbol)] = Figures(
                quantity=float(view.quantity) if view else 0.0,
                entry=float(view.position.entry_price) if view else None,
                mark=float(view.mark) if view else None,
                unrealised=float(view.unrealized_pnl) if view else 0.0,
                realised=float(realised.get(symbol, ZERO)), fees=float(fees.get(symbol, ZERO)))
    return out


def monitor_figures(document: dict[str, Any], venues: Iterable[str]
                    ) -> dict[tuple[str, str], Figures]:
    """The same figures from the monitor's trading document (``/v1/dashboard/trading``)."""
    wanted = set(venues)
    positions: dict[tuple[str, str], dict[str, Any]] = {}
    for row in document.get("positions") or []:
        if row["venue"] in wanted and row.get("account", "main") == "main":
            quantity = float(row.get("quantity") or 0.0)
            signed = -abs(quantity) if row.get("side") == "short" else quantity
            key = (row["venue"], row["instrument"])
            before = positions.get(key)
            if before is not None:  # hedge-mode rows of one instrument: net them
                signed += before["quantity"]
            positions[key] = {**row, "quantity": signed}
    books = {(b["venue"], b["instrument"]): b for b in document.get("realised") or []
             if b["venue"] in wanted and b.get("account", "main") == "main"}
    out: dict[tuple[str, str], Figures] = {}
    for key in sorted(set(positions) | set(books)):
        pos, book = positions.get(key, {}), books.get(key, {})
        out[key] = Figures(
            quantity=float(pos.get("quantity") or 0.0), entry=pos.get("entry_price"),
            mark=pos.get("mark_price"), unrealised=float(pos.get("unrealized_pnl") or 0.0),
            realised=float(book.get("gross") or 0.0), fees=float(book.get("fees") or 0.0))
    return out


def differences(truth: Figures, monitor: Figures, tolerance: Tolerance
                ) -> tuple[tuple[str, str], ...]:
    """(field, what) for each figure that disagrees beyond ``tolerance`` (empty: agreed)."""
    problems: list[tuple[str, str]] = []
    if abs(truth.quantity - monitor.quantity) > tolerance.quantity:
        problems.append(("quantity",
                         f"quantity venue {truth.quantity:g} monitor {monitor.quantity:g}"))
    money = tolerance.money + tolerance.money_rel * abs(truth.quantity) * (truth.mark or 0.0)
    if truth.quantity and truth.entry is not None:
        if monitor.entry is None or monitor.mark is None:
            problems.append(("entry", "the monitor shows no entry/mark for a held position"))
        else:
            if abs(monitor.entry - truth.entry) > tolerance.entry_rel * truth.entry:
                problems.append(("entry",
                                 f"entry venue {truth.entry:.4f} monitor {monitor.entry:.4f}"))
            if truth.mark and abs(monitor.mark - truth.mark) > tolerance.mark_rel * truth.mark:
                problems.append(("mark",
                                 f"mark venue {truth.mark:.2f} monitor {monitor.mark:.2f}"))
            expected = (monitor.mark - truth.entry) * truth.quantity
            if abs(monitor.unrealised - expected) > money:
                problems.append(("unrealised", f"unrealised at the monitor's mark "
                                 f"{monitor.mark:.2f}: venue {expected:.2f} monitor "
                                 f"{monitor.unrealised:.2f}"))
    if abs(truth.realised - monitor.realised) > money:
        problems.append(("realised", f"realised venue {truth.realised:.2f} monitor "
                         f"{monitor.realised:.2f}"))
    if abs(truth.fees - monitor.fees) > money:
        problems.append(("fees", f"fees venue {truth.fees:.4f} monitor {monitor.fees:.4f}"))
    return tuple(problems)


def compare(truth: dict[tuple[str, str], Figures], monitor: dict[tuple[str, str], Figures],
            tolerance: Tolerance, step: str) -> Comparison:
    rows = []
    for venue, instrument in sorted(set(truth) | set(monitor)):
        t = truth.get((venue, instrument), Figures())
        m = monitor.get((venue, instrument), Figures())
        rows.append(Row(venue, instrument, t, m, differences(t, m, tolerance)))
    return Comparison(step, rows)


async def compare_until_caught_up(
        step: str, market: Market, read_monitor: Callable[[], Awaitable[dict[str, Any]]], *,
        venues: Iterable[str] = ("binance", "okx"), dark: Iterable[str] = (),
        tolerance: Tolerance = Tolerance(), deadline_s: float = 2.0,
        interval_s: float = 0.05, known: set[tuple[str, str, str]] | None = None
        ) -> Comparison:
    """Compare until the monitor agrees with the venues or ``deadline_s`` passes (the last
    comparison is returned either way, with the time waited).

    ``known``: (venue, instrument, field) that already disagreed at the previous step's
    deadline; a divergence that persists is reported again but not waited for, so one lasting
    divergence does not slow every later step (and the scenario's pace) by ``deadline_s``.
    """
    skipped = tuple(sorted(set(dark)))
    compared = [v for v in venues if v not in skipped]
    started = time.monotonic()
    while True:
        try:
            document = await read_monitor()
        except Exception as exc:  # the monitor did not answer: that is the comparison's result
            result = Comparison(step, error=f"monitor unreadable: {type(exc).__name__}: {exc}")
        else:
            result = compare(venue_truth(market, compared), monitor_figures(document, compared),
                             tolerance, step)
        result.waited_s = time.monotonic() - started
        result.skipped = skipped
        if (result.fields() <= (known or set()) and not result.error) \
                or result.waited_s >= deadline_s:
            return result
        await asyncio.sleep(interval_s)
