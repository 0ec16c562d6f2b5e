"""The simulated desk's expected book follows the same trade rules as the venues."""

from __future__ import annotations

from decimal import Decimal as D

from risk_sim.trading.desk import BookPosition, Decision, ExpectedBook, TimelineEvent
from risk_sim.trading.scenarios import SCRIPTS
from risk_sim.trading.session import limits_document


def test_increase_reduce_flip_and_close() -> None:
    pos = BookPosition()
    assert pos.apply("buy", D("1"), D("100"), D("0.05")) == 0
    assert pos.apply("buy", D("3"), D("200"), D("0.3")) == 0
    assert (pos.quantity, pos.entry) == (D("4"), D("175"))  # size-weighted entry
    assert pos.apply("sell", D("1"), D("195"), D("0.1")) == D("20")  # (195 - 175) * 1
    assert pos.entry == D("175")  # a reduce keeps the entry
    assert pos.apply("sell", D("5"), D("150"), D("0.4")) == D("-75")  # closes 3, opens 2 short
    assert (pos.quantity, pos.entry) == (D("-2"), D("150"))
    assert pos.apply("buy", D("2"), D("140"), D("0.1")) == D("20")  # short profits on the way down
    assert (pos.quantity, pos.entry, pos.realized, pos.fees) == (D("0"), D("0"), D("-35"),
                                                                 D("0.95"))


def test_book_nets_position_sides_per_venue_and_symbol() -> None:
    book = ExpectedBook()
    book.apply("okx", "main", "BTC/USDT:USDT", "long", "buy", D("5"), D("60000"), D("1"))
    book.apply("okx", "main", "BTC/USDT:USDT", "short", "sell", D("2"), D("60000"), D("1"))
    book.apply("binance", "main", "BTC/USDT:USDT", "net", "sell", D("1"), D("60000"), D("1"))
    assert book.quantity("okx", "BTC/USDT:USDT") == D("3")
    assert book.quantity("binance", "BTC/USDT:USDT") == D("-1")
    assert book.fees() == D("3")


def test_timeline_line_and_scenario_catalogue() -> None:
    line = TimelineEvent(1.5, "decision", "binance", "BTC/USDT:USDT", "desk00001 DENY").line()
    assert "decision" in line and "desk00001 DENY" in line and line.startswith("   1.50s")
    assert set(SCRIPTS) == {"active_trading", "fat_finger", "runaway_algo",
                            "venue_outage_while_trading"}
    assert not Decision(False).allowed


def test_scenario_limits_become_the_services_limit_document() -> None:
    document = limits_document([
        {"id": "a", "kind": "max_notional", "venue": "binance", "instrument": "BTC/USDT:USDT",
         "warn": 1, "breach": 2},
        {"id": "b", "kind": "data_age", "venue": "*", "warn": 15, "breach": 30}])
    assert document["limits"][0] == {"id": "a", "kind": "max_notional", "warn": 1, "breach": 2,
                                     "scope": {"venue": "binance",
                                               "instrument": "BTC/USDT:USDT"}}
    assert document["limits"][1]["scope"] == {"venue": "*"}


def test_demo_dispatches_trading_scenarios_to_the_desk() -> None:
    from risk_sim.trading.demo import is_trading_scenario

    assert all(is_trading_scenario(name) for name in SCRIPTS)
    assert not is_trading_scenario("calm") and not is_trading_scenario("limit_breach")
