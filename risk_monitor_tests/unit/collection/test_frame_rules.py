"""The vectorised rule check agrees with pandera: it never accepts a frame pandera refuses.

``frame_rules.passes`` is the fast path of every validation; pandera, built from the same
rules, is the reference. Each case below is a frame with one broken rule: the fast path must
say no (so pandera runs and names the failure), and pandera must refuse it too. Valid frames
pass both, and the fast path hands the very frame back.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pandera.errors import SchemaError, SchemaErrors

from risk_monitor.domain.frame_rules import factorize_objects, key_codes, passes
from risk_monitor.domain.schemas import (
    balance_rules,
    balances_frame,
    position_rules,
    positions_frame,
    price_rules,
    prices_frame,
    schema_of,
    validate_frame,
)
from risk_monitor_tests.unit.collection.test_schemas import NOW, balance, position, price


def pandera_accepts(frame: pd.DataFrame, rules: Any) -> bool:
    try:
        schema_of(rules).validate(frame, lazy=True)
    except (SchemaError, SchemaErrors):
        return False
    return True


POSITION_RULES = position_rules(now=NOW, max_age_s=60, max_future_skew_s=5)
BALANCE_RULES = balance_rules(now=NOW, max_age_s=60, max_future_skew_s=5)
PRICE_RULES = price_rules(now=NOW, max_age_s=60, max_future_skew_s=5)


def _retyped(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["contracts"] = frame["contracts"].astype(object)
    return frame


BAD_POSITIONS: dict[str, Callable[[], pd.DataFrame]] = {
    "bad venue id": lambda: positions_frame([position(venue="Bin ance")]),
    "null account": lambda: positions_frame([position(account=None)]),
    "symbol without slash": lambda: positions_frame([position(instrument="BTCUSDT")]),
    "lower-case base": lambda: positions_frame([position(base="btc")]),
    "unknown side": lambda: positions_frame([position(position_side="both")]),
    "negative contracts": lambda: positions_frame([position(contracts=-2.0, quantity=-1.0)]),
    "infinite pnl": lambda: positions_frame([position(unrealized_pnl=float("inf"))]),
    "NaN mark": lambda: positions_frame([position(mark_price=float("nan"))]),
    "zero leverage": lambda: positions_frame([position(leverage=0.0)]),
    "side against sign": lambda: positions_frame([position(position_side="short")]),
    "quantity != contracts x size": lambda: positions_frame([position(contracts=3.0)]),
    "notional != |qty| x mark": lambda: positions_frame([position(notional=1.0)]),
    "stale": lambda: positions_frame([position(received_at=NOW - timedelta(hours=1))]),
    "from the future": lambda: positions_frame([position(timestamp=NOW + timedelta(hours=1))]),
    "duplicate key": lambda: positions_frame([position(), position()]),
    "extra column": lambda: positions_frame([position()]).assign(extra=1.0),
    "missing column": lambda: positions_frame([position()]).drop(columns="leverage"),
}


@pytest.mark.parametrize("case", sorted(BAD_POSITIONS))
def test_a_broken_position_rule_fails_both_paths(case: str) -> None:
    frame = BAD_POSITIONS[case]()
    assert not passes(frame, POSITION_RULES)
    assert not pandera_accepts(frame, POSITION_RULES)


@pytest.mark.parametrize(("rows", "rules"), [
    ([balance(total=-1.0, free=-1.0, used=0.0)], BALANCE_RULES),
    ([balance(total=99.0)], BALANCE_RULES),
    ([balance(source_type="bank")], BALANCE_RULES),
    ([balance(account="x" * 129)], BALANCE_RULES),
    ([balance(), balance()], BALANCE_RULES),
])
def test_a_broken_balance_rule_fails_both_paths(rows: list[dict[str, Any]], rules: Any) -> None:
    frame = balances_frame(rows)
    assert not passes(frame, rules)
    assert not pandera_accepts(frame, rules)


@pytest.mark.parametrize("changes", [
    {"bid": 60020.0}, {"last": 0.0}, {"ask": -1.0},
    {"timestamp": NOW - timedelta(minutes=5)}, {"instrument": "BTC USDT"},
])
def test_a_broken_price_rule_fails_both_paths(changes: dict[str, Any]) -> None:
    frame = prices_frame([price(**changes)])
    assert not passes(frame, PRICE_RULES)
    assert not pandera_accepts(frame, PRICE_RULES)


def test_valid_frames_pass_both_paths_and_come_back_unchanged() -> None:
    cases = [
        (positions_frame([position(), position(position_side="short", quantity=-1.0,
                                               instrument="ETH/USDT:USDT", base="ETH")]),
         POSITION_RULES),
        (positions_frame([]), POSITION_RULES),
        (balances_frame([balance(), balance(asset="BTC")]), BALANCE_RULES),
        (prices_frame([price(), price(bid=None, ask=None, venue="binance")]), PRICE_RULES),
    ]
    for frame, rules in cases:
        assert passes(frame, rules)
        assert pandera_accepts(frame, rules)
        assert validate_frame(frame, rules, source="test") is frame


def test_a_frame_pandera_must_coerce_takes_the_pandera_path() -> None:
    frame = _retyped(positions_frame([position()]))
    assert not passes(frame, POSITION_RULES)  # doubt: pandera decides (and coerces)
    validated = validate_frame(frame, POSITION_RULES, source="test")
    assert validated["contracts"].dtype == np.float64


def test_key_codes_follow_a_replaced_column() -> None:
    frame = positions_frame([position(), position(account="other")])
    codes, uniques = key_codes(frame, "account")
    assert [uniques[c] for c in codes] == ["main", "other"]
    frame["account"] = np.array(["x", "y"], dtype=object)
    codes, uniques = key_codes(frame, "account")
    assert [uniques[c] for c in codes] == ["x", "y"]


@pytest.mark.parametrize("seed", range(5))
def test_factorize_objects_equals_pandas(seed: int) -> None:
    """Grouping rows by object identity first gives pd.factorize's very codes and uniques:
    shared str objects, equal strings held as distinct objects, None and NaN, a strided view."""
    rng = np.random.default_rng(seed)
    pool: list[Any] = ["binance", "okx", None, np.nan, *(f"a{i}" for i in range(40))]
    pool += ["".join(["bin", "ance"]), "".join(["a", "7"])]  # equal values, other objects
    values = np.array([pool[i] for i in rng.integers(0, len(pool), 5000)], dtype=object)
    for column in (values, values[::3]):
        codes, uniques = factorize_objects(column)
        expected_codes, expected_uniques = pd.factorize(column, use_na_sentinel=True)
        assert codes.tolist() == expected_codes.tolist()
        assert list(uniques) == list(expected_uniques)
