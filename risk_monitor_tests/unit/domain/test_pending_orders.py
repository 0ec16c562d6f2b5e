"""Pending orders: an allowed order counts as exposure in the pre-trade check until the evaluated
positions show it (matched fills, or positions as of after the allowance), or it expires."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from risk_monitor.domain.engine import RiskReport, evaluate
from risk_monitor.domain.limits import LimitConfig
from risk_monitor.domain.model import Collected, LimitStatus, SourceKind
from risk_monitor.domain.orders import OrderCheck, OrderRequest, check_order
from risk_monitor.domain.pending_orders import (
    PendingOrder,
    PendingOrders,
    Release,
    pending_of,
    positions_as_of,
)
from risk_monitor.domain.trading_state import ReasonCode, TradingState, TradingVerdict
from risk_monitor_tests.unit.domain.builders import NOW, config, desk, source

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"
TTL_S = 5.0
#: binance BTC: 10 BTC at 61,000 = 610,000 evaluated
BTC_NOTIONAL = {"id": "btc", "kind": "max_notional",
                "scope": {"venue": "binance", "instrument": BTC}, "warn": 800000, "breach": 1000000}
KEY = ("binance", "main", BTC)
REDUCING = TradingVerdict(TradingState.REDUCING, "global", "automatic", "daily_loss BREACH")


def report_of(*limits: dict[str, Any]) -> tuple[RiskReport, LimitConfig]:
    limits_config = config(*limits, venues=["binance", "okx", "fireblocks"])
    return evaluate(desk(), limits_config), limits_config


def order(side: str, qty: float, *, venue: str = "binance", instrument: str = BTC,
          client_order_id: str = "") -> OrderRequest:
    return OrderRequest(venue, "main", instrument, side, qty, client_order_id=client_order_id)


def allow(report: RiskReport, limits: LimitConfig, request: OrderRequest,
          pending: list[PendingOrder], **kwargs: Any) -> OrderCheck:
    """Check like the service does; an allowed order joins ``pending``."""
    checked = check_order(report, limits, request, NOW, pending=tuple(pending), **kwargs)
    if checked.allowed:
        pending.append(pending_of(request, checked, NOW, TTL_S))
    return checked


def test_an_allowed_order_in_flight_counts_against_the_next_one() -> None:
    report, limits = report_of(BTC_NOTIONAL)
    pending: list[PendingOrder] = []
    first = allow(report, limits, order("buy", 4), pending)  # 854k: WARN, allowed
    assert first.allowed and first.added_gross_usd == pytest.approx(244_000)
    # judged on the evaluated position alone the next buy looks fine (793k)...
    alone = check_order(report, limits, order("buy", 3), NOW)
    assert alone.allowed
    # ...but with the first one's fill still in flight it takes the position to 1,037,000
    second = allow(report, limits, order("buy", 3), pending)
    assert not second.allowed and second.codes == (ReasonCode.LIMIT_BREACH.value,)
    (projected,) = second.projected
    assert projected.value == pytest.approx(1_037_000) and projected.status is LimitStatus.BREACH
    assert len(pending) == 1  # a denied order is no exposure


def test_a_partly_shown_order_counts_for_the_rest_only() -> None:
    report, limits = report_of(BTC_NOTIONAL)
    pending = [replace(pending_of(order("buy", 4), check_order(report, limits, order("buy", 4),
                                                                 NOW), NOW, TTL_S), shown=3.0)]
    (projected,) = check_order(report, limits, order("buy", 3), NOW, pending=pending).projected
    assert projected.value == pytest.approx(610_000 + 61_000 + 183_000)


def test_a_reduction_that_pending_reductions_turn_into_a_flip_is_no_reduction() -> None:
    report, limits = report_of(BTC_NOTIONAL)
    pending: list[PendingOrder] = []
    assert allow(report, limits, order("sell", 9), pending, trading=REDUCING).allowed
    # 10 - 9 pending - 2 = -1 BTC: a flip once both fill, not a reduction
    alone = check_order(report, limits, order("sell", 2), NOW, trading=REDUCING)
    assert alone.allowed and alone.reducing
    after = check_order(report, limits, order("sell", 2), NOW, trading=REDUCING,
                        pending=pending)
    assert not after.allowed and not after.reducing
    assert after.codes[0] == ReasonCode.TRADING_REDUCING.value
    # a buy does not add to pending sells: the opposite direction is not "ahead" of it
    assert check_order(report, limits, order("sell", 0.5), NOW, trading=REDUCING,
                       pending=pending).allowed


def test_pending_exposure_on_another_leg_counts_in_a_shared_scope_only() -> None:
    # binance gross: 610k BTC + 145k ETH = 755k
    report, limits = report_of({"id": "bgross", "kind": "gross_exposure",
                                "scope": {"venue": "binance"}, "breach": 900_000})
    assert check_order(report, limits, order("buy", 1), NOW).allowed  # 816k
    okx: list[PendingOrder] = []
    assert allow(report, limits, order("sell", 2, venue="okx"), okx).allowed
    assert check_order(report, limits, order("buy", 1), NOW, pending=okx).allowed  # not binance
    binance: list[PendingOrder] = []
    assert allow(report, limits, order("sell", 40, instrument=ETH), binance).allowed  # 871k
    denied = check_order(report, limits, order("buy", 1), NOW, pending=binance)
    assert not denied.allowed
    assert denied.projected[0].value == pytest.approx(755_000 + 116_000 + 61_000)


def test_no_pending_orders_change_nothing() -> None:
    report, limits = report_of(BTC_NOTIONAL)
    for side, qty in (("buy", 1), ("buy", 7), ("sell", 25)):
        before = check_order(report, limits, order(side, qty), NOW)
        after = check_order(report, limits, order(side, qty), NOW, pending=())
        assert (before.allowed, before.reasons, before.projected) == \
            (after.allowed, after.reasons, after.projected)


# -- the ledger -------------------------------------------------------------------------------
def pending_buy(qty: float = 1.0, *, client_order_id: str = "", venue: str = "binance"
                ) -> PendingOrder:
    return PendingOrder(venue, "main", BTC, "BTC", None, qty, qty * 61_000, qty * 61_000,
                        allowed_at=NOW, expires_at=NOW + timedelta(seconds=TTL_S),
                        client_order_id=client_order_id)


def at(seconds: float) -> Any:
    return NOW + timedelta(seconds=seconds)


def test_without_an_id_positions_as_of_after_the_allowance_release_it() -> None:
    ledger = PendingOrders(match_fills=True)
    ledger.add(pending_buy())  # no client order id: released by the positions' time
    assert ledger.settle({"binance": at(-0.1)}, at(0.2)) == []
    assert ledger.settle({"okx": at(1)}, at(0.3)) == []  # another venue's positions
    (released,) = ledger.settle({"binance": at(0.25)}, at(0.3))
    assert released.why is Release.SHOWN and len(ledger) == 0


def test_with_an_id_only_fills_the_positions_include_release_it() -> None:
    ledger = PendingOrders(match_fills=True)
    ledger.add(pending_buy(4, client_order_id="desk00007"))
    # positions as of after the allowance but before any fill was seen: still pending
    assert ledger.settle({"binance": at(0.1)}, at(0.1)) == []
    assert not ledger.fill(KEY, "other", 1, at(0.15))
    assert not ledger.fill(("okx", "main", BTC), "desk00007", 1, at(0.15))
    assert ledger.fill(KEY, "desk00007", 1, at(0.2))  # a partial fill
    assert ledger.settle({"binance": at(0.19)}, at(0.3)) == []  # positions older than it
    assert ledger.view()[0].shown == 0
    assert ledger.settle({"binance": at(0.2)}, at(0.3)) == []  # a tie is no proof
    assert ledger.view()[0].shown == 0
    assert ledger.settle({"binance": at(0.21)}, at(0.3)) == []
    (partly,) = ledger.view()
    assert partly.shown == 1 and partly.signed_remaining == pytest.approx(3)
    assert ledger.fill(KEY, "desk00007", 3, at(0.4))
    assert ledger.settle({"binance": at(0.35)}, at(0.5)) == []
    (released,) = ledger.settle({"binance": at(0.45)}, at(0.5))
    assert released.why is Release.SHOWN and ledger.view() == ()


def test_positions_pushed_before_the_trade_release_by_the_stream_book() -> None:
    """A venue may push the position before the trade: the evaluation holding it is stamped
    before the fill was seen. The position equal to the fill stream's book shows it."""
    ledger = PendingOrders(match_fills=True)
    ledger.add(pending_buy(2, client_order_id="desk00009"))
    ledger.add(pending_buy(1, client_order_id="desk00010"))
    evaluated = {KEY: 12.0}
    ledger.fill(KEY, "desk00009", 2, at(0.3), book_position=12.0)
    # positions as of 0.25 (before the fill was seen) already hold 12 BTC
    (released,) = ledger.settle({"binance": at(0.25)}, at(0.4), evaluated.get)
    assert released.order.client_order_id == "desk00009" and released.why is Release.SHOWN
    # the other order has no fill: a position that happens to match shows nothing of it
    assert ledger.settle({"binance": at(0.5)}, at(0.5), evaluated.get) == []
    # a position that differs from the book after the latest fill is no proof either
    ledger.fill(KEY, "desk00010", 1, at(0.6), book_position=13.0)
    assert ledger.settle({"binance": at(0.55)}, at(0.7), evaluated.get) == []
    # nor is one as of before the allowance, whatever it holds
    late = PendingOrders(match_fills=True)
    late.add(replace(pending_buy(1, client_order_id="x"), allowed_at=at(1)))
    late.fill(KEY, "x", 1, at(1.2), book_position=12.0)
    assert late.settle({"binance": at(0.9)}, at(1.3), evaluated.get) == []


