"""The market model alone: deterministic prices, scheduled moves, and the venue trading rules.

Expected values are computed here from the documented rules (fill at the touch, weighted
average entry, realized P&L = (exit - entry) * qty * sign, taker fee on the fill's notional),
never copied from the simulator's output.
"""

from __future__ import annotations

import math
import threading
from decimal import Decimal

import pytest

from risk_sim.market import (
    AccountSpec,
    Clock,
    InstrumentSpec,
    Market,
    MarketSpec,
    OrderRejected,
    PositionSpec,
    StateConflict,
    VenueSpec,
)

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"
TAKER = Decimal("0.0005")


def make_market(seed: int = 7, volatility: float = 0.5, *, okx_mode: str = "one_way",
                balance: str = "1000000", clock: Clock | None = None) -> Market:
    spec = MarketSpec(
        seed=seed,
        instruments=[InstrumentSpec(BTC, Decimal(60000), volatility=volatility),
                     InstrumentSpec(ETH, Decimal(3000), volatility=volatility)],
        venues=[
            VenueSpec("binance", taker_fee=TAKER,
                      accounts=[AccountSpec(balances={"USDT": Decimal(balance)})]),
            VenueSpec("okx", basis_bps=2.0, taker_fee=TAKER,
                      accounts=[AccountSpec(position_mode=okx_mode,  # type: ignore[arg-type]
                                            balances={"USDT": Decimal(balance)})]),
        ])
    return Market(spec, clock)


def prices(market: Market) -> dict[str, dict[str, dict[str, str]]]:
    return market.state()["prices"]  # type: ignore[no-any-return]


def test_same_seed_gives_the_same_path_whatever_the_advance_pattern() -> None:
    a, b, c = make_market(seed=11), make_market(seed=11), make_market(seed=12)
    a.advance(120)
    for _ in range(120):
        b.advance(1)
    c.advance(120)
    assert prices(a) == prices(b)
    assert prices(a) != prices(c)
    assert prices(a)["binance"][BTC]["last"] != "60000"  # the walk moved


def test_a_move_is_linear_in_log_and_exact_at_its_end() -> None:
    market = make_market(volatility=0.0)
    market.move_price(BTC, -15, over=10)
    market.advance(5)
    halfway = float(market.quote("binance", BTC).last)
    assert halfway == pytest.approx(60000 * 0.85 ** 0.5, abs=0.1)
    market.advance(5)
    assert market.quote("binance", BTC).last == Decimal("51000.0")
    market.advance(100)  # the move stays applied
    assert market.quote("binance", BTC).last == Decimal("51000.0")


def test_a_price_path_is_followed_then_kept() -> None:
    market = make_market(volatility=0.0)
    market.price_path(ETH, [(0, 3000), (10, 2000), (20, 2500)])
    market.advance(5)
    assert market.quote("binance", ETH).last == Decimal("2500.00")
    market.advance(10)
    assert market.quote("binance", ETH).last == Decimal("2250.00")
    market.advance(50)
    assert market.quote("binance", ETH).last == Decimal("2500.00")


def test_venue_basis_and_venue_only_prices() -> None:
    market = make_market(volatility=0.0)
    binance, okx = market.quote("binance", BTC), market.quote("okx", BTC)
    assert binance.last == Decimal("60000.0")
    assert okx.last == Decimal("60012.0")  # 2 bp basis
    assert okx.index == binance.index == Decimal("60000.0")
    market.set_price(BTC, 59000, venue="okx")
    assert market.quote("okx", BTC).last == Decimal("59000.0")
    assert market.quote("binance", BTC).last == Decimal("60000.0")
    market.set_price(BTC, 61000)  # all venues, basis kept
    assert market.quote("binance", BTC).last == Decimal("61000.0")
    assert market.quote("okx", BTC).last == Decimal("61012.2")


def test_quotes_have_spread_and_mark_premium_on_the_tick() -> None:
    market = make_market(volatility=0.0)
    q = market.quote("binance", BTC)
    assert q.bid < q.last < q.ask
    assert q.mark == Decimal("60003.0")  # 0.5 bp premium
    for value in (q.bid, q.ask, q.mark):
        assert value % Decimal("0.1") == 0


def test_listeners_hear_about_price_changes() -> None:
    market = make_market(volatility=0.0)
    heard: list[dict[str, set[str]]] = []
    market.subscribe(heard.append)
    market.set_price(ETH, 2900)
    assert heard[-1] == {"binance": {ETH}, "okx": {ETH}}
    heard.clear()
    market.advance(10)  # no volatility, nothing moves, nobody is told
    assert heard == []


