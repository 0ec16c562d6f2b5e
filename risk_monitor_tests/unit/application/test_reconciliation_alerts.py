"""The reconciliation alert rule both paths share (``raise_reconciliation_alerts``): a break
pages only once it has lasted ``trading.reconciliation_for_s``, so a fill in flight between the
desk's book and the venue's is no page; a break that clears before then sends nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from risk_monitor.adapters.sql import Storage
from risk_monitor.application.trading_flow import Reconciliation, raise_reconciliation_alerts
from risk_monitor.domain.reconciliation import Book, Break, BreakStatus
from risk_monitor.platform.settings import load_settings

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
BTC = "BTC/USDT:USDT"


def outcome(status: BreakStatus) -> Reconciliation:
    difference = 0.3 if status is BreakStatus.BREAK else 0.0
    return Reconciliation([Break("binance", BTC, "position", Book.EXCHANGE, desk=2.0,
                                 reported=2.0 + difference, difference=difference,
                                 tolerance=0.001, status=status)], desk_published=True)


def test_a_break_pages_once_it_lasted_the_wait_and_an_in_flight_one_never(
        tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path, trading={"reconciliation_for_s": 10.0})
    storage = Storage.open(f"sqlite:///{tmp_path / 'store.db'}")
    context = {"source": "unit"}

    def step(status: BreakStatus, at_s: float) -> int:
        return raise_reconciliation_alerts(storage, settings, outcome(status),
                                           now=T0 + timedelta(seconds=at_s), context=context)

    # in flight: broken at one comparison, agreed at the next
    assert step(BreakStatus.BREAK, 0) == 0
    assert step(BreakStatus.OK, 5) == 0
    # a real break: still there after the wait, paged once
    assert step(BreakStatus.BREAK, 20) == 0
    assert step(BreakStatus.BREAK, 25) == 0
    assert step(BreakStatus.BREAK, 31) == 1
    assert step(BreakStatus.BREAK, 36) == 0
    (row,) = storage.outbox.rows()
    assert (row.alert_status, row.kind) == ("BREACH", "firing")
