"""Payload -> frame mapping of the ccxt and Fireblocks adapters, on payload dicts (no server)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import ccxt
import pandas as pd
import pytest

from risk_monitor.adapters.ccxt_mapping import map_balance, map_positions, map_tickers
from risk_monitor.adapters.fireblocks_custodian import map_vault_accounts
from risk_monitor.domain.schemas import (
    balance_rules,
    position_rules,
    price_rules,
    validate_frame,
)
from risk_monitor.platform.errors import DataValidationError

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
MS = 1772600767000  # 2026-03-04T05:06:07Z
MARKETS = {
    "BTC/USDT:USDT": {"base": "BTC", "quote": "USDT", "settle": "USDT", "contractSize": 0.01},
    "ETH/USDT:USDT": {"base": "ETH", "quote": "USDT", "settle": "USDT", "contractSize": 1.0},
}


def unified_position(**changes: Any) -> dict[str, Any]:
    row = {"symbol": "BTC/USDT:USDT", "contracts": 50.0, "contractSize": 0.01, "side": "long",
           "entryPrice": 59000.0, "markPrice": 60003.0, "unrealizedPnl": 501.5,
           "realizedPnl": None, "leverage": 10.0, "liquidationPrice": 53313.3,
           "marginMode": "cross", "timestamp": MS - 60_000, "lastUpdateTimestamp": None,
           "info": {}}
    row.update(changes)
    return row


def test_positions_map_to_signed_base_quantities_in_hedge_mode() -> None:
    frame = map_positions(
        [unified_position(),
         unified_position(side="short", contracts=20.0, entryPrice=61000.0,
                          unrealizedPnl=199.4, lastUpdateTimestamp=MS - 1000),
         unified_position(symbol="ETH/USDT:USDT", contracts=0.0)],  # flat: dropped
        venue="okx", account="main", markets=MARKETS, received_at=NOW)
    validate_frame(frame, position_rules(now=NOW, max_age_s=60), source="okx")
    assert list(frame["position_side"]) == ["long", "short"]
    assert frame["quantity"].tolist() == pytest.approx([0.5, -0.2])
    assert frame["notional"].tolist() == pytest.approx([0.5 * 60003.0, 0.2 * 60003.0])
    assert frame["settle"].tolist() == ["USDT", "USDT"]
    assert math.isnan(frame["realized_pnl"].iloc[0])
    # the venue's last update of the position, else its creation time
    assert frame["timestamp"].tolist() == [pd.Timestamp(MS - 60_000, unit="ms", tz="UTC"),
                                           pd.Timestamp(MS - 1000, unit="ms", tz="UTC")]
    assert (frame["received_at"] == pd.Timestamp(NOW)).all()


def test_position_side_falls_back_to_the_raw_payload() -> None:
    one_way = unified_position(side=None, info={"positionAmt": "-3", "positionSide": "BOTH"},
                               contracts=3.0, contractSize=None)
    frame = map_positions([one_way], venue="binance", account="main", markets=MARKETS,
                          received_at=NOW)
    assert frame["position_side"].iloc[0] == "short"
    assert frame["quantity"].iloc[0] == pytest.approx(-0.03)  # size from the market


def test_a_position_with_no_side_at_all_fails_validation() -> None:
    frame = map_positions([unified_position(side=None, info={})], venue="okx",
                          account="main", markets=MARKETS, received_at=NOW)
    with pytest.raises(DataValidationError):
        validate_frame(frame, position_rules(), source="okx")


BINANCE_V3_ACCOUNT = {
    "assets": [
        {"asset": "USDT", "walletBalance": "250000", "unrealizedProfit": "5001.5",
         "marginBalance": "255001.5", "initialMargin": "24001.2", "maintMargin": "1200",
         "availableBalance": "231000.3", "updateTime": MS},
        {"asset": "BTC", "walletBalance": "0.5", "unrealizedProfit": "0",
         "marginBalance": "0.5", "initialMargin": "0", "availableBalance": "0.5",
         "updateTime": MS},
        {"asset": "BNB", "walletBalance": "0", "unrealizedProfit": "0", "marginBalance": "0",
         "initialMargin": "0", "availableBalance": "0", "updateTime": 0},
    ],
    "positions": [],
}


def test_binance_total_is_the_wallet_balance_not_ccxts_margin_balance() -> None:
    parsed = ccxt.binanceusdm().parse_balance_custom(BINANCE_V3_ACCOUNT, "linear")
    assert parsed["USDT"]["total"] == pytest.approx(255001.5)  # ccxt: includes uPnL
    frame = map_balance(parsed, exchange_id="binanceusdm", venue="binance", account="main",
                        received_at=NOW)
    validate_frame(frame, balance_rules(now=NOW, max_age_s=60), source="binance")
    usdt = frame.set_index("asset").loc["USDT"]
    assert usdt["total"] == pytest.approx(250000.0)
    assert usdt["used"] == pytest.approx(24001.2)
    assert usdt["free"] == pytest.approx(250000.0 - 24001.2)
    assert sorted(frame["asset"]) == ["BTC", "USDT"]  # zero / uninitialised assets dropped
    assert usdt["timestamp"] == pd.Timestamp(MS, unit="ms", tz="UTC")


OKX_BALANCE = {"code": "0", "msg": "", "data": [{
    "uTime": str(MS), "totalEq": "121001.35",
    "details": [{"ccy": "USDT", "eq": "121001.35", "cashBal": "120000", "upl": "1001.35",
                 "availBal": "114899.745", "availEq": "115901.095", "frozenBal": "5100.255",
                 "uTime": str(MS - 5000)}],
}]}


def test_okx_total_is_the_cash_balance_not_ccxts_equity() -> None:
    parsed = ccxt.okx().parse_trading_balance(OKX_BALANCE)
    assert parsed["USDT"]["total"] == pytest.approx(121001.35)  # ccxt: eq includes uPnL
    frame = map_balance(parsed, exchange_id="okx", venue="okx", account="main",
                        received_at=NOW)
    validate_frame(frame, balance_rules(now=NOW, max_age_s=60), source="okx")
    row = frame.iloc[0]
    assert (row["total"], row["used"]) == pytest.approx((120000.0, 5100.255))
    assert row["free"] == pytest.approx(120000.0 - 5100.255)
    assert row["timestamp"] == pd.Timestamp(MS - 5000, unit="ms", tz="UTC")


def test_locked_margin_above_the_wallet_is_clipped_so_free_is_never_negative() -> None:
    payload = {"info": {"assets": [{"asset": "USDT", "walletBalance": "100",
                                    "initialMargin": "150", "updateTime": MS}]}}
    frame = map_balance(payload, exchange_id="binanceusdm", venue="binance", account="main",
                        received_at=NOW)
    assert frame[["free", "used", "total"]].iloc[0].tolist() == [0.0, 100.0, 100.0]


def test_other_venues_use_the_unified_balance() -> None:
    payload = {"info": {}, "timestamp": None, "USDC": {"free": 5.0, "used": 1.5, "total": None},
               "ETH": {"free": 0.0, "used": 0.0, "total": 0.0},
               "free": {"USDC": 5.0}, "used": {}, "total": {}}
    frame = map_balance(payload, exchange_id="kraken", venue="kraken", account="main",
                        received_at=NOW)
    assert frame[["asset", "free", "used", "total"]].values.tolist() == [["USDC", 5.0, 1.5, 6.5]]
    assert frame["timestamp"].iloc[0] == pd.Timestamp(NOW)


def test_a_negative_wallet_balance_fails_validation() -> None:
    payload = {"info": {"assets": [{"asset": "USDT", "walletBalance": "-10",
                                    "initialMargin": "0", "updateTime": MS}]}}
    frame = map_balance(payload, exchange_id="binanceusdm", venue="binance", account="main",
                        received_at=NOW)
    with pytest.raises(DataValidationError):
        validate_frame(frame, balance_rules(), source="binance")


def test_tickers_map_with_mark_falling_back_to_last_and_missing_time_to_receipt() -> None:
    tickers: dict[str, dict[str, Any]] = {
        "BTC/USDT:USDT": {"symbol": "BTC/USDT:USDT", "last": 60000.0, "bid": 59999.0,
                          "ask": 60001.0, "markPrice": 60003.0, "timestamp": MS - 500},
        "ETH/USDT:USDT": {"symbol": "ETH/USDT:USDT", "last": None, "close": 3000.0,
                          "bid": None, "ask": None, "timestamp": None},
        "SOL/USDT:USDT": {"symbol": "SOL/USDT:USDT", "last": 150.0, "timestamp": MS},
    }
    frame = map_tickers(tickers, venue="okx", markets=MARKETS, received_at=NOW,
                        symbols=["BTC/USDT:USDT", "ETH/USDT:USDT"])
    validate_frame(frame, price_rules(now=NOW, max_age_s=60), source="okx")
    assert frame["instrument"].tolist() == ["BTC/USDT:USDT", "ETH/USDT:USDT"]
    assert frame["mark"].tolist() == [60003.0, 3000.0]
    assert frame["timestamp"].tolist() == [pd.Timestamp(MS - 500, unit="ms", tz="UTC"),
                                           pd.Timestamp(NOW)]
    assert math.isnan(frame["bid"].iloc[1])


def test_vault_amounts_are_parsed_exactly_then_stored_as_float() -> None:
    accounts: list[dict[str, Any]] = [
        {"id": "0", "name": "treasury", "assets": [
            {"id": "BTC", "total": "2.5", "available": "2.0", "frozen": "0.5"},
            {"id": "usdt_erc20", "total": "1000000.123456789", "available": "1000000.123456789"},
            {"id": "SOL", "total": "0", "available": "0"},
        ]},
        {"id": "7", "assets": []},
    ]
    frame = map_vault_accounts(accounts, custodian="fireblocks", received_at=NOW)
    validate_frame(frame, balance_rules(now=NOW, max_age_s=60), source="fireblocks")
    assert frame[["account", "asset"]].values.tolist() == [["0", "BTC"], ["0", "USDT_ERC20"]]
    btc = frame.iloc[0]
    assert (btc["free"], btc["used"], btc["total"]) == (2.0, 0.5, 2.5)
    assert frame["total"].iloc[1] == float(Decimal("1000000.123456789"))
    assert (frame["source_type"] == "custodian").all()


@pytest.mark.parametrize("bad", ["NaN", "abc", "Infinity"])
def test_a_non_numeric_vault_amount_costs_that_asset_only(bad: str) -> None:
    from risk_monitor.adapters.row_validation import split_valid_rows

    frame = map_vault_accounts([{"id": "0", "assets": [
        {"id": "BTC", "total": bad, "available": "1"},
        {"id": "ETH", "total": "2", "available": "2"}]}],
        custodian="fireblocks", received_at=NOW)
    good, rejected = split_valid_rows(frame, balance_rules(), source="fireblocks", account="*")
    assert good["asset"].tolist() == ["ETH"]
    (row,) = rejected
    assert (row.account, row.asset, row.value) == ("0", "BTC", "nan")
    assert "fireblocks:0 BTC: free=nan" in row.message


def test_a_negative_vault_amount_fails_validation() -> None:
    frame = map_vault_accounts([{"id": "0", "assets": [{"id": "BTC", "total": "-1",
                                                         "available": "-1"}]}],
                               custodian="fireblocks", received_at=NOW)
    with pytest.raises(DataValidationError):
        validate_frame(frame, balance_rules(), source="fireblocks")
