"""Exposure tables: hand-computed levels, failed sources, and a property: the levels add up."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from risk_monitor.domain.engine import evaluate
from risk_monitor.domain.exposures import EXPOSURE_COLUMNS, exposure_table, exposures_add_up
from risk_monitor_tests.unit.domain.builders import (
    balance,
    config,
    desk,
    position,
    quote,
    snapshot,
)

CFG = config()


def _level(table: pd.DataFrame, level: str, **keys: str) -> pd.Series:
    mask = table["level"] == level
    for key, value in keys.items():
        mask &= table[key] == value
    rows = table[mask]
    assert len(rows) == 1, (level, keys, rows)
    return rows.iloc[0]


def test_exposures_of_the_desk() -> None:
    ex = evaluate(desk(), CFG).exposures
    assert tuple(ex.columns) == EXPOSURE_COLUMNS
    vi = _level(ex, "venue_instrument", venue="okx", instrument="ETH/USDT:USDT")
    assert vi["derivatives_gross_usd"] == pytest.approx(116000)  # hedge legs add up in gross
    assert vi["derivatives_net_usd"] == pytest.approx(0)  # ... and cancel in net
    btc = _level(ex, "instrument", instrument="BTC/USDT:USDT")
    assert btc["derivatives_gross_usd"] == pytest.approx(854000)
    assert btc["derivatives_net_usd"] == pytest.approx(366000)
    asset = _level(ex, "asset", asset="BTC")
    assert asset["holdings_usd"] == pytest.approx(61000 + 305000)  # okx spot + custody
    assert asset["gross_usd"] == pytest.approx(1_220_000)
    assert asset["net_usd"] == pytest.approx(732_000)
    assert asset["concentration_pct"] == pytest.approx(1_220_000 / 2_481_000 * 100)
    binance = _level(ex, "venue", venue="binance")
    assert binance["gross_usd"] == pytest.approx(755000)
    assert binance["equity_usd"] == pytest.approx(515000)
    assert binance["leverage"] == pytest.approx(755000 / 515000)
    fireblocks = _level(ex, "venue", venue="fireblocks")
    assert fireblocks["holdings_usd"] == pytest.approx(595000)
    assert fireblocks["equity_usd"] == pytest.approx(1_595_000)
    portfolio = _level(ex, "portfolio")
    assert portfolio["derivatives_gross_usd"] == pytest.approx(1_115_000)
    assert portfolio["derivatives_net_usd"] == pytest.approx(221_000)
    assert portfolio["gross_usd"] == pytest.approx(1_771_000)
    assert portfolio["net_usd"] == pytest.approx(877_000)
    assert portfolio["leverage"] == pytest.approx(1_771_000 / 2_481_000)
    assert not set(ex.loc[ex["level"] == "asset", "asset"]) & {"USDT", "USDC"}  # cash is no exposure
    assert exposures_add_up(ex) == []


def test_failed_venue_rows_are_unknown_not_zero() -> None:
    ex = evaluate(desk(failed=["binance"]), CFG).exposures
    binance = _level(ex, "venue", venue="binance")
    assert not binance["ok"] and math.isnan(binance["gross_usd"]) and "binance" in binance["reason"]
    okx = _level(ex, "venue", venue="okx")
    assert okx["ok"] and okx["gross_usd"] == pytest.approx(421000)
    assert not _level(ex, "portfolio")["ok"]


@pytest.mark.parametrize("failed", [[], ["binance"]])
def test_the_summary_reads_the_tables_portfolio_row_and_the_table_is_built_once(
        failed: list[str]) -> None:
    """The report's summary takes gross / net from the portfolio scope alone (the table is
    built on first read, in the service only by its periodic write); both must agree with the
    table's portfolio row, NaN when unknown, and the table is built once per report."""
    report = evaluate(desk(failed=failed), CFG)
    assert report.state.cache.get("exposure_table") is None  # not built by the evaluation
    row = _level(report.exposures, "portfolio")
    assert (row["gross_usd"], row["net_usd"]) == pytest.approx(
        (report.summary.gross_usd, report.summary.net_usd), nan_ok=True)
    assert math.isnan(report.summary.gross_usd) == bool(failed)
    assert report.exposures is report.exposures
    pd.testing.assert_frame_equal(report.exposures, exposure_table(report.state))


def test_add_up_check_detects_a_broken_table() -> None:
    ex = evaluate(desk(), CFG).exposures.copy()
    first = ex.index[ex["level"] == "instrument"][0]
    ex.loc[first, "derivatives_gross_usd"] += 1.0
    problems = exposures_add_up(ex)
    assert problems and "instrument" in problems[0]


VENUES = ("binance", "okx", "bybit")
INSTRUMENTS = {"BTC/USDT:USDT": 61000.0, "ETH/USDT:USDT": 2900.0, "SOL/USDC:USDC": 150.0}
ASSETS = ("BTC", "ETH", "SOL", "USDT")


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(VENUES),
            st.sampled_from(("main", "sub")),
            st.sampled_from(sorted(INSTRUMENTS)),
            st.floats(-50, 50, allow_nan=False).filter(lambda q: abs(q) > 1e-6),
            st.floats(0.5, 1.5),
        ),
        max_size=25,
    ),
    holdings=st.lists(
        st.tuples(st.sampled_from((*VENUES, "fireblocks")), st.sampled_from(ASSETS),
                  st.floats(0, 1000, allow_nan=False)),
        max_size=10,
    ),
)
def test_exposure_levels_always_add_up(
    rows: list[tuple[str, str, str, float, float]], holdings: list[tuple[str, str, float]]
) -> None:
    positions = [
        position(v, inst, q, INSTRUMENTS[inst] * entry_factor, INSTRUMENTS[inst], account=a)
        for v, a, inst, q, entry_factor in rows
    ]
    balances = [
        balance(v, asset, total, source_type="custodian" if v == "fireblocks" else "exchange",
                account="vault-1" if v == "fireblocks" else "main")
        for v, asset, total in holdings
    ]
    quotes = [quote(v, inst, price) for v in VENUES for inst, price in INSTRUMENTS.items()]
    snap = snapshot(positions, balances, quotes, exchanges=VENUES,
                    vaults={"fireblocks": ("vault-1",)})
    report = evaluate(snap, CFG)
    assert exposures_add_up(report.exposures) == []
    portfolio = report.exposures[report.exposures["level"] == "portfolio"].iloc[0]
    expected_gross = sum(abs(q) * INSTRUMENTS[inst] for _, _, inst, q, _ in rows)
    assert portfolio["derivatives_gross_usd"] == pytest.approx(expected_gross, rel=1e-9, abs=1e-6)
    expected_net = sum(q * INSTRUMENTS[inst] for _, _, inst, q, _ in rows)
    assert portfolio["derivatives_net_usd"] == pytest.approx(expected_net, rel=1e-9, abs=1e-6)
