"""The trading scenarios the desk plays against Risk Monitor (``risk-sim demo --scenario``).

Each script trades through :class:`~risk_sim.trading.desk.Desk` (CheckOrder first, always) and
returns :class:`Expectation` results about what the desk saw: which orders were denied, that a
denied order never reached a venue, that reductions still pass. What the monitor does on its
side (a trading state going REDUCING or HALTED, reconciliation breaks, alerts) shows on the
timeline through CheckOrder's answers and the alert stream only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal

from risk_sim.trading.desk import OrderOutcome
from risk_sim.trading.session import TradingRig

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"
PAUSE_S = 0.3  # between a desk's orders: a human-paced flow, not a test wait


@dataclass(frozen=True)
class Expectation:
    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class ExpectedAlert:
    """One Slack notice a scenario must deliver (in its place in the sequence, once)."""

    limit_id: str
    scope: str
    status: str  # WARN | BREACH | UNKNOWN | OK
    kind: str = "firing"  # firing | resolved | escalated ...

    @classmethod
    def of(cls, payload: dict[str, object]) -> ExpectedAlert:
        """A delivered notice's metadata (``event_payload``) in the same terms."""
        return cls(str(payload.get("limit_id")), str(payload.get("scope")),
                   str(payload.get("status")), str(payload.get("kind")))

    def text(self) -> str:
        return f"{self.kind} {self.status} {self.limit_id} ({self.scope})"


BINANCE_BTC = f"venue:binance|instrument:{BTC}"
#: what each scenario pages, in order, as played against the default alert policy (a resolve
#: waits alerts.keep_firing_for_s = 120 s and an UNKNOWN pages after unknown_for_s = 30 s: both
#: longer than these sessions, so none is expected). Anything else delivered fails the test.
EXPECTED_ALERTS: dict[str, tuple[ExpectedAlert, ...]] = {
    # the run-up crosses 800k (WARN); the next increase is denied pre-trade, so no BREACH;
    # then the back-office fill the desk did not book is a reconciliation break on okx
    "active_trading": (ExpectedAlert("binance_btc_notional", BINANCE_BTC, "WARN"),
                       ExpectedAlert("reconciliation", f"venue:okx|instrument:{BTC}", "BREACH")),
    # the fat finger is denied pre-trade: the position never nears a level
    "fat_finger": (),
    # the algo's buys cross 800k (WARN) and the one that would breach is denied pre-trade
    "runaway_algo": (ExpectedAlert("binance_btc_notional", BINANCE_BTC, "WARN"),),
    # okx is dark for ~1-2 s: its UNKNOWN halts okx at once (CheckOrder) but pages only
    # after unknown_for_s; binance stays far below its levels
    "venue_outage_while_trading": (),
}
def denied_by(outcome: OrderOutcome, limit_id: str) -> bool:
    return not outcome.decision.allowed and any(limit_id in r for r in outcome.decision.reasons)


async def until(check: Callable[[], Awaitable[OrderOutcome]], *, timeout_s: float,
                wanted: Callable[[OrderOutcome], bool], pause_s: float = 0.5
                ) -> OrderOutcome | None:
    """Repeat an order attempt until its outcome is ``wanted`` (None after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        outcome = await check()
        if wanted(outcome):
            return outcome
        await asyncio.sleep(pause_s)
    return None


async def service_sees(rig: TradingRig, limit_id: str, value: float, *, tolerance: float = 0.05,
                       timeout_s: float = 15.0) -> bool:
    """Wait until the service's figure for ``limit_id`` is within ``tolerance`` of ``value``
    (at least ``timeout_s``; longer when the rig allows a slower catch-up, e.g. a test on an
    oversubscribed machine stretching its deadlines)."""
    deadline = time.monotonic() + max(timeout_s, 7.5 * rig.catch_up_s)
    while time.monotonic() < deadline:
        entry = await rig.limit(limit_id)
        if entry is not None and entry.HasField("value") and \
                abs(entry.value - value) <= tolerance * max(abs(value), 1.0):
            return True
        await asyncio.sleep(0.2)
    return False


def venue_notional(rig: TradingRig, venue: str, symbol: str = BTC) -> float:
    return float(sum((p.notional for p in rig.stack.market.positions(venue, "main")
                      if p.symbol == symbol), Decimal(0)))


def book_breaks(rig: TradingRig) -> list[str]:
    """Where the desk's book and the venue's positions differ (base units)."""
    breaks = []
    for venue in ("binance", "okx"):
        for symbol in (BTC, ETH):
            truth = sum((p.quantity for p in rig.stack.market.positions(venue, "main")
                         if p.symbol == symbol), Decimal(0))
            booked = rig.desk.book.quantity(venue, symbol)
            if truth != booked:
                breaks.append(f"{venue} {symbol}: venue {truth.normalize():f}, desk "
                              f"{booked.normalize():f}")
    return breaks


def pnl_checks(rig: TradingRig) -> list[Expectation]:
    """The desk's fees and realised P&L equal the venues' on the desk's own fills (the
    simulator's truth): realised P&L net = sum over fills of realised - fee."""
    sent = {(o.venue, o.order_id) for o in rig.desk.outcomes if o.order_id}
    fees = realized = Decimal(0)
    for venue in ("binance", "okx"):
        for trade in rig.stack.market.trades(venue, "main"):
            if (venue, str(trade.order_id)) in sent:
                fees += trade.fee
                realized += trade.realized_pnl
    booked_fees, booked = rig.desk.book.fees(), rig.desk.book.realized()
    tolerance = Decimal("0.01")
    return [
        Expectation("fees booked = fees charged", abs(booked_fees - fees) < tolerance,
                    f"desk {booked_fees:.6f}, venues {fees:.6f}"),
        Expectation("realised P&L net of fees = the venues' fills",
                    abs((booked - booked_fees) - (realized - fees)) < tolerance,
                    f"desk {booked - booked_fees:.2f}, venues {realized - fees:.2f}"),
    ]


