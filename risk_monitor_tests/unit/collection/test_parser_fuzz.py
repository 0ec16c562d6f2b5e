"""Hostile payloads (#15 item 5): every payload parser of the ccxt and Fireblocks adapters
returns a frame or raises one of the project's typed errors, whatever it is given. Zero
untyped escapes: an infinite or huge timestamp, a decimal overflow, a list where a dict
belongs, a string where a number belongs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from risk_monitor.adapters.ccxt_mapping import (
    map_balance,
    map_positions,
    map_tickers,
)
from risk_monitor.adapters.ccxt_ticker_rows import ticker_items
from risk_monitor.adapters.fireblocks_custodian import map_vault_accounts
from risk_monitor.platform.errors import RiskMonitorError

# bounded work (a fixed number of examples), slow only on a loaded machine: the timeout guards
# against hangs, not speed
pytestmark = pytest.mark.timeout(900)

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: values venues have been seen to send, and the ones that break naive parsers
NASTY_TEXT = st.sampled_from(["NaN", "nan", "inf", "-inf", "Infinity", "1e999", "-1e999",
                              "1e999999999", "", " ", "0", "-0", "1e-400", "0x10", "١٢",
                              "9" * 400, "BTC/USDT:USDT", "long", "short", "cross", "null"])
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(min_value=-(10**400), max_value=10**400),
                    st.sampled_from([0, 1, -1, 2**63, 1.7e308, 9.3e15, 1e20]))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, NASTY_TEXT, st.text(max_size=12))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)

POSITION_KEYS = ["symbol", "contracts", "contractSize", "side", "entryPrice", "markPrice",
                 "unrealizedPnl", "realizedPnl", "leverage", "liquidationPrice", "marginMode",
                 "timestamp", "lastUpdateTimestamp", "info"]
TICKER_KEYS = ["symbol", "last", "close", "bid", "ask", "markPrice", "timestamp"]


def shaped(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts with the keys a parser reads (any values), sometimes extra or missing keys."""
    return st.fixed_dictionaries({}, optional={k: JSON for k in keys}) | \
        st.dictionaries(st.sampled_from(keys) | st.text(max_size=6), JSON, max_size=6)


MARKETS = st.dictionaries(st.sampled_from(["BTC/USDT:USDT", "ETH/USDT:USDT", "X"]),
                          shaped(["base", "quote", "settle", "contractSize"]), max_size=3)


def only_typed(parse: Any, *args: Any, **kwargs: Any) -> None:
    try:
        result = parse(*args, **kwargs)
    except RiskMonitorError:
        return
    assert isinstance(result, pd.DataFrame)


@FUZZ
@given(payload=st.one_of(st.lists(shaped(POSITION_KEYS), max_size=4), JSON), markets=MARKETS)
def test_map_positions_raises_only_typed_errors(payload: Any, markets: Any) -> None:
    only_typed(map_positions, payload, venue="binance", account="main", markets=markets,
               received_at=NOW)


@FUZZ
@given(exchange=st.sampled_from(["binanceusdm", "okx", "kraken"]),
       payload=st.one_of(
           st.fixed_dictionaries({"info": st.one_of(
               st.fixed_dictionaries({"assets": st.lists(shaped(
                   ["asset", "walletBalance", "initialMargin", "updateTime"]), max_size=3)}),
               st.fixed_dictionaries({"data": st.lists(st.fixed_dictionaries({
                   "details": st.lists(shaped(["ccy", "cashBal", "frozenBal", "uTime"]),
                                       max_size=3), "uTime": JSON}), max_size=2)}),
               JSON)},
               optional={"timestamp": JSON, "USDT": shaped(["free", "used", "total"]),
                         "BTC": JSON}),
           JSON))
def test_map_balance_raises_only_typed_errors(exchange: str, payload: Any) -> None:
    only_typed(map_balance, payload, exchange_id=exchange, venue="binance", account="main",
               received_at=NOW)


@FUZZ
@given(payload=st.one_of(st.dictionaries(st.sampled_from(["BTC/USDT:USDT", "ETH/USDT:USDT"])
                                         | st.text(max_size=6), shaped(TICKER_KEYS),
                                         max_size=3), JSON),
       markets=MARKETS, symbols=st.one_of(st.none(), st.lists(st.text(max_size=6), max_size=2)))
def test_map_tickers_raises_only_typed_errors(payload: Any, markets: Any, symbols: Any) -> None:
    only_typed(map_tickers, payload, venue="binance", markets=markets, received_at=NOW,
               symbols=symbols)


@FUZZ
@given(body=JSON)
def test_ticker_items_never_raises(body: Any) -> None:
    items = ticker_items(body)
    assert items is None or isinstance(items, list)


@FUZZ
@given(accounts=st.one_of(
    st.lists(st.fixed_dictionaries({}, optional={
        "id": JSON, "assets": st.one_of(st.lists(shaped(
            ["id", "total", "balance", "available", "pending", "frozen", "lockedAmount"]),
            max_size=3), JSON)}), max_size=3),
    JSON))
def test_map_vault_accounts_raises_only_typed_errors(accounts: Any) -> None:
    only_typed(map_vault_accounts, accounts, custodian="fireblocks", received_at=NOW)


def test_the_known_escapes_are_typed_now() -> None:
    """The cases the hardening review found: an infinite timestamp (OverflowError) and a
    decimal overflow in ``total - available``."""
    position = {"symbol": "BTC/USDT:USDT", "contracts": 1, "contractSize": 1, "side": "long",
                "entryPrice": 1, "markPrice": 1, "unrealizedPnl": 0,
                "timestamp": float("inf"), "info": {}}
    frame = map_positions([position], venue="binance", account="main", markets={},
                          received_at=NOW)
    assert frame["timestamp"].isna().all()  # unrepresentable: the schema rejects the row
    only_typed(map_vault_accounts, [{"id": "0", "assets": [
        {"id": "BTC", "total": "1e999999999", "available": "-1e999999999"}]}],
        custodian="fireblocks", received_at=NOW)
