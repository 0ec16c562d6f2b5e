"""The dataset schemas: every rule can fail, time rules depend on ``now`` only."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pandas as pd
import pytest

from risk_monitor.domain.frame_rules import UTC_TIMESTAMP, categorize
from risk_monitor.domain.model import BALANCE_COLUMNS, POSITION_COLUMNS, PRICE_COLUMNS
from risk_monitor.domain.quotes import price_outliers
from risk_monitor.domain.schemas import (
    balance_rules,
    balances_frame,
    concat_frames,
    position_rules,
    positions_frame,
    price_rules,
    prices_frame,
    validate_frame,
)
from risk_monitor.platform.errors import DataValidationError, StaleDataError

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def position(**changes: Any) -> dict[str, Any]:
    row = {"venue": "binance", "account": "main", "instrument": "BTC/USDT:USDT", "base": "BTC",
           "quote": "USDT", "settle": "USDT", "position_side": "long", "contracts": 2.0,
           "contract_size": 0.5, "quantity": 1.0, "entry_price": 50000.0,
           "mark_price": 60000.0, "notional": 60000.0, "unrealized_pnl": 10000.0,
           "realized_pnl": None, "leverage": 5.0, "liquidation_price": None,
           "margin_mode": "cross", "timestamp": NOW - timedelta(days=7),
           "received_at": NOW - timedelta(seconds=1)}
    row.update(changes)
    return row


def balance(**changes: Any) -> dict[str, Any]:
    row = {"source_type": "exchange", "venue": "okx", "account": "main", "asset": "USDT",
           "free": 70.25, "used": 29.75, "total": 100.0, "timestamp": NOW,
           "received_at": NOW}
    row.update(changes)
    return row


def price(**changes: Any) -> dict[str, Any]:
    row = {"venue": "okx", "instrument": "BTC/USDT:USDT", "base": "BTC", "quote": "USDT",
           "bid": 59990.0, "ask": 60010.0, "last": 60000.0, "mark": 60001.0,
           "timestamp": NOW - timedelta(seconds=2), "received_at": NOW}
    row.update(changes)
    return row


def positions(*rows: dict[str, Any]) -> pd.DataFrame:
    return positions_frame(rows)


def check(frame: pd.DataFrame, schema: Any) -> pd.DataFrame:
    return validate_frame(frame, schema, source="test")


def test_valid_frames_pass_and_empty_frames_are_typed() -> None:
    check(positions(position()), position_rules(now=NOW, max_age_s=60))
    check(balances_frame([balance()]), balance_rules(now=NOW, max_age_s=60))
    check(prices_frame([price()]), price_rules(now=NOW, max_age_s=60))
    for frame, schema in ((positions_frame([]), position_rules(now=NOW, max_age_s=60)),
                          (balances_frame([]), balance_rules(now=NOW, max_age_s=60)),
                          (prices_frame([]), price_rules(now=NOW, max_age_s=60))):
        assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
        check(frame, schema)


@pytest.mark.parametrize(("change", "rule"), [
    ({"mark_price": float("nan")}, "not_nullable"),
    ({"mark_price": float("inf"), "notional": float("inf")}, "is_finite"),
    ({"contracts": -2.0, "quantity": 1.0}, "greater_than_or_equal_to(0)"),
    ({"entry_price": 0.0}, "greater_than(0)"),
    ({"position_side": "flat"}, "isin"),
    ({"quantity": -1.0}, "side_matches_quantity_sign"),
    ({"quantity": 1.5, "notional": 90000.0}, "quantity_matches_contracts"),
    ({"notional": 1.0}, "notional_matches_mark"),
    ({"venue": None}, "not_nullable"),
    ({"margin_mode": "portfolio"}, "isin"),
])
def test_position_rules_fail(change: dict[str, Any], rule: str) -> None:
    with pytest.raises(DataValidationError) as info:
        check(positions(position(**change)), position_rules())
    assert not isinstance(info.value, StaleDataError)
    assert any(rule in c for c in info.value.details["failed_checks"])


def test_position_keys_are_unique_but_hedge_mode_sides_coexist() -> None:
    long_ = position()
    short = position(position_side="short", quantity=-1.0)
    check(positions(long_, short), position_rules())
    with pytest.raises(DataValidationError, match="uniqueness"):
        check(positions(long_, long_), position_rules())


def test_an_old_position_update_is_fine_but_an_old_fetch_is_stale() -> None:
    schema = position_rules(now=NOW, max_age_s=60)
    check(positions(position(timestamp=NOW - timedelta(days=30))), schema)
    with pytest.raises(StaleDataError, match="received_at_is_fresh"):
        check(positions(position(received_at=NOW - timedelta(seconds=61))), schema)


def test_timestamps_from_the_future_beyond_the_skew_are_rejected() -> None:
    schema = position_rules(now=NOW, max_age_s=60, max_future_skew_s=5)
    check(positions(position(timestamp=NOW + timedelta(seconds=4))), schema)
    with pytest.raises(StaleDataError, match="timestamp_not_in_future"):
        check(positions(position(timestamp=NOW + timedelta(seconds=6))), schema)


@pytest.mark.parametrize(("change", "rule"), [
    ({"free": -1.0, "used": 101.0}, "greater_than_or_equal"),
    ({"total": 101.0}, "total_is_free_plus_used"),
    ({"used": float("nan")}, "not_nullable"),
    ({"asset": "usdt"}, "str_matches"),
    ({"source_type": "bank"}, "isin"),
])
def test_balance_rules_fail(change: dict[str, Any], rule: str) -> None:
    with pytest.raises(DataValidationError) as info:
        check(balances_frame([balance(**change)]), balance_rules())
    assert any(rule in c for c in info.value.details["failed_checks"])


def test_balance_identity_tolerates_float_rounding_only() -> None:
    check(balances_frame([balance(free=0.1, used=0.2, total=0.30000000000000004)]),
          balance_rules())
    with pytest.raises(DataValidationError):
        check(balances_frame([balance(free=0.1, used=0.2, total=0.3001)]), balance_rules())


@pytest.mark.parametrize(("change", "rule"), [
    ({"bid": 60020.0}, "bid_not_above_ask"),
    ({"last": 0.0}, "greater_than(0)"),
    ({"ask": -5.0}, "greater_than(0)"),
    ({"last": float("nan")}, "not_nullable"),
])
def test_price_rules_fail(change: dict[str, Any], rule: str) -> None:
    with pytest.raises(DataValidationError) as info:
        check(prices_frame([price(**change)]), price_rules())
    assert any(rule in c for c in info.value.details["failed_checks"])


def test_prices_without_bid_and_ask_are_valid() -> None:
    check(prices_frame([price(bid=None, ask=None)]), price_rules())


def test_stale_quotes_are_a_stale_data_error() -> None:
    with pytest.raises(StaleDataError, match="timestamp_is_fresh"):
        check(prices_frame([price(timestamp=NOW - timedelta(seconds=120))]),
              price_rules(now=NOW, max_age_s=60))


def test_now_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        price_rules(now=datetime(2026, 1, 1), max_age_s=1)


def test_price_outliers_use_own_fields_and_other_venues() -> None:
    sane = prices_frame([price(), price(venue="binance", bid=None, ask=None)])
    assert price_outliers(sane).empty
    absurd_mark = prices_frame([price(mark=6e16)])
    assert "mark far from last" in price_outliers(absurd_mark)["reason"].iloc[0]
    three = prices_frame([price(), price(venue="binance"),
                          price(venue="bybit", last=6e16, bid=6e16 - 1, ask=6e16 + 1,
                                mark=6e16)])
    flagged = price_outliers(three)
    assert list(flagged["venue"]) == ["bybit"]
    two = prices_frame([price(), price(venue="binance", last=90000.0, bid=None, ask=None,
                                       mark=90000.0)])
    assert sorted(price_outliers(two)["venue"]) == ["binance", "okx"]


def test_concatenated_frames_equal_pandas_concat() -> None:
    """``concat_frames`` joins plain columns with numpy (``pd.concat`` is slow on tz-aware
    columns): the result must be ``pd.concat``'s, NaN, NaT and None included; categorical
    keys take ``pd.concat`` itself."""
    parts = [balances_frame([balance(), balance(account="sub", timestamp=None)]),
             balances_frame([balance(source_type="custodian", venue="fireblocks", account="v1",
                                     asset="BTC", free=None)])]
    joined = concat_frames(parts, BALANCE_COLUMNS)
    pd.testing.assert_frame_equal(
        joined, pd.concat(parts, ignore_index=True)[list(BALANCE_COLUMNS)], check_exact=True)
    assert joined["timestamp"].isna().tolist() == [False, True, False]
    keyed = [categorize(positions(position()), ["venue"]),
             categorize(positions(position(venue="okx")), ["venue"])]
    pd.testing.assert_frame_equal(
        concat_frames(keyed, POSITION_COLUMNS),
        pd.concat(keyed, ignore_index=True)[list(POSITION_COLUMNS)], check_exact=True)


def test_typed_frames_give_what_pandas_parsing_gives() -> None:
    """``typed_frame`` converts aware datetimes and floats itself (the hot path's quote frame
    on every evaluation); every row must come out as pandas' own conversions give it: other
    zones in UTC, None as NaT / NaN, and any other value type parsed by pandas as before."""
    east = timezone(timedelta(hours=3))
    rows = [price(), price(venue="binance", bid=None, ask=None, timestamp=NOW.astimezone(east),
                           received_at=None),
            price(venue="bybit", last=1, timestamp=pd.Timestamp(NOW) + pd.Timedelta(1, "ns"),
                  received_at="2026-01-02T03:04:05.5Z")]
    for records in ([], rows[:2], rows):
        frame = prices_frame(records)
        expected = pd.DataFrame({c: pd.Series([r[c] for r in records], dtype=object)
                                 for c in PRICE_COLUMNS})
        for column in ("timestamp", "received_at"):
            expected[column] = pd.to_datetime(expected[column], utc=True).astype(UTC_TIMESTAMP)
        for column in ("bid", "ask", "last", "mark"):
            expected[column] = pd.Series(
                [math.nan if v is None else v for v in expected[column]], dtype="float64")
        pd.testing.assert_frame_equal(frame, expected, check_exact=True)
    assert prices_frame(rows[1:2])["timestamp"].iloc[0] == pd.Timestamp(NOW)
    assert prices_frame(rows)["timestamp"].iloc[2].value == pd.Timestamp(NOW).value + 1