def test_one_way_open_add_partial_close_flip_follow_the_rules() -> None:
    market = make_market(volatility=0.0)
    wallet = Decimal("1000000")

    # open long 0.5 at the ask
    ask = market.quote("binance", BTC).ask
    order = market.place_order("binance", "main", BTC, side="buy", amount="0.5")
    assert order.average == ask
    fee1 = Decimal("0.5") * ask * TAKER
    assert order.fee == fee1.quantize(Decimal("1e-8"))
    wallet -= order.fee

    # add 1.5 at a higher price: weighted average entry
    market.set_price(BTC, 62000)
    ask2 = market.quote("binance", BTC).ask
    order = market.place_order("binance", "main", BTC, side="buy", amount="1.5")
    wallet -= order.fee
    entry = (Decimal("0.5") * ask + Decimal("1.5") * ask2) / 2
    [pos] = market.positions("binance", "main")
    assert pos.contracts == Decimal(2)
    assert pos.side == "long"
    assert pos.position.entry_price == pytest.approx(entry, abs=Decimal("1e-9"))

    # partial close 0.8 at the bid: realized = (exit - entry) * qty * +1
    market.set_price(BTC, 63000)
    bid = market.quote("binance", BTC).bid
    order = market.place_order("binance", "main", BTC, side="sell", amount="0.8")
    realized = (bid - pos.position.entry_price) * Decimal("0.8")
    assert order.realized_pnl == pytest.approx(realized, abs=Decimal("1e-8"))
    assert order.fee == (Decimal("0.8") * bid * TAKER).quantize(Decimal("1e-8"))
    wallet += order.realized_pnl - order.fee
    [pos] = market.positions("binance", "main")
    assert pos.contracts == Decimal("1.2")
    assert pos.position.entry_price == pytest.approx(entry, abs=Decimal("1e-9"))

    # flip: sell 2.0 closes 1.2 and opens a 0.8 short at the fill price
    market.set_price(BTC, 61000)
    bid = market.quote("binance", BTC).bid
    order = market.place_order("binance", "main", BTC, side="sell", amount="2")
    assert order.realized_pnl == pytest.approx((bid - entry) * Decimal("1.2"),
                                               abs=Decimal("1e-8"))
    wallet += order.realized_pnl - order.fee
    [pos] = market.positions("binance", "main")
    assert (pos.side, pos.contracts, pos.position.entry_price) == ("short", Decimal("0.8"), bid)

    [balance] = market.balances("binance", "main")
    assert balance.wallet == wallet
    mark = market.quote("binance", BTC).mark
    assert balance.unrealized_pnl == ((mark - bid) * Decimal("-0.8")).quantize(Decimal("1e-8"))


def test_reduce_only_is_clipped_and_refused_when_it_would_not_reduce() -> None:
    market = make_market(volatility=0.0)
    market.place_order("binance", "main", BTC, side="buy", amount="1")
    with pytest.raises(OrderRejected) as rejected:
        market.place_order("binance", "main", BTC, side="buy", amount="1", reduce_only=True)
    assert rejected.value.reason == "reduce_only_rejected"
    order = market.place_order("binance", "main", BTC, side="sell", amount="3",
                               reduce_only=True)
    assert order.filled == Decimal(1)
    assert market.positions("binance", "main") == []


def test_hedge_mode_keeps_long_and_short_apart() -> None:
    market = make_market(volatility=0.0, okx_mode="hedge")
    cs = Decimal("0.01")  # OKX BTC contract size
    ask = market.quote("okx", BTC).ask
    market.place_order("okx", "main", BTC, side="buy", amount="300", position_side="long")
    bid = market.quote("okx", BTC).bid
    market.place_order("okx", "main", BTC, side="sell", amount="100", position_side="short")
    views = {v.side: v for v in market.positions("okx", "main")}
    assert views["long"].contracts == 300
    assert views["long"].quantity == Decimal(3)
    assert views["short"].contracts == 100
    assert views["short"].quantity == Decimal(-1)
    assert views["long"].position.entry_price == ask
    assert views["short"].position.entry_price == bid

    market.set_price(BTC, 58000)
    close = market.quote("okx", BTC).ask
    order = market.place_order("okx", "main", BTC, side="buy", amount="40",
                               position_side="short")
    assert order.realized_pnl == pytest.approx((close - bid) * 40 * cs * -1, abs=Decimal("1e-8"))
    assert {v.side: v.contracts for v in market.positions("okx", "main")} == \
        {"long": 300, "short": 60}

    with pytest.raises(OrderRejected) as too_much:
        market.place_order("okx", "main", BTC, side="buy", amount="61", position_side="short")
    assert too_much.value.reason == "reduce_exceeds_position"
    with pytest.raises(OrderRejected) as no_side:
        market.place_order("okx", "main", BTC, side="buy", amount="1")
    assert no_side.value.reason == "position_side_required"
    with pytest.raises(OrderRejected) as reduce_only:
        market.place_order("okx", "main", BTC, side="sell", amount="1", position_side="long",
                           reduce_only=True)
    assert reduce_only.value.reason == "reduce_only_not_allowed"


