"""The four collection assets, materialised with Dagster against Binance, OKX and Fireblocks
simulators; every value is compared with the simulator's own state."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest

from risk_monitor_tests.integration.collection.conftest import SYMBOLS, Sims, WriteSettings
from risk_monitor_tests.integration.collection.helpers import checks, materialize, metadata, output

pytestmark = pytest.mark.integration


def close(a: float, b: Decimal | float | str) -> bool:
    return math.isclose(a, float(b), rel_tol=1e-12, abs_tol=1e-9)


def by(frame: pd.DataFrame, *keys: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Rows keyed by the given columns (a plain dict: exact lookups, clear failures)."""
    rows = {}
    for record in frame.to_dict("records"):
        row = {str(k): v for k, v in record.items()}
        rows[tuple(row[k] for k in keys)] = row
    assert len(rows) == len(frame), "duplicate keys"
    return rows


def test_all_four_assets_match_the_simulators(sims: Sims, write_settings: WriteSettings) -> None:
    config = write_settings(sims.settings_doc())
    result = materialize(config)
    assert result.success

    # -- positions: every field against the market model ------------------------------------
    positions = output(result, "exchange_positions")
    assert positions.complete
    frame = by(positions.frame, "venue", "instrument", "position_side")
    expected_rows = 0
    for venue in ("binance", "okx"):
        for view in sims.market.positions(venue, "main"):
            expected_rows += 1
            row = frame[(venue, view.symbol, view.side)]
            assert row["account"] == "main"
            assert close(row["contracts"], view.contracts)
            assert close(row["contract_size"], view.instrument.contract_size)
            assert close(row["quantity"], view.quantity)
            assert close(row["entry_price"], view.position.entry_price)
            assert close(row["mark_price"], view.mark)
            assert close(row["notional"], view.notional)
            assert close(row["unrealized_pnl"], view.unrealized_pnl)
            assert close(row["liquidation_price"], view.liquidation_price)
            assert row["margin_mode"] == view.margin_mode
            if venue == "okx":  # OKX reports leverage and realised P&L (net of fees)
                assert close(row["leverage"], view.leverage)
                assert close(row["realized_pnl"],
                             view.position.realized_pnl - view.position.fees)
            else:  # Binance's v3 positionRisk has neither: unknown, not zero
                assert math.isnan(row["leverage"]) and math.isnan(row["realized_pnl"])
    assert len(positions.frame) == expected_rows == 5
    hedge = sorted(side for venue, symbol, side in frame if (venue, symbol) == ("okx", "BTC/USDT:USDT"))
    assert hedge == ["long", "short"]  # hedge mode keeps both sides

    # -- exchange balances: wallet excluding uPnL, used = initial margin ----------------------
    balances = output(result, "exchange_balances")
    assert balances.complete
    bframe = by(balances.frame, "venue", "asset")
    count = 0
    for venue in ("binance", "okx"):
        for wallet in sims.market.balances(venue, "main"):
            if wallet.wallet == 0:
                continue
            count += 1
            row = bframe[(venue, wallet.asset)]
            used = min(wallet.initial_margin, wallet.wallet)
            assert close(row["total"], wallet.wallet)
            assert close(row["used"], used)
            assert close(row["free"], wallet.wallet - used)
            assert row["source_type"] == "exchange"
    assert len(balances.frame) == count == 3

    # -- custodian balances: Decimal amounts, used = total - available -----------------------
    custody = output(result, "custodian_balances")
    assert custody.complete
    cframe = by(custody.frame, "account", "asset")
    wire = [(v["id"], a) for v in sims.fireblocks.vault_accounts() for a in v["assets"]
            if Decimal(a["total"]) != 0]
    assert len(custody.frame) == len(wire) == 4
    for vault, asset in wire:
        row = cframe[(vault, asset["id"].upper())]
        assert close(row["total"], Decimal(asset["total"]))
        assert close(row["free"], Decimal(asset["available"]))
        assert close(row["used"], Decimal(asset["total"]) - Decimal(asset["available"]))

    # -- prices: one bulk snapshot per venue --------------------------------------------------
    prices = output(result, "market_prices")
    assert prices.complete
    pframe = by(prices.frame, "venue", "instrument")
    assert len(prices.frame) == 4
    for venue in ("binance", "okx"):
        for symbol in SYMBOLS:
            quote = sims.market.quote(venue, symbol)
            price = pframe[(venue, symbol)]
            assert close(price["last"], quote.last)
            assert close(price["mark"], quote.last)  # neither REST ticker carries a mark price
            if venue == "okx":
                assert close(price["bid"], quote.bid) and close(price["ask"], quote.ask)
            else:  # Binance's 24h ticker has no book
                assert math.isnan(price["bid"]) and math.isnan(price["ask"])
    tickers = [r["path"] for r in sims.binance.requests if "ticker" in r["path"]]
    assert tickers == ["/fapi/v1/ticker/24hr"]  # bulk, never per symbol


def test_metadata_shows_coverage_overrides_and_passing_checks(sims: Sims, write_settings: WriteSettings) -> None:
    config = write_settings(sims.settings_doc())
    result = materialize(config, "exchange_positions", "custodian_balances")
    meta = metadata(result, "exchange_positions")
    assert meta["rows"] == 5
    assert meta["sources_ok"] == ["exchange:binance:main", "exchange:okx:main"]
    assert meta["sources_missing"] == {}
    assert meta["endpoint_overrides"] == {"binance": sims.binance.url, "okx": sims.okx.url}
    assert 0 <= meta["max_data_age_s"] < 30
    assert "BTC/USDT:USDT" in meta["preview"]
    assert meta["complete"] is True
    found = checks(result, "exchange_positions")
    assert {k: v.passed for k, v in found.items()} == {"positions_match_schema": True,
                                                      "positions_are_complete": True}
    custody = metadata(result, "custodian_balances")
    assert custody["endpoint_overrides"] == {"fireblocks": sims.fireblocks.base_path}
    for value in (*meta.values(), *custody.values()):
        text = str(value)
        for secret in sims.env().values():
            assert secret not in text
