"""Realised P&L rebuilt from fills (average cost, fees, funding) against the venue's figure, and
the three-book reconciliation (desk vs exchange vs custodian)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from risk_monitor.domain.alerts import AlertPolicy, plan_alerts
from risk_monitor.domain.model import LimitResult, LimitStatus
from risk_monitor.domain.realised import Fill, Funding, compare_realised, realised_pnl
from risk_monitor.domain.reconciliation import (
    RECONCILIATION,
    BreakStatus,
    Tolerance,
    break_results,
    reconcile,
)
from risk_monitor_tests.unit.domain.builders import NOW, result

BTC = "BTC/USDT:USDT"
KEY = ("binance", "main", BTC)


def fill(i: int, side: str, qty: float, price: float, fee: float = 0.0, *,
         fee_ccy: str = "USDT", reported: float | None = None) -> Fill:
    return Fill("binance", "main", BTC, f"t{i}", side, qty, price, fee, fee_ccy,
                NOW + timedelta(seconds=i), reported_realised=reported)


def test_average_cost_realised_pnl_with_fees_funding_and_a_flip() -> None:
    fills = [fill(1, "buy", 2, 100, 0.1), fill(2, "buy", 2, 110, 0.1),  # avg 105
             fill(3, "sell", 1, 120, 0.05),  # +15
             fill(4, "sell", 5, 90, 0.2),  # closes 3 at 90: -45, opens short 2 at 90
             fill(5, "buy", 1, 80, 0.05)]  # short closes 1: +10
    funding = [Funding("binance", "main", BTC, -1.5, "USDT")]
    book = realised_pnl(fills, funding)[KEY]
    assert book.gross == pytest.approx(15 - 45 + 10)
    assert book.fees == pytest.approx(0.5) and book.funding == pytest.approx(-1.5)
    assert book.net == pytest.approx(-20 - 0.5 - 1.5)  # realised = fills - fees + funding
    assert (book.position, book.avg_entry) == (pytest.approx(-1), pytest.approx(90))
    assert book.fills == 5


def test_a_replayed_fill_counts_once_and_order_follows_time() -> None:
    once = realised_pnl([fill(2, "sell", 1, 120), fill(1, "buy", 1, 100)])[KEY]
    twice = realised_pnl([fill(1, "buy", 1, 100), fill(2, "sell", 1, 120),
                          fill(2, "sell", 1, 120)])[KEY]
    assert once.gross == twice.gross == pytest.approx(20) and twice.fills == 2


def test_mismatch_with_the_venue_is_flagged_and_foreign_fees_are_not_guessed() -> None:
    matching = realised_pnl([fill(1, "buy", 1, 100, 0.1, reported=0.0),
                             fill(2, "sell", 1, 120, 0.1, reported=20.0)])
    assert [c.ok for c in compare_realised(matching)] == [True]  # against the per-fill figures
    off = compare_realised(realised_pnl([fill(1, "buy", 1, 100, reported=0.0),
                                         fill(2, "sell", 1, 120, reported=25.0)]))
    assert off[0].ok is False and "diff -5.00" in off[0].reason
    bnb = realised_pnl([fill(1, "buy", 1, 100, 0.001, fee_ccy="BNB", reported=0.0),
                        fill(2, "sell", 1, 120, reported=20.0)])
    assert compare_realised(bnb)[0].ok is None  # unknown, not "fine"
    silent = realised_pnl([fill(1, "buy", 1, 100), fill(2, "sell", 1, 120)])
    assert compare_realised(silent)[0].ok is None  # the venue said nothing


def test_bad_fills_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        realised_pnl([fill(1, "buy", 0, 100)])


def test_three_books_find_an_unbooked_fill_and_stay_unknown_when_blind() -> None:
    desk = {("binance", BTC, "position"): 1.5, ("okx", BTC, "position"): 1.0,
            ("fireblocks", "BTC", "balance"): 5.0}
    exchange = {("binance", BTC, "position"): 1.5, ("okx", BTC, "position"): 1.3}
    custodian = {("fireblocks", "BTC", "balance"): 5.0}
    breaks = reconcile(desk, exchange, custodian, exchange_venues=["binance", "okx"],
                       custodian_venues=["fireblocks"], default=Tolerance(0.01, 0))
    first = breaks[0]
    assert (first.venue, first.item, first.status) == ("okx", BTC, BreakStatus.BREAK)
    assert first.difference == pytest.approx(-0.3) and "desk 1 vs exchange 1.3" in first.reason
    assert [b.status for b in breaks[1:]] == [BreakStatus.OK, BreakStatus.OK]
    blind = reconcile(desk, {}, custodian, exchange_venues=["binance", "okx"],
                      custodian_venues=["fireblocks"], blind=["okx"])
    okx = next(b for b in blind if b.venue == "okx")
    assert okx.status is BreakStatus.UNKNOWN and okx.reported is None


def test_breaks_raise_a_reconciliation_alert_that_limit_evaluations_leave_alone() -> None:
    breaks = reconcile({("okx", BTC, "position"): 1.0}, {("okx", BTC, "position"): 1.3}, {},
                       exchange_venues=["okx"], custodian_venues=[])
    (row,) = break_results(breaks, as_of=NOW)
    assert (row.limit_id, row.status, row.scope) == (
        RECONCILIATION, LimitStatus.BREACH, "venue:okx|instrument:BTC/USDT:USDT")
    plan = plan_alerts({}, [row], NOW, AlertPolicy())
    (state,) = plan.states
    assert [n.status for n in plan.notifications] == [LimitStatus.BREACH]
    later = NOW + timedelta(seconds=5)
    limits_only: list[LimitResult] = [result("OK", later)]
    followed = plan_alerts({state.fingerprint: state}, limits_only, later,
                           AlertPolicy(resolve_missing=True))
    assert followed.notifications == []  # the limit evaluation did not resolve the break