def common(rig: TradingRig) -> list[Expectation]:
    problems = rig.desk.violations()
    return [Expectation("every order checked first; no denied order sent", not problems,
                        "; ".join(problems)), *pnl_checks(rig)]


# -- the scenarios ------------------------------------------------------------------------------
async def normal_flow(rig: TradingRig) -> None:
    desk = rig.desk
    for venue, symbol, side, qty in (("binance", BTC, "buy", 0.5), ("okx", BTC, "buy", 0.4),
                                     ("binance", ETH, "buy", 10.0), ("okx", BTC, "sell", 0.2),
                                     ("binance", BTC, "sell", 0.3), ("binance", ETH, "sell", 5.0)):
        await desk.submit(venue, symbol, side, qty)  # type: ignore[arg-type]
        await asyncio.sleep(PAUSE_S)
    # a bid below the market rests on the book (checked like any order), then is cancelled
    bid = float(rig.stack.market.quote("binance", BTC).bid) * 0.99
    resting = await desk.submit("binance", BTC, "buy", 0.5, order_type="limit",
                                price=round(bid, 1))
    if resting.order_id is not None and resting.status == "open":
        await desk.cancel("binance", BTC, resting.order_id)


async def active_trading(rig: TradingRig) -> list[Expectation]:
    """Normal trading, then a run-up in size into the binance BTC notional limit."""
    desk = rig.desk
    await normal_flow(rig)
    desk.log("note", "binance", BTC, "run-up: adding 2 BTC at a time")
    run_up: list[OrderOutcome] = []
    lagging = 0
    for _ in range(12):
        seen = await service_sees(rig, "binance_btc_notional", venue_notional(rig, "binance"))
        if not seen:
            lagging += 1
            desk.log("note", "binance", BTC, "the monitor's notional lags the venue's")
        outcome = await desk.submit("binance", BTC, "buy", 2.0)
        run_up.append(outcome)
        if not outcome.decision.allowed:
            break
        await asyncio.sleep(PAUSE_S)
    denial = next((o for o in run_up if not o.decision.allowed), None)
    reduce = await desk.submit("binance", BTC, "sell", 3.0, reduce_only=True)
    await asyncio.sleep(PAUSE_S)
    # a back-office fill the desk never booked: reconciliation must find it
    injected = rig.stack.market.inject_fill("okx", "main", BTC, side="buy", amount="50")
    desk.log("note", "okx", BTC, f"back office booked 0.5 BTC at {injected.average} "
             "outside the desk (not in its book)")
    await rig.verify("the back-office fill on okx")  # the monitor follows the venue, not the desk
    breaks = book_breaks(rig)
    for line in breaks:
        desk.log("note", "", "", f"book vs venue: {line}")
    return [
        Expectation("the monitor's BTC notional matched the venue's before every order",
                    lagging == 0, f"{lagging} of {len(run_up)} checks lagged"),
        Expectation("increases pass while under the limit",
                    bool(run_up) and run_up[0].decision.allowed),
        Expectation("an increase is denied on binance_btc_notional",
                    denial is not None and denied_by(denial, "binance_btc_notional"),
                    denial.decision.reasons[0] if denial and denial.decision.reasons else ""),
        Expectation("the venue position stays under the breach level",
                    venue_notional(rig, "binance") < 1_000_000, f"{venue_notional(rig, 'binance'):,.0f}"),
        Expectation("a reduction still passes", reduce.decision.allowed,
                    "; ".join(reduce.decision.reasons[:1])),
        Expectation("the unbooked fill is a book break on okx",
                    any(b.startswith("okx BTC") for b in breaks), "; ".join(breaks)),
        *common(rig),
    ]


