"""Orders through ccxt create_order move positions, wallets and realized P&L by the venue rules.

Every expected number is computed here from the quote seen just before the order and the
documented rules (fill at the touch, weighted average entry, realized = (exit - entry) * qty *
sign, taker fee = qty * price * rate charged in the settle asset).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import ccxt
import pytest

from risk_monitor_tests.fixtures.sims import ccxt_client
from risk_sim.launcher import SimulatorStack

from .helpers import clear_positions

pytestmark = pytest.mark.integration
BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"


def fee_rate(sim: SimulatorStack, venue: str) -> Decimal:
    return sim.market.venues[venue].taker_fee


def touch(sim: SimulatorStack, venue: str, symbol: str, side: str) -> Decimal:
    quote = sim.market.quote(venue, symbol)
    return quote.ask if side == "buy" else quote.bid


def q8(value: Decimal) -> Decimal:
    return value.quantize(Decimal("1e-8"))


def binance_wallet(exchange: Any) -> Decimal:
    balance = exchange.fetch_balance()
    [usdt] = [a for a in balance["info"]["assets"] if a["asset"] == "USDT"]
    return Decimal(usdt["walletBalance"])


def positions_by_side(exchange: Any, symbol: str) -> dict[str, dict[str, Any]]:
    return {p["side"]: p for p in exchange.fetch_positions([symbol])}


def test_binance_one_way_open_add_reduce_flip_close(sim: SimulatorStack) -> None:
    clear_positions(sim, "binance")
    exchange = ccxt_client(sim, "binance", "sync")
    exchange.load_markets()
    rate = fee_rate(sim, "binance")
    wallet = binance_wallet(exchange)
    sim.market.set_price(BTC, 60000)

    # open long 0.5 BTC at the ask
    price1 = touch(sim, "binance", BTC, "buy")
    order = exchange.create_order(BTC, "market", "buy", 0.5)
    assert (order["status"], order["filled"], order["average"]) == ("closed", 0.5, float(price1))
    wallet -= q8(Decimal("0.5") * price1 * rate)
    [long] = exchange.fetch_positions([BTC])
    assert (long["side"], long["contracts"], long["entryPrice"]) == ("long", 0.5, float(price1))

    # add 1.5 BTC higher up: the entry is the size-weighted average
    sim.market.set_price(BTC, 62000)
    price2 = touch(sim, "binance", BTC, "buy")
    exchange.create_order(BTC, "market", "buy", 1.5)
    wallet -= q8(Decimal("1.5") * price2 * rate)
    entry = (Decimal("0.5") * price1 + Decimal("1.5") * price2) / 2
    [long] = exchange.fetch_positions([BTC])
    assert long["contracts"] == 2.0
    assert long["entryPrice"] == pytest.approx(float(entry), abs=1e-6)

    # partial close 0.8 BTC: realized P&L and the fee hit the wallet
    sim.market.set_price(BTC, 63000)
    price3 = touch(sim, "binance", BTC, "sell")
    exchange.create_order(BTC, "market", "sell", 0.8)
    realized = q8((price3 - entry) * Decimal("0.8"))
    fee = q8(Decimal("0.8") * price3 * rate)
    wallet += realized - fee
    trade = exchange.fetch_my_trades(BTC)[-1]
    assert Decimal(trade["info"]["realizedPnl"]) == realized
    assert Decimal(str(trade["fee"]["cost"])) == fee and trade["fee"]["currency"] == "USDT"
    assert binance_wallet(exchange) == wallet
    [long] = exchange.fetch_positions([BTC])
    assert long["contracts"] == pytest.approx(1.2)
    assert long["entryPrice"] == pytest.approx(float(entry), abs=1e-6)  # unchanged by a reduce

    # flip: selling 2.0 closes 1.2 and opens 0.8 short at the fill price
    sim.market.set_price(BTC, 61000)
    price4 = touch(sim, "binance", BTC, "sell")
    exchange.create_order(BTC, "market", "sell", 2.0)
    wallet += q8((price4 - entry) * Decimal("1.2")) - q8(Decimal("2.0") * price4 * rate)
    [short] = exchange.fetch_positions([BTC])
    assert (short["side"], short["contracts"], short["entryPrice"]) == \
        ("short", pytest.approx(0.8), float(price4))
    assert binance_wallet(exchange) == wallet

    # reduceOnly larger than the position only closes it
    price5 = touch(sim, "binance", BTC, "buy")
    order = exchange.create_order(BTC, "market", "buy", 5, params={"reduceOnly": True})
    assert order["filled"] == pytest.approx(0.8)
    wallet += q8((price5 - price4) * Decimal("0.8") * -1) - q8(Decimal("0.8") * price5 * rate)
    assert exchange.fetch_positions([BTC]) == []
    assert binance_wallet(exchange) == wallet
    with pytest.raises(ccxt.ExchangeError, match="-2022"):  # nothing left to reduce
        exchange.create_order(BTC, "market", "buy", 1, params={"reduceOnly": True})


def test_binance_hedge_mode_long_and_short(sim: SimulatorStack) -> None:
    clear_positions(sim, "binance")
    exchange = ccxt_client(sim, "binance", "sync")
    exchange.load_markets()
    exchange.set_position_mode(True)
    assert exchange.fetch_position_mode()["hedged"] is True
    sim.market.set_price(ETH, 3000)
    long_entry = touch(sim, "binance", ETH, "buy")
    exchange.create_order(ETH, "market", "buy", 10, params={"positionSide": "LONG"})
    short_entry = touch(sim, "binance", ETH, "sell")
    exchange.create_order(ETH, "market", "sell", 4, params={"positionSide": "SHORT"})
    sides = positions_by_side(exchange, ETH)
    assert (sides["long"]["contracts"], sides["long"]["entryPrice"]) == (10, float(long_entry))
    assert (sides["short"]["contracts"], sides["short"]["entryPrice"]) == (4, float(short_entry))

    sim.market.set_price(ETH, 3200)
    exit_long = touch(sim, "binance", ETH, "sell")
    exchange.create_order(ETH, "market", "sell", 6, params={"positionSide": "LONG"})
    exit_short = touch(sim, "binance", ETH, "buy")
    exchange.create_order(ETH, "market", "buy", 4, params={"positionSide": "SHORT"})
    trades = exchange.fetch_my_trades(ETH)
    assert Decimal(trades[-2]["info"]["realizedPnl"]) == q8((exit_long - long_entry) * 6)
    assert Decimal(trades[-1]["info"]["realizedPnl"]) == q8((exit_short - short_entry) * 4 * -1)
    assert set(positions_by_side(exchange, ETH)) == {"long"}
    assert positions_by_side(exchange, ETH)["long"]["contracts"] == 4

    with pytest.raises(ccxt.OperationRejected, match="-4061"):  # no positionSide in hedge mode
        exchange.create_order(ETH, "market", "buy", 1)
    with pytest.raises(ccxt.ExchangeError, match="-4068"):  # mode change with open positions
        exchange.set_position_mode(False)


def okx_cash(exchange: Any) -> Decimal:
    balance = exchange.fetch_balance()
    [usdt] = [d for d in balance["info"]["data"][0]["details"] if d["ccy"] == "USDT"]
    return Decimal(usdt["cashBal"])


def test_okx_hedge_mode_contracts_fees_and_realized_pnl(sim: SimulatorStack) -> None:
    clear_positions(sim, "okx")
    exchange = ccxt_client(sim, "okx", "sync")
    exchange.load_markets()
    contract = Decimal(str(exchange.market(ETH)["contractSize"]))
    assert contract == Decimal("0.1")
    rate = fee_rate(sim, "okx")
    cash = okx_cash(exchange)
    sim.market.set_price(ETH, 3000)

    entry1 = touch(sim, "okx", ETH, "buy")
    exchange.create_order(ETH, "market", "buy", 100, params={"posSide": "long"})
    sim.market.set_price(ETH, 3050)
    entry2 = touch(sim, "okx", ETH, "buy")
    exchange.create_order(ETH, "market", "buy", 300, params={"posSide": "long"})
    short_entry = touch(sim, "okx", ETH, "sell")
    exchange.create_order(ETH, "market", "sell", 50, params={"posSide": "short"})
    cash -= q8(100 * contract * entry1 * rate) + q8(300 * contract * entry2 * rate) + \
        q8(50 * contract * short_entry * rate)
    entry = (100 * entry1 + 300 * entry2) / 400
    sides = positions_by_side(exchange, ETH)
    assert sides["long"]["contracts"] == 400
    assert sides["long"]["entryPrice"] == pytest.approx(float(entry), abs=1e-6)
    assert sides["long"]["notional"] == pytest.approx(
        400 * 0.1 * float(sim.market.quote("okx", ETH).mark))
    assert sides["short"]["contracts"] == 50

    sim.market.set_price(ETH, 3100)
    exit_price = touch(sim, "okx", ETH, "sell")
    exchange.create_order(ETH, "market", "sell", 150, params={"posSide": "long"})
    realized = q8((exit_price - entry) * 150 * contract)
    fee = q8(150 * contract * exit_price * rate)
    cash += realized - fee
    sides = positions_by_side(exchange, ETH)
    assert sides["long"]["contracts"] == 250
    info = sides["long"]["info"]
    assert Decimal(info["pnl"]) == realized  # trade P&L of this position so far
    fees_so_far = q8(100 * contract * entry1 * rate) + q8(300 * contract * entry2 * rate) + fee
    assert Decimal(info["fee"]) == -fees_so_far  # OKX reports fees as negative numbers
    assert Decimal(info["realizedPnl"]) == realized - fees_so_far
    assert sides["long"]["realizedPnl"] == pytest.approx(float(realized - fees_so_far))
    assert okx_cash(exchange) == cash

    with pytest.raises(ccxt.InvalidOrder, match="51205"):  # closing more than the short holds
        exchange.create_order(ETH, "market", "buy", 51, params={"posSide": "short"})


def test_okx_one_way_flip_and_reduce_only(sim: SimulatorStack) -> None:
    clear_positions(sim, "okx")
    exchange = ccxt_client(sim, "okx", "sync")
    exchange.load_markets()
    exchange.set_position_mode(False)
    assert exchange.fetch_position_mode()["hedged"] is False
    sim.market.set_price(BTC, 60000)
    contract = Decimal("0.01")
    entry = touch(sim, "okx", BTC, "buy")
    exchange.create_order(BTC, "market", "buy", 10)
    sim.market.set_price(BTC, 59000)
    flip = touch(sim, "okx", BTC, "sell")
    exchange.create_order(BTC, "market", "sell", 25)
    [short] = exchange.fetch_positions([BTC])
    assert (short["side"], short["contracts"], short["entryPrice"]) == ("short", 15, float(flip))
    assert Decimal(short["info"]["pos"]) == -15
    trades = sim.market.account("okx").trades
    assert trades[-1].realized_pnl == q8((flip - entry) * 10 * contract)
    exchange.create_order(BTC, "market", "buy", 30, params={"reduceOnly": True})
    assert exchange.fetch_positions([BTC]) == []
    with pytest.raises(ccxt.ExchangeError, match="51169"):
        exchange.create_order(BTC, "market", "sell", 1, params={"reduceOnly": True})


def test_okx_single_order_route_and_leverage(sim: SimulatorStack) -> None:
    clear_positions(sim, "okx")
    exchange = ccxt_client(sim, "okx", "sync")
    exchange.options["createOrder"] = "privatePostTradeOrder"  # instead of batch-orders
    exchange.load_markets()
    exchange.set_leverage(3, ETH, {"mgnMode": "cross"})
    assert sim.market.account("okx").leverage_for(ETH) == 3
    exchange.create_order(ETH, "market", "buy", 20, params={"posSide": "long"})
    [position] = exchange.fetch_positions([ETH])
    assert (position["contracts"], position["leverage"]) == (20, 3)
    assert position["initialMargin"] == pytest.approx(position["notional"] / 3)
    paths = [r["path"] for r in sim.venue("okx").requests]
    assert {"/api/v5/trade/order", "/api/v5/account/set-leverage"} <= set(paths)


def test_insufficient_margin_is_refused(sim: SimulatorStack) -> None:
    exchange = ccxt_client(sim, "okx", "sync")
    exchange.load_markets()
    sim.market.set_balance("okx", "main", "USDT", 100)
    with pytest.raises(ccxt.InsufficientFunds, match="51008"):
        exchange.create_order(BTC, "market", "buy", 100, params={"posSide": "long"})
