"""The service's pending-order ledger: CheckOrder through LiveEvaluation and TradingControl counts
orders it allowed until the evaluated positions show them, atomically across threads."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from risk_monitor.domain.engine import RiskSnapshot
from risk_monitor.domain.model import Collected, SourceKind
from risk_monitor.domain.realised import Fill
from risk_monitor.platform.settings import TradingSettings
from risk_monitor.service.private_stream import FillLedger
from risk_monitor.service.state import LiveEvaluation, OrderRequest
from risk_monitor.service.trading import PENDING_RELEASED, TradingControl
from risk_monitor_tests.unit.domain.builders import NOW, config, desk, source

BTC = "BTC/USDT:USDT"
#: binance BTC: 10 BTC at 61,000; five more 1 BTC buys reach 915k, a sixth 976k, a 7th 1.037M
BTC_NOTIONAL = {"id": "btc", "kind": "max_notional",
                "scope": {"venue": "binance", "instrument": BTC}, "warn": 800000, "breach": 1000000}


def service(ttl_s: float = 5.0, *, fills: FillLedger | None = None
            ) -> tuple[LiveEvaluation, TradingControl]:
    live = LiveEvaluation()
    live.set_limit_config(config(BTC_NOTIONAL, venues=["binance", "okx", "fireblocks"]))
    live.evaluate(desk())
    control = TradingControl(TradingSettings(pending_order_ttl_s=ttl_s), None,
                             inputs=live.latest_inputs)
    if fills is not None:
        control.follow_fills(fills)
    live.trading = control
    return live, control


def buy(qty: float, cid: str = "") -> OrderRequest:
    return OrderRequest("binance", "main", BTC, "buy", qty, client_order_id=cid)


def with_positions_as_of(snapshot: RiskSnapshot, as_of: datetime) -> RiskSnapshot:
    sources = tuple(source(SourceKind.EXCHANGE, s.venue, s.account, as_of=as_of)
                    for s in snapshot.positions.sources)
    return RiskSnapshot(**{**snapshot.__dict__,
                           "positions": Collected(snapshot.positions.frame, sources)})


def test_concurrent_checks_never_both_miss_each_other() -> None:
    live, control = service()
    allowed: list[bool] = []
    start = threading.Barrier(8)

    def desk_thread() -> None:
        start.wait()
        for _ in range(3):
            allowed.append(live.check_order(buy(1), NOW).allowed)

    threads = [threading.Thread(target=desk_thread) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 6  # 610k + 6 x 61k = 976k; a 7th would breach
    assert len(control.pending()) == 6


def test_a_newer_position_snapshot_releases_orders_without_an_id() -> None:
    live, control = service()
    assert live.check_order(buy(6), NOW).allowed  # 976k: WARN
    assert not live.check_order(buy(1), NOW).allowed  # 1.037M with the first in flight
    # the venue's position now shows the 6 BTC, read after the allowance: only that counts
    shown = desk().positions.frame.copy()
    shown.loc[(shown["venue"] == "binance") & (shown["instrument"] == BTC), "quantity"] = 16
    later = NOW + timedelta(seconds=0.3)
    live.evaluate(with_positions_as_of(RiskSnapshot(**{
        **desk().__dict__, "positions": Collected(shown, desk().positions.sources)}), later))
    decision = live.check_order(buy(0.1), later)
    assert decision.allowed  # 982k: the 6 BTC are counted once, in the position
    assert [p.signed_quantity for p in control.pending()] == [0.1]


def test_fills_matched_by_client_order_id_release_and_expiry_is_counted() -> None:
    fills = FillLedger()
    live, control = service(ttl_s=2.0, fills=fills)
    assert live.check_order(buy(6, "desk00001"), NOW).allowed
    later = NOW + timedelta(seconds=0.3)
    # positions read after the allowance but before the fill was seen: still pending
    live.evaluate(with_positions_as_of(desk(), later))
    assert not live.check_order(buy(1, "desk00002"), later).allowed
    seen = later + timedelta(seconds=0.05)
    fills.add(Fill("binance", "main", BTC, "t1", "buy", 6, 61_000, client_order_id="desk00001"),
              seen)
    assert not live.check_order(buy(1, "desk00002"), seen).allowed  # positions not newer
    after_fill = seen + timedelta(seconds=0.1)
    live.evaluate(with_positions_as_of(desk(), after_fill))
    assert live.check_order(buy(1, "desk00003"), after_fill).allowed
    assert [p.client_order_id for p in control.pending()] == ["desk00003"]
    expired = PENDING_RELEASED.labels(venue="binance", why="expired")
    before = expired._value.get()
    assert live.check_order(buy(0.1, "desk00004"), after_fill + timedelta(seconds=2.0)).allowed
    assert expired._value.get() == before + 1
    assert [p.client_order_id for p in control.pending()] == ["desk00004"]


def test_a_position_pushed_before_its_trade_is_matched_by_the_stream_book() -> None:
    fills = FillLedger()
    fills.opening = lambda _key: (10.0, 61_000.0)  # the first REST read: 10 BTC
    live, control = service(fills=fills)
    assert live.check_order(buy(6, "desk00001"), NOW).allowed
    # the evaluation already holds the 16 BTC, stamped before the trade message was handled
    pushed = NOW + timedelta(seconds=0.2)
    shown = desk().positions.frame.copy()
    shown.loc[(shown["venue"] == "binance") & (shown["instrument"] == BTC), "quantity"] = 16
    live.evaluate(with_positions_as_of(RiskSnapshot(**{
        **desk().__dict__, "positions": Collected(shown, desk().positions.sources)}), pushed))
    fills.add(Fill("binance", "main", BTC, "t1", "buy", 6, 61_000, client_order_id="desk00001"),
              pushed + timedelta(seconds=0.01))
    assert live.check_order(buy(0.1, "desk00002"), pushed + timedelta(seconds=0.1)).allowed
    assert [p.client_order_id for p in control.pending()] == ["desk00002"]