async def fat_finger(rig: TradingRig) -> list[Expectation]:
    """An oversized order is denied pre-trade and never reaches the venue."""
    desk = rig.desk
    first = await desk.submit("binance", BTC, "buy", 0.2)
    await asyncio.sleep(PAUSE_S)
    orders_before = len(rig.stack.market.orders("binance", "main"))
    fat = await desk.submit("binance", BTC, "buy", 50.0)  # ~3M notional against 1M
    orders_after = len(rig.stack.market.orders("binance", "main"))
    await asyncio.sleep(PAUSE_S)
    after = await desk.submit("binance", BTC, "buy", 0.2)
    return [
        Expectation("a normal order passes", first.decision.allowed),
        Expectation("the 50 BTC order is denied", not fat.decision.allowed,
                    fat.decision.reasons[0] if fat.decision.reasons else ""),
        Expectation("the denied order never reached the venue",
                    not fat.sent and orders_after == orders_before),
        Expectation("normal flow continues", after.decision.allowed),
        *common(rig),
    ]


async def runaway_algo(rig: TradingRig) -> list[Expectation]:
    """Many small increases add up to the limit; increases are denied, reductions pass."""
    desk = rig.desk
    desk.log("note", "binance", BTC, "algo: 0.5 BTC buys in a loop")
    attempts: list[OrderOutcome] = []
    first_denial: int | None = None
    for n in range(80):
        outcome = await desk.submit("binance", BTC, "buy", 0.5)
        attempts.append(outcome)
        if first_denial is None and denied_by(outcome, "binance_btc_notional"):
            first_denial = n  # other denials (e.g. a moment of stale data) do not stop it
        if first_denial is not None and n >= first_denial + 5:
            break  # the algo keeps hammering for a while after the first denial
        await asyncio.sleep(0.1)
    after = attempts[first_denial + 1:] if first_denial is not None else []
    reduce = await desk.submit("binance", BTC, "sell", 1.0, reduce_only=True)
    return [
        Expectation("small increases pass at first", bool(attempts) and
                    attempts[0].decision.allowed),
        Expectation("the algo's increases end up denied on binance_btc_notional",
                    first_denial is not None, f"first denial at order {first_denial}"),
        Expectation("every increase after the first denial is denied",
                    bool(after) and all(not o.decision.allowed for o in after),
                    f"{sum(o.decision.allowed for o in after)} of {len(after)} allowed"),
        Expectation("a reduction still passes", reduce.decision.allowed,
                    "; ".join(reduce.decision.reasons[:1])),
        *common(rig),
    ]


async def venue_outage_while_trading(rig: TradingRig) -> list[Expectation]:
    """okx goes dark: orders there are denied (its data is UNKNOWN), binance trades on."""
    desk = rig.desk
    okx_before = await desk.submit("okx", BTC, "buy", 0.1)
    await desk.submit("binance", BTC, "buy", 0.1)
    okx = rig.stack.venue("okx")
    rig.dark.add("okx")  # the monitor cannot see okx now: only binance is compared
    okx.faults.add("http_error", "/api/*", status=503)
    okx.disconnect_ws("*", refuse_seconds=None)
    desk.log("note", "okx", "", "okx stops answering (REST 503, websockets refused)")
    halted = await until(lambda: desk.submit("okx", BTC, "buy", 0.1), timeout_s=90.0,
                         wanted=lambda o: not o.decision.allowed, pause_s=1.0)
    binance_during = await desk.submit("binance", BTC, "buy", 0.1)
    okx.faults.clear()
    okx.accept_ws()
    desk.log("note", "okx", "", "okx answers again")
    resumed = await until(lambda: desk.submit("okx", BTC, "sell", 0.1), timeout_s=90.0,
                          wanted=lambda o: o.decision.allowed, pause_s=1.0)
    rig.dark.discard("okx")  # CheckOrder allowed okx again: the monitor sees it, compare it
    await rig.verify("okx back")
    return [
        Expectation("okx trades before the outage", okx_before.decision.allowed),
        Expectation("okx orders are denied during the outage", halted is not None,
                    halted.decision.reasons[0] if halted and halted.decision.reasons else ""),
        Expectation("binance trades on during the outage", binance_during.decision.allowed,
                    "; ".join(binance_during.decision.reasons[:1])),
        Expectation("okx trades again after it recovers", resumed is not None),
        *common(rig),
    ]


SCRIPTS: dict[str, Callable[[TradingRig], Awaitable[list[Expectation]]]] = {
    "active_trading": active_trading,
    "fat_finger": fat_finger,
    "runaway_algo": runaway_algo,
    "venue_outage_while_trading": venue_outage_while_trading,
}
