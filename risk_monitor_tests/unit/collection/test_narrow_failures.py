"""One bad value costs its row only (#16 item 2): the instrument or asset it belongs to is marked
missing, named with venue, symbol, field and value; the other rows reach risk, and limits whose
scope does not depend on the bad row keep OK / WARN / BREACH."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from risk_monitor.adapters.ccxt_client import build_client
from risk_monitor.adapters.ccxt_mapping import map_balance, map_positions
from risk_monitor.adapters.ccxt_ticker_rows import parse_tickers_each
from risk_monitor.adapters.collection import Source, collect
from risk_monitor.domain.engine import evaluate
from risk_monitor.domain.model import (
    BALANCE_COLUMNS,
    POSITION_COLUMNS,
    Collected,
    LimitStatus,
    SourceKind,
)
from risk_monitor.domain.schemas import balance_rules, position_rules
from risk_monitor.platform.settings import VenueSettings
from risk_monitor_tests.unit.domain.builders import NOW, by_scope, config, desk

MS = int(NOW.timestamp() * 1000)
MARKETS = {
    "BTC/USDT:USDT": {"base": "BTC", "quote": "USDT", "settle": "USDT", "contractSize": 1.0},
    "ETH/USDT:USDT": {"base": "ETH", "quote": "USDT", "settle": "USDT", "contractSize": 1.0},
    "SOL/USDT:USDT": {"base": "SOL", "quote": "USDT", "settle": "USDT", "contractSize": 1.0},
}


def ccxt_position(symbol: str, mark: Any = 100.0, **changes: Any) -> dict[str, Any]:
    position = {"symbol": symbol, "contracts": 2.0, "contractSize": 1.0, "side": "long",
                "entryPrice": 90.0, "markPrice": mark, "unrealizedPnl": 20.0,
                "marginMode": "cross", "timestamp": MS - 1000, "info": {}}
    position.update(changes)
    return position


def positions_source(payload: list[dict[str, Any]]) -> Source:
    return Source(SourceKind.EXCHANGE, "binance", "main", lambda: map_positions(
        payload, venue="binance", account="main", markets=MARKETS, received_at=NOW))


def balances_source(assets: dict[str, Any]) -> Source:
    payload: dict[str, Any] = {"info": {}, "timestamp": MS - 1000, **assets}
    return Source(SourceKind.EXCHANGE, "binance", "main", lambda: map_balance(
        payload, exchange_id="generic", venue="binance", account="main", received_at=NOW))


def collect_at(source: Source, columns: tuple[str, ...],
               schema: Callable[..., Any], dataset: str) -> Collected:
    return collect([source], columns=columns, clock=lambda: NOW, dataset=dataset,
                   schema_at=lambda now: schema(now=now, max_age_s=60, max_future_skew_s=5))


GOOD = [ccxt_position("BTC/USDT:USDT"), ccxt_position("SOL/USDT:USDT")]


@pytest.mark.parametrize(("bad", "symbol", "field", "value"), [
    (ccxt_position("ETH/USDT:USDT", mark="NaN"), "ETH/USDT:USDT", "mark_price", "nan"),
    (ccxt_position("ETH/USDT:USDT", mark=None), "ETH/USDT:USDT", "mark_price", "nan"),
    (ccxt_position("ETH/USDT:USDT", mark=-5.0), "ETH/USDT:USDT", "mark_price", "-5.0"),
    (ccxt_position("ETH/USDT:USDT", entryPrice=""), "ETH/USDT:USDT", "entry_price", "nan"),
    (ccxt_position("ETH/USDT:USDT", timestamp=MS + 3_600_000), "ETH/USDT:USDT", "timestamp",
     str(pd.Timestamp(MS + 3_600_000, unit="ms", tz="UTC"))),
    (ccxt_position("ETH/USDT:USDT", timestamp=float("inf")), "ETH/USDT:USDT", "timestamp",
     "NaT"),
    (ccxt_position("NOSUCH"), "NOSUCH", "instrument", "NOSUCH"),
])
def test_one_bad_position_row_marks_only_its_instrument_missing(
        bad: dict[str, Any], symbol: str, field: str, value: str) -> None:
    collected = collect_at(positions_source([GOOD[0], bad, GOOD[1]]), POSITION_COLUMNS,
                           position_rules, "positions")
    assert sorted(collected.frame["instrument"]) == ["BTC/USDT:USDT", "SOL/USDT:USDT"]
    (account,) = [s for s in collected.sources if s.instrument is None]
    assert account.ok and account.rows == 2 and account.dataset == "positions"
    (missing,) = collected.missing
    assert missing.instrument == symbol and missing.dataset == "positions"
    assert missing.key == f"exchange:binance:main:{symbol}"
    assert missing.error_code == "RM300"
    assert missing.error is not None
    assert f"binance:main {symbol}: {field}=" in missing.error  # venue, symbol, field
    assert value in missing.error  # and the value
    assert not collected.complete


@pytest.mark.parametrize(("assets", "asset", "field"), [
    ({"ETH": {"free": "NaN", "used": 0.0, "total": "NaN"}}, "ETH", "free"),
    ({"": {"free": 5.0, "used": 0.0, "total": 5.0}}, None, "asset"),
    ({"ETH": {"free": -3.0, "used": 0.0, "total": -3.0}}, "ETH", "free"),
])
def test_one_bad_balance_row_marks_only_its_asset_missing(
        assets: dict[str, Any], asset: str | None, field: str) -> None:
    good = {"USDT": {"free": 1000.0, "used": 0.0, "total": 1000.0},
            "BTC": {"free": 1.0, "used": 0.0, "total": 1.0}}
    collected = collect_at(balances_source({**good, **assets}), BALANCE_COLUMNS,
                           balance_rules, "balances")
    assert sorted(collected.frame["asset"]) == ["BTC", "USDT"]
    (missing,) = collected.missing
    assert missing.asset == asset and missing.dataset == "balances"
    assert missing.error is not None and f"{field}=" in missing.error


def test_every_row_bad_still_fails_the_whole_source() -> None:
    collected = collect_at(positions_source([ccxt_position("ETH/USDT:USDT", mark="NaN")]),
                           POSITION_COLUMNS, position_rules, "positions")
    (status,) = collected.sources
    assert not status.ok and status.instrument is None and status.dataset == "positions"


# --- limits: only the dependent ones go UNKNOWN ------------------------------------------
LIMITS = config(
    {"id": "instrument_notional", "kind": "max_notional",
     "scope": {"venue": "*", "instrument": "*"}, "warn": 400_000, "breach": 700_000},
    {"id": "venue_notional", "kind": "max_notional", "scope": {"venue": "*"},
     "warn": 4_000_000, "breach": 5_000_000},
    {"id": "counterparty_binance", "kind": "counterparty", "scope": {"venue": "binance"},
     "warn": 4_000_000, "breach": 5_000_000},
    venues=["binance", "okx"],
)


def with_bad_row(dataset: str, **item: str) -> Any:
    """The hand-computed desk with one binance row dropped and its row-level failure."""
    snap = desk()
    if dataset == "positions":
        frame = snap.positions.frame
        keep = ~((frame["venue"] == "binance") & (frame["instrument"] == item["instrument"]))
        base = snap.positions.sources[0]
        failed = replace(base, ok=False, error_code="RM300", error="mark_price=nan",
                         dataset="positions", **item)
        return replace(snap, positions=Collected(frame[keep].reset_index(drop=True),
                                                 (*snap.positions.sources, failed)))
    frame = snap.balances.frame
    keep = ~((frame["venue"] == "binance") & (frame["asset"] == item["asset"]))
    base = snap.balances.sources[0]
    failed = replace(base, ok=False, error_code="RM300", error="total=-1", dataset="balances",
                     **item)
    return replace(snap, balances=Collected(frame[keep].reset_index(drop=True),
                                            (*snap.balances.sources, failed)))


def statuses(snap: Any, limit_id: str) -> dict[str, LimitStatus]:
    return {scope: r.status for scope, r in by_scope(evaluate(snap, LIMITS).results,
                                                      limit_id).items()}


def test_a_bad_position_row_blinds_its_instrument_and_what_contains_it_only() -> None:
    clean = statuses(desk(), "instrument_notional")
    assert LimitStatus.UNKNOWN not in clean.values()
    bad = statuses(with_bad_row("positions", instrument="ETH/USDT:USDT", asset="ETH"),
                   "instrument_notional")
    assert bad["venue:binance|instrument:ETH/USDT:USDT"] is LimitStatus.UNKNOWN
    for scope, status in clean.items():
        if scope != "venue:binance|instrument:ETH/USDT:USDT":
            assert bad[scope] is status, scope  # OK / WARN / BREACH kept
    venues = statuses(with_bad_row("positions", instrument="ETH/USDT:USDT", asset="ETH"),
                      "venue_notional")
    assert venues["venue:binance"] is LimitStatus.UNKNOWN  # the venue total needs the row
    assert venues["venue:okx"] is statuses(desk(), "venue_notional")["venue:okx"]


def test_a_bad_balance_row_leaves_position_limits_alone() -> None:
    snap = with_bad_row("balances", asset="USDT")
    clean = statuses(desk(), "instrument_notional")
    assert statuses(snap, "instrument_notional") == clean
    assert statuses(snap, "venue_notional") == statuses(desk(), "venue_notional")
    # the venue's equity needs every balance: that one is blind
    assert statuses(snap, "counterparty_binance")["venue:binance"] is LimitStatus.UNKNOWN


# --- ccxt's own parser: one NaN ticker costs that ticker only ----------------------------
def test_one_nan_ticker_is_parsed_out_alone_and_named() -> None:
    client = build_client(VenueSettings.model_validate({"id": "binance",
                                                        "exchange": "binanceusdm"}),
                          with_credentials=False)
    common = {"spot": False, "margin": False, "future": False, "option": False, "swap": True,
              "type": "swap", "linear": True, "contract": True, "contractSize": 1,
              "active": True, "precision": {}, "limits": {}, "info": {}, "quote": "USDT",
              "settle": "USDT"}
    client.set_markets([{"id": f"{b}USDT", "symbol": f"{b}/USDT:USDT", "base": b, **common}
                        for b in ("BTC", "ETH", "SOL")])

    def raw(market_id: str, last: str) -> dict[str, Any]:
        return {"symbol": market_id, "lastPrice": last, "openPrice": "1", "highPrice": "2",
                "lowPrice": "1", "volume": "10", "quoteVolume": "10",
                "closeTime": MS - 500, "count": 3}

    items = [raw("BTCUSDT", "60000"), raw("ETHUSDT", "NaN"), raw("SOLUSDT", "150")]
    with pytest.raises(ValueError):  # what ccxt's bulk parser does with the venue's answer
        client.parse_tickers(items)
    tickers, rejected = parse_tickers_each(client, items, venue="binance", account="main",
                                           symbols=None)
    assert sorted(tickers) == ["BTC/USDT:USDT", "SOL/USDT:USDT"]
    (row,) = rejected
    assert (row.instrument, row.field) == ("ETH/USDT:USDT", "lastPrice")
    assert "'NaN'" in row.value and "binance:main ETH/USDT:USDT: lastPrice=" in row.message


def test_time_checks_still_fail_a_stale_source_as_a_whole() -> None:
    old = NOW - timedelta(hours=1)
    source = Source(SourceKind.EXCHANGE, "binance", "main", lambda: map_positions(
        GOOD, venue="binance", account="main", markets=MARKETS, received_at=old))
    collected = collect_at(source, POSITION_COLUMNS, position_rules, "positions")
    (status,) = collected.sources
    assert not status.ok and status.error_code == "RM301"
    assert datetime.now(UTC) > NOW  # the frame, not the wall clock, decided


def test_the_completeness_check_names_the_bad_row() -> None:
    from risk_monitor.defs.collection_support import collection_metadata, completeness_check

    collected = collect_at(positions_source([GOOD[0], ccxt_position("ETH/USDT:USDT", mark="NaN"),
                                             GOOD[1]]), POSITION_COLUMNS, position_rules,
                           "positions")
    result = completeness_check("positions_are_complete", "exchange_positions", collected,
                                ["exchange:binance:main"])
    assert not result.passed
    missing = result.metadata["missing"].value
    assert isinstance(missing, dict)
    assert list(missing) == ["exchange:binance:main:ETH/USDT:USDT"]
    assert "mark_price=nan" in missing["exchange:binance:main:ETH/USDT:USDT"]
    meta = collection_metadata(collected, now=NOW, age_column="received_at")
    assert "exchange:binance:main:ETH/USDT:USDT" in meta["sources_missing"].value
