"""Reconciliation as of the same time: a difference on an item the desk changed after the
venue's report is PENDING ("desk ahead", no alert); a fill the desk never booked is still a
break at the first report as of after the desk's change."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from risk_monitor.application.trading_flow import reconcile_books
from risk_monitor.domain.model import BALANCE_COLUMNS, POSITION_COLUMNS, Collected, SourceKind
from risk_monitor.domain.reconciliation import (
    BreakStatus,
    DeskBook,
    Tolerance,
    as_of_by_venue,
    break_results,
    reconcile,
)
from risk_monitor.platform.settings import load_settings
from risk_monitor_tests.unit.domain.builders import NOW, frame, position, source

BTC = "BTC/USDT:USDT"
BINANCE = ("binance", BTC, "position")
OKX = ("okx", BTC, "position")


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def compare(desk: DeskBook | dict[tuple[str, str, str], float], venue_qty: float,
            report_s: float | None) -> BreakStatus:
    reported = None if report_s is None else {("binance", "position"): at(report_s)}
    (found,) = reconcile(desk, {BINANCE: venue_qty}, {}, exchange_venues=["binance"],
                         custodian_venues=[], default=Tolerance(1e-6, 0),
                         reported_as_of=reported)
    return found.status


def test_a_report_older_than_the_desks_change_is_pending_not_a_break() -> None:
    desk = DeskBook({BINANCE: 3.0}, {BINANCE: at(10)})
    # the monitor's view (as of 2 s) lags the desk, which booked its 3rd BTC at 10 s
    assert compare(desk, 2.0, report_s=2) is BreakStatus.PENDING
    # the first report as of after the desk's change must show it: a difference is a break
    assert compare(desk, 2.0, report_s=10.5) is BreakStatus.BREAK
    assert compare(desk, 3.0, report_s=2) is BreakStatus.OK  # agreeing books are agreed
    # without a time on either side the books are compared by value, as before
    assert compare({BINANCE: 3.0}, 2.0, report_s=2) is BreakStatus.BREAK
    assert compare(desk, 2.0, report_s=None) is BreakStatus.BREAK


def test_a_pending_item_raises_nothing_and_says_why() -> None:
    (pending,) = reconcile(DeskBook({BINANCE: 3.0}, {BINANCE: at(10)}), {BINANCE: 2.0}, {},
                           exchange_venues=["binance"], custodian_venues=[],
                           reported_as_of={("binance", "position"): at(2)})
    assert "desk ahead" in pending.reason and pending.difference == 1.0
    assert break_results([pending], as_of=NOW) == []


def test_a_desk_trading_on_one_venue_does_not_hide_a_break_on_another(tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path, venues=[
        {"id": "binance", "exchange": "binanceusdm"}, {"id": "okx", "exchange": "okx"}])
    # binance: the desk just booked a fill the lagging monitor has not seen (pending);
    # okx: a back-office fill the desk never booked, the desk's okx item unchanged for long
    desk = DeskBook({BINANCE: 3.0, OKX: 1.0}, {BINANCE: at(10), OKX: at(-60)})
    positions = Collected(
        frame([position("binance", BTC, 2.0, 60000, 61000),
               position("okx", BTC, 1.5, 60000, 61000)], POSITION_COLUMNS),
        (source(SourceKind.EXCHANGE, "binance", as_of=at(2)),
         source(SourceKind.EXCHANGE, "okx", as_of=at(2))))
    empty = Collected(frame([], BALANCE_COLUMNS), ())
    outcome = reconcile_books(settings, desk, positions, empty, empty)
    assert [(b.venue, b.status) for b in outcome.broken] == [("okx", BreakStatus.BREAK)]
    assert [(b.venue, b.status) for b in outcome.pending] == [("binance", BreakStatus.PENDING)]


def test_a_venue_report_is_as_of_its_oldest_good_read_and_none_when_one_failed() -> None:
    sources = (source(SourceKind.EXCHANGE, "binance", "main", as_of=at(3)),
               source(SourceKind.EXCHANGE, "binance", "sub", as_of=at(1)),
               source(SourceKind.EXCHANGE, "okx", as_of=at(2)),
               source(SourceKind.EXCHANGE, "okx", "sub", ok=False, as_of=at(4)),
               source(SourceKind.CUSTODIAN, "fireblocks", "vault-1", as_of=at(5)))
    assert as_of_by_venue(sources, "positions") == {"binance": at(1)}
    assert as_of_by_venue(sources, "balances", (SourceKind.CUSTODIAN,)) == {"fireblocks": at(5)}
