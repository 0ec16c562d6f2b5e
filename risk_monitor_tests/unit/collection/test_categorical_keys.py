"""Collected positions carry their id columns as Categoricals (memory: 1-2 bytes a row, not an
8-byte pointer); everything that reads them sees the same str values as before."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from risk_monitor.adapters.collection import collect_positions
from risk_monitor.domain.frame_rules import categorize, passes, plain_strings
from risk_monitor.domain.lineage import venue_versions
from risk_monitor.domain.model import POSITION_COLUMNS, Collected
from risk_monitor.domain.schemas import (
    POSITION_KEYS,
    concat_frames,
    position_rules,
    positions_frame,
    validate_frame,
)
from risk_monitor.platform.errors import DataValidationError
from risk_monitor.platform.settings import MarketDataSettings
from risk_monitor_tests.unit.collection.test_schemas import NOW, position


def frame() -> pd.DataFrame:
    return positions_frame([
        position(venue="okx", instrument="ETH/USDT:USDT", base="ETH"),
        position(),
        position(venue="okx", account="b", quantity=-1.0, position_side="short"),
    ])


def test_categorize_keeps_values_sorts_categories_and_narrows_codes() -> None:
    plain = frame()
    coded = categorize(plain, POSITION_KEYS)
    for name in POSITION_KEYS:
        cat = coded[name].array
        assert isinstance(cat, pd.Categorical)
        assert cat.codes.dtype == np.int8
        assert list(cat.categories) == sorted(set(plain[name]))
        assert list(coded[name].astype(object)) == list(plain[name])
    np.testing.assert_array_equal(coded["quantity"].to_numpy(), plain["quantity"].to_numpy())
    pd.testing.assert_frame_equal(plain_strings(coded), plain)


def test_categorical_keys_hash_as_their_strings() -> None:
    plain = frame()
    coded = venue_versions(Collected(categorize(plain, POSITION_KEYS), ()))
    assert coded == venue_versions(Collected(plain, ()))
    assert set(coded) == {"binance", "okx"}


def test_fast_path_accepts_valid_categorical_keys_and_refuses_bad_ones() -> None:
    rules = position_rules(now=NOW, max_age_s=60)
    assert passes(categorize(frame(), POSITION_KEYS), rules)
    bad = categorize(positions_frame([position(), position(venue="Not An Id")]), POSITION_KEYS)
    assert not passes(bad, rules)
    with pytest.raises(DataValidationError, match="venue"):  # pandera names the failure
        validate_frame(bad, rules, source="test")


def test_a_categorical_key_with_a_null_stays_object() -> None:
    plain = frame()
    plain.loc[1, "account"] = None
    assert categorize(plain, ["account"])["account"].dtype == object


class _Account:
    venue, account, endpoint_override = "binance", "main", None

    def fetch_positions(self) -> pd.DataFrame:
        return positions_frame([position(), position(instrument="ETH/USDT:USDT", base="ETH")])


def test_collected_positions_carry_categorical_keys() -> None:
    collected = collect_positions([_Account()], MarketDataSettings(), clock=lambda: NOW)
    assert all(ok for ok in (s.ok for s in collected.sources))
    for name in POSITION_KEYS:
        assert isinstance(collected.frame[name].dtype, pd.CategoricalDtype)
    assert sorted(collected.frame["instrument"].astype(str)) == ["BTC/USDT:USDT",
                                                                 "ETH/USDT:USDT"]


def test_a_filtered_categorical_frame_names_only_the_values_present() -> None:
    from risk_monitor.domain.valuation import categorical

    coded = categorize(frame(), POSITION_KEYS)
    okx_only = coded[coded["venue"] == "okx"].reset_index(drop=True)
    assert list(categorical(okx_only, "venue").categories) == ["okx"]
    assert list(categorical(okx_only.iloc[0:0], "venue").categories) == []


class _Source:
    def __init__(self, venue: str, account: str, rows: list[dict[str, object]]) -> None:
        self.venue, self.account, self.endpoint_override = venue, account, None
        self._rows = rows

    def fetch_positions(self) -> pd.DataFrame:
        return positions_frame([position(venue=self.venue, account=self.account, **row)
                                for row in self._rows])


def _eth(**changes: object) -> dict[str, object]:
    return {"instrument": "ETH/USDT:USDT", "base": "ETH", **changes}


def test_sources_categorised_one_by_one_concat_to_the_frame_of_the_whole() -> None:
    """Each source is categorised before the concat (peak memory): the collected frame is the
    one categorising the concatenated object frames gives, codes and categories included, so
    its data versions are unchanged; an empty source changes nothing."""
    sources = [_Source("okx", "b", [_eth(), {}]), _Source("binance", "main", []),
               _Source("binance", "main", [{"instrument": "SOL/USDT:USDT", "base": "SOL",
                                            "quantity": -1.0, "position_side": "short"}]),
               _Source("deribit", "a", [_eth(margin_mode="isolated")])]
    collected = collect_positions(sources, MarketDataSettings(), clock=lambda: NOW)
    assert all(s.ok for s in collected.sources)
    whole = categorize(concat_frames([s.fetch_positions() for s in sources], POSITION_COLUMNS),
                       POSITION_KEYS)
    pd.testing.assert_frame_equal(collected.frame, whole, check_exact=True)
    for name in POSITION_KEYS:
        assert collected.frame[name].cat.codes.dtype == whole[name].cat.codes.dtype
    assert list(collected.frame["venue"].cat.categories) == ["binance", "deribit", "okx"]
    assert venue_versions(collected) == venue_versions(Collected(whole, collected.sources))


def test_a_key_one_source_cannot_code_is_left_as_categorize_leaves_it() -> None:
    from risk_monitor.adapters.collection import _KeyCodes

    odd = frame()
    odd.loc[0, "margin_mode"] = None  # categorize leaves it object; validation names it
    coded = _KeyCodes(POSITION_KEYS)
    rest = pd.concat([coded.take(frame()), coded.take(odd)], ignore_index=True)
    combined = coded.combine(rest, POSITION_COLUMNS)
    whole = categorize(concat_frames([frame(), odd], POSITION_COLUMNS), POSITION_KEYS)
    assert combined["margin_mode"].dtype == object
    pd.testing.assert_frame_equal(combined, whole, check_exact=True)