def test_an_order_never_shown_expires_after_the_ttl() -> None:
    ledger = PendingOrders(match_fills=True)
    ledger.add(pending_buy(client_order_id="resting"))
    ledger.add(pending_buy(venue="okx"))
    assert ledger.settle({}, at(TTL_S - 0.01)) == []
    released = ledger.settle({}, at(TTL_S))
    assert [r.why for r in released] == [Release.EXPIRED, Release.EXPIRED]
    assert len(ledger) == 0 and not ledger.fill(KEY, "resting", 1, at(TTL_S))


def test_without_a_fill_stream_an_id_does_not_wait_for_fills() -> None:
    ledger = PendingOrders(match_fills=False)
    ledger.add(pending_buy(client_order_id="desk00001"))
    (released,) = ledger.settle({"binance": at(0.5)}, at(0.5))
    assert released.why is Release.SHOWN


def test_positions_as_of_is_the_oldest_good_read_and_none_for_a_failed_venue() -> None:
    positions = Collected(desk().positions.frame, (
        source(SourceKind.EXCHANGE, "binance", "main", as_of=at(2)),
        source(SourceKind.EXCHANGE, "binance", "sub", as_of=at(1)),
        source(SourceKind.EXCHANGE, "okx", "main", as_of=at(2)),
        source(SourceKind.EXCHANGE, "okx", "sub", ok=False, as_of=at(3)),
        source(SourceKind.MARKET, "bybit", "", as_of=at(3)),
    ))
    assert positions_as_of(positions) == {"binance": at(1)}


