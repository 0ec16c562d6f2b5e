"""A fill's fee is a charge (positive) whichever ccxt parser produced the trade."""
from __future__ import annotations

from typing import Any

from risk_monitor.adapters.ccxt_trades import map_trade


def _trade(fee_cost: float, info: dict[str, Any]) -> dict[str, Any]:
    return {"id": "t1", "symbol": "BTC/USDT:USDT", "side": "buy", "amount": 1.0,
            "price": 60_000.0, "timestamp": 1_700_000_000_000, "order": "o1",
            "fee": {"cost": fee_cost, "currency": "USDT"}, "info": info}


def test_okx_stream_fill_fee_is_a_charge() -> None:
    # ccxt.pro okx order_to_trade: OKX's native fillFee, negative for a charge
    fill = map_trade(_trade(-18.0049, {"fillFee": "-18.0049", "fillFeeCcy": "USDT"}),
                     venue="okx", account="main")
    assert fill.fee == 18.0049


def test_okx_rest_fill_fee_stays_a_charge() -> None:
    # ccxt's okx REST parse_trade already negates OKX's "fee"
    fill = map_trade(_trade(18.0049, {"fee": "-18.0049", "feeCcy": "USDT"}),
                     venue="okx", account="main")
    assert fill.fee == 18.0049


def test_a_fixed_ccxt_is_not_flipped_twice() -> None:
    fill = map_trade(_trade(18.0049, {"fillFee": "-18.0049"}), venue="okx", account="main")
    assert fill.fee == 18.0049


def test_binance_fill_fee_is_kept() -> None:
    fill = map_trade(_trade(12.0, {"n": "12.0", "N": "USDT"}), venue="binance", account="main")
    assert fill.fee == 12.0