def test_orders_are_refused_for_margin_lot_size_and_resting_limits() -> None:
    market = make_market(volatility=0.0, balance="1000")
    with pytest.raises(OrderRejected) as margin:
        market.place_order("binance", "main", BTC, side="buy", amount="1")  # needs ~6000
    assert margin.value.reason == "insufficient_margin"
    with pytest.raises(OrderRejected) as lot:
        market.place_order("binance", "main", BTC, side="buy", amount="0.0001")
    assert lot.value.reason == "bad_quantity"
    bid = market.quote("binance", BTC).bid
    with pytest.raises(OrderRejected) as rest:
        market.place_order("binance", "main", BTC, side="buy", amount="0.01",
                           order_type="limit", price=bid)
    assert rest.value.reason == "would_rest"
    ask = market.quote("binance", BTC).ask
    order = market.place_order("binance", "main", BTC, side="buy", amount="0.01",
                               order_type="limit", price=ask + 100)
    assert order.average == ask  # a marketable limit fills at the touch


def test_margin_and_liquidation_follow_the_documented_rule() -> None:
    market = make_market(volatility=0.0)
    market.set_leverage("binance", "main", BTC, 20)
    market.set_position("binance", "main", BTC, side="long", contracts="2", entry_price="50000")
    market.set_position("binance", "main", ETH, side="short", contracts="10",
                        entry_price="3100")
    views = {v.symbol: v for v in market.positions("binance", "main")}
    btc, eth = views[BTC], views[ETH]
    mmr_btc, mmr_eth = Decimal("0.004"), Decimal("0.005")
    assert float(btc.liquidation_price) == pytest.approx(
        50000 * (1 - 1 / 20) / (1 - float(mmr_btc)), abs=0.1)
    assert float(eth.liquidation_price) == pytest.approx(
        3100 * (1 + 1 / 10) / (1 + float(mmr_eth)), abs=0.01)
    assert btc.initial_margin == btc.notional / 20
    assert btc.maint_margin == btc.notional * mmr_btc
    [balance] = market.balances("binance", "main")
    assert balance.available == balance.wallet + balance.unrealized_pnl - balance.initial_margin
    assert balance.initial_margin == btc.initial_margin + eth.initial_margin


def test_position_mode_cannot_change_with_open_positions() -> None:
    market = make_market(volatility=0.0)
    market.set_position("binance", "main", BTC, side="long", contracts="1")
    with pytest.raises(StateConflict):
        market.set_position_mode("binance", "main", "hedge")
    market.set_position("binance", "main", BTC, side="long", contracts="0")
    market.set_position_mode("binance", "main", "hedge")
    assert market.account("binance").position_mode == "hedge"


def test_credentials_are_derived_from_the_seed() -> None:
    a, b, c = make_market(seed=1), make_market(seed=1), make_market(seed=2)
    assert a.credentials() == b.credentials()
    assert a.credentials() != c.credentials()
    okx = a.credentials()["okx"]["main"]
    assert okx["password"] and okx["api_key"] != a.credentials()["binance"]["main"]["api_key"]


def test_initial_positions_come_from_the_spec() -> None:
    spec = MarketSpec(seed=3, instruments=[InstrumentSpec(BTC, Decimal(60000))], venues=[
        VenueSpec("binance", accounts=[AccountSpec(
            balances={"USDT": Decimal(10)},
            positions=[PositionSpec(BTC, "short", Decimal("0.25"), Decimal(61000))])])])
    market = Market(spec)
    [pos] = market.positions("binance", "main")
    assert (pos.side, pos.contracts, pos.position.entry_price) == \
        ("short", Decimal("0.25"), Decimal(61000))
    assert market.instruments.keys() == {"binance"}


def test_the_realtime_clock_publishes_by_itself() -> None:
    market = make_market(volatility=2.0, clock=Clock("realtime"))
    moved = threading.Event()
    market.subscribe(lambda changes: moved.set())
    market.start_clock_driver(interval=0.05)
    try:
        assert moved.wait(10), "no price change published within 10 s"
        assert market.quote("binance", BTC).elapsed > 0
    finally:
        market.stop_clock_driver()
    market.clock.advance(100)  # a realtime clock can jump ahead
    assert market.clock.elapsed() >= 100
    assert math.isfinite(float(market.quote("okx", ETH).last))