def test_between_evaluations_only_expiry_is_looked_at_and_sums_follow() -> None:
    ledger = PendingOrders(match_fills=True)
    same = {"binance": at(-1)}  # one evaluation's positions, older than every allowance
    for n in range(3):
        ledger.add(replace(pending_buy(1, client_order_id=f"o{n}"),
                           expires_at=at(TTL_S + n)))
        assert ledger.settle(same, at(0.1 * n)) == []
    leg = ("binance", "main", BTC, None)
    assert ledger.exposure().ahead(leg, 1.0) == 3 and ledger.exposure().ahead(leg, -1.0) == 0
    assert ledger.exposure().legs[leg].gross_usd == pytest.approx(3 * 61_000)
    (gone,) = ledger.settle(same, at(TTL_S + 0.5))
    assert gone.why is Release.EXPIRED and gone.order.client_order_id == "o0"
    assert ledger.exposure().ahead(leg, 1.0) == 2
    # a matched fill is news: the next settle looks at everything again
    ledger.fill(KEY, "o1", 1, at(0.5), book_position=11.0)
    (shown,) = ledger.settle(same | {"binance": at(1)}, at(TTL_S + 0.6))
    assert shown.order.client_order_id == "o1" and ledger.exposure().ahead(leg, 1.0) == 1
