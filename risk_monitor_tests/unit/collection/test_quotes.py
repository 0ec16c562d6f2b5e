"""Quote coverage (stale / future / missing), the cache codec and tick validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from risk_monitor.adapters.collection import Source
from risk_monitor.adapters.market_data import (
    VenueQuotes,
    collect_quotes,
    quote_policy,
    resolve_source,
)
from risk_monitor.adapters.redis_quotes import decode_quotes, encode_quote
from risk_monitor.domain.model import SourceKind
from risk_monitor.domain.quotes import tick_rejection
from risk_monitor.domain.schemas import prices_frame
from risk_monitor.platform.errors import ConfigError, SourceUnavailableError
from risk_monitor.platform.settings import MarketDataSettings, Settings

NOW = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
MD = MarketDataSettings(max_age_s=60, max_future_skew_s=5)


def quote(instrument: str = "BTC/USDT:USDT", age_s: float = 1.0, **changes: Any) -> dict:
    base = instrument.split("/", maxsplit=1)[0]
    row = {"venue": "okx", "instrument": instrument, "base": base, "quote": "USDT",
           "bid": 99.0, "ask": 101.0, "last": 100.0, "mark": 100.5,
           "timestamp": NOW - timedelta(seconds=age_s), "received_at": NOW}
    row.update(changes)
    return row


def source(venue: str, fetch: Any) -> Source:
    return Source(SourceKind.MARKET, venue, "*", fetch, endpoint_override=None)


def test_stale_future_and_missing_quotes_are_dropped_and_named() -> None:
    rows = [quote(), quote("ETH/USDT:USDT", age_s=600), quote("SOL/USDT:USDT", age_s=-30)]
    venues = [VenueQuotes(source("okx", lambda: prices_frame(rows)),
                          ("BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT", "XRP/USDT:USDT"))]
    collected = collect_quotes(venues, MD, clock=lambda: NOW)
    assert collected.frame["instrument"].tolist() == ["BTC/USDT:USDT"]
    (status,) = collected.sources
    assert not status.ok and status.rows == 1
    assert status.error_code == "RM301"
    error = status.error or ""
    assert "ETH/USDT:USDT" in error and "SOL/USDT:USDT" in error
    assert "XRP/USDT:USDT" in error  # missing, named too


def test_one_failing_venue_never_hides_another() -> None:
    def broken() -> pd.DataFrame:
        raise SourceUnavailableError("down", source="binance")

    venues = [VenueQuotes(source("binance", broken), ("BTC/USDT:USDT",)),
              VenueQuotes(source("okx", lambda: prices_frame([quote()])), ("BTC/USDT:USDT",)),
              VenueQuotes(source("bybit", lambda: prices_frame([quote(last=-1.0)])), ())]
    collected = collect_quotes(venues, MD, clock=lambda: NOW)
    status = {s.venue: s for s in collected.sources}
    assert status["okx"].ok and status["okx"].rows == 1
    assert (status["binance"].ok, status["binance"].error_code) == (False, "RM201")
    assert (status["bybit"].ok, status["bybit"].error_code) == (False, "RM300")
    assert collected.frame["venue"].tolist() == ["okx"]
    assert not collected.complete


def test_a_venue_with_no_quotes_at_all_is_missing() -> None:
    collected = collect_quotes([VenueQuotes(source("okx", lambda: prices_frame([])), ())], MD,
                               clock=lambda: NOW)
    assert collected.sources[0].error_code == "RM302"


def test_cache_codec_round_trips_and_keeps_nulls() -> None:
    row = quote(bid=float("nan"), ask=None)
    encoded = encode_quote(row, "stream")
    assert encoded["bid"] is None and encoded["via"] == "stream"
    import json

    frame = decode_quotes("okx", {b"BTC/USDT:USDT": json.dumps(encoded).encode()})
    back = frame.iloc[0]
    assert back["last"] == 100.0 and pd.isna(back["bid"])
    assert back["timestamp"] == pd.Timestamp(row["timestamp"]).floor("ms")


def test_an_unreadable_cache_entry_is_skipped_alone() -> None:
    import json

    good = json.dumps(encode_quote(quote("ETH/USDT:USDT"), "stream"))
    bad_values = ["{not json", json.dumps([1]),
                  json.dumps({**json.loads(good), "ts": False}),
                  json.dumps({**json.loads(good), "last": "abc"}),
                  json.dumps({**json.loads(good), "base": None})]
    for bad in bad_values:
        frame = decode_quotes("okx", {"BTC/USDT:USDT": bad, "ETH/USDT:USDT": good})
        assert list(frame["instrument"]) == ["ETH/USDT:USDT"], bad


def test_the_source_is_chosen_by_configuration_only() -> None:
    assert resolve_source(Settings()) == "rest"
    assert resolve_source(Settings(redis_url="redis://127.0.0.1:6379/0")) == "redis"
    rest = MarketDataSettings(source="rest")
    assert resolve_source(Settings(redis_url="redis://x", market_data=rest)) == "rest"
    with pytest.raises(ConfigError, match="redis_url"):
        resolve_source(Settings(market_data=MarketDataSettings(source="redis")))


@pytest.mark.parametrize(("changes", "last", "problem"), [
    ({}, None, None),
    ({"last": float("nan")}, None, "invalid"),
    ({"mark": 0.0}, None, "invalid"),
    ({"bid": 102.0}, None, "invalid"),
    ({"ask": -1.0}, None, "invalid"),
    ({"age_s": 61}, None, "stale"),
    ({"age_s": -6}, None, "future"),
    ({"age_s": 2}, pd.Timestamp(NOW - timedelta(seconds=1)), "out_of_order"),
])
def test_tick_problems(changes: dict, last: pd.Timestamp | None, problem: str | None) -> None:
    age = changes.pop("age_s", 1.0)
    row = quote(age_s=age, **changes)
    assert tick_rejection(row, now=NOW, policy=quote_policy(MD), last_accepted=last) == problem
