"""The hot path and the Dagster path, given the same inputs, give the same answer.

Hypothesis generates a desk (positions on two or three venues, exchange balances, custody) with
quotes that are fresh, stale, missing or absurd, and a limit document. The hot path's evaluation
(``HotPath._evaluate``: quote book → admission → snapshot → engine) and the Dagster assets'
composition (``collect_quotes`` as ``market_prices`` → ``build_snapshot`` + ``prepare`` as
``portfolio_pnl`` → ``evaluate_limits`` as ``limit_status``) must agree on every limit's status,
value and fingerprint.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from risk_monitor import application
from risk_monitor.adapters.collection import Source
from risk_monitor.adapters.market_data import VenueQuotes, collect_quotes
from risk_monitor.adapters.sql import Storage
from risk_monitor.domain.engine import prepare
from risk_monitor.domain.limits import evaluate_limits, load_limit_config
from risk_monitor.domain.model import (
    BALANCE_COLUMNS,
    POSITION_COLUMNS,
    Collected,
    SourceKind,
    SourceStatus,
)
from risk_monitor.domain.schemas import prices_frame
from risk_monitor.platform.settings import load_settings
from risk_monitor.service.hot_path import HotPath
from risk_monitor.service.state import LiveEvaluation
from risk_monitor_tests.unit.domain.builders import balance, frame, position

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
VENUES = ("binance", "okx", "bybit")
PRICES = {"BTC/USDT:USDT": 60_000.0, "ETH/USDT:USDT": 3_000.0}
QUOTE_KINDS = ("fresh", "fresh", "fresh", "stale", "missing", "absurd")


@st.composite
def desks(draw: st.DrawFn) -> dict[str, Any]:
    venues = draw(st.sampled_from([VENUES[:2], VENUES]))
    quotes, positions, balances = [], [], []
    for venue in venues:
        for instrument, price in PRICES.items():
            kind = draw(st.sampled_from(QUOTE_KINDS))
            jitter = draw(st.floats(-0.01, 0.01))
            last = price * (1 + jitter) * (1000 if kind == "absurd" else 1)
            at = NOW - timedelta(seconds=600 if kind == "stale" else 2)
            if kind != "missing":
                quotes.append({"venue": venue, "instrument": instrument,
                               "base": instrument[:3], "quote": "USDT", "bid": last * 0.9999,
                               "ask": last * 1.0001, "last": last, "mark": last,
                               "timestamp": at, "received_at": at})
            size = draw(st.floats(-20, 20).filter(lambda x: abs(x) > 0.01))
            positions.append(position(venue, instrument, size, price, price, received=NOW))
        balances.append(balance(venue, "USDT", draw(st.floats(1e5, 5e6)), received=NOW))
    custody = [balance("fireblocks", "USDT", draw(st.floats(0, 5e6)), account="vault-1",
                       source_type="custodian", received=NOW)]
    notional = draw(st.floats(1e4, 2e6))
    limits = {"venues": [*venues, "fireblocks"], "limits": [
        {"id": "notional", "kind": "max_notional", "scope": {"venue": "*", "instrument": "*"},
         "warn": notional * 0.8, "breach": notional},
        {"id": "gross", "kind": "gross_exposure", "scope": {"venue": "*"},
         "warn": draw(st.floats(1e5, 1e6)), "breach": 2e6},
        {"id": "age", "kind": "data_age", "scope": {"venue": "*"}, "warn": 30, "breach": 50},
    ]}
    return {"venues": venues, "quotes": quotes, "positions": positions, "balances": balances,
            "custody": custody, "limits": limits}

# bounded work (a fixed number of examples), slow only on a loaded machine: the timeout guards
# against hangs, not speed
pytestmark = pytest.mark.timeout(900)


def ok(kind: SourceKind, venue: str, account: str, rows: int) -> SourceStatus:
    return SourceStatus(kind, venue, account, True, NOW, rows=rows)


def signature(results: Any) -> list[tuple[str, str, float | None]]:
    def value(v: float | None) -> float | None:
        return None if v is None or math.isnan(v) else round(v, 6)
    return sorted((r.fingerprint, r.status.value, value(r.value)) for r in results)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(desk=desks())
def test_both_paths_give_identical_statuses_values_and_fingerprints(
        desk: dict[str, Any], tmp_path: Path) -> None:
    cfg = load_settings(None, data_dir=tmp_path, venues=[
        {"id": v, "exchange": "binanceusdm", "symbols": list(PRICES)} for v in desk["venues"]])
    config = load_limit_config(desk["limits"])
    positions = Collected(frame(desk["positions"], POSITION_COLUMNS), tuple(
        ok(SourceKind.EXCHANGE, v, "main", 2) for v in desk["venues"]))
    balances = Collected(frame(desk["balances"], BALANCE_COLUMNS), positions.sources)
    custody = Collected(frame(desk["custody"], BALANCE_COLUMNS),
                        (ok(SourceKind.CUSTODIAN, "fireblocks", "*", 1),))
    storage = Storage.open(f"sqlite:///{tmp_path / f'{id(desk)}.db'}")
    try:
        # the hot path: its quote book and its evaluation step
        live = LiveEvaluation()
        live.set_limit_config(config)
        hot = HotPath(cfg, live, storage, instance_id="equivalence", accounts=[],
                      custodians=[], clock=lambda: NOW)
        for row in desk["quotes"]:
            hot.book.update(row["venue"], [row])
        hot.positions, hot.exchange_balances, hot.custody = positions, balances, custody
        done = hot.evaluator.full()  # what the hot path's evaluation thread runs
        assert done is not None
        report = done.report

        # the Dagster path: market_prices → portfolio_pnl → limit_status
        quotes = prices_frame(desk["quotes"])
        prices = collect_quotes([VenueQuotes(
            Source(SourceKind.MARKET, v, "*", lambda v=v: quotes[quotes["venue"] == v]),
            tuple(PRICES)) for v in desk["venues"]], cfg.market_data, clock=lambda: NOW)
        snapshot = application.build_snapshot(
            positions=positions, balances=application.merge_collected(balances, custody),
            prices=prices, now=NOW, settings=cfg, storage=storage)
        results = evaluate_limits(prepare(snapshot, config), config)
    finally:
        storage.close()
    assert signature(report.results) == signature(results)
    assert {r.config_version for r in results} == {report.config_version}
    assert pd.Series([s.ok for s in prices.sources]).tolist() == [
        s.ok for s in report.state.sources if s.kind is SourceKind.MARKET]
