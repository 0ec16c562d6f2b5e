"""The ``realised_pnl`` asset in a real Dagster materialisation against the venue simulators:
orders placed with ccxt (as the desk does) are read back with ``fetch_my_trades`` through the
read-only adapter; the realised P&L rebuilt from the fills equals the venue's own per-fill
figure, and net = gross - fees."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from risk_monitor.defs.positions.assets import exchange_positions
from risk_monitor.defs.positions.resources import ExchangeAccountsResource
from risk_monitor.defs.resources import SettingsResource
from risk_monitor.defs.trading.assets import realised_pnl
from risk_monitor_tests.fixtures.guards import clear_guards
from risk_monitor_tests.fixtures.sims import ccxt_client
from risk_monitor_tests.integration.sim.helpers import clear_positions
from risk_sim.launcher import SimulatorStack

pytestmark = pytest.mark.integration
BTC = "BTC/USDT:USDT"


async def trade(sim: SimulatorStack, orders: list[tuple[str, float]]) -> None:
    exchange = ccxt_client(sim, "binance", "async")
    try:
        await exchange.load_markets()
        for side, qty in orders:
            await exchange.create_order(BTC, "market", side, qty)
    finally:
        await exchange.close()


@pytest.fixture
def config(sim: SimulatorStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, value in sim.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RISK_MONITOR_CONFIG", raising=False)
    doc = sim.settings_document()
    doc["venues"] = [v for v in doc["venues"] if v["id"] == "binance"]
    for venue in doc["venues"]:
        venue["enable_rate_limit"] = False
        venue["symbols"] = [BTC]
    doc.pop("custodians", None)
    doc.update({"environment": "ci", "data_dir": str(tmp_path / "state")})
    path = tmp_path / "risk-monitor.yaml"
    path.write_text(yaml.safe_dump(doc))
    clear_guards()
    return path


def test_realised_pnl_from_fills_matches_the_venue(sim: SimulatorStack, config: Path) -> None:
    clear_positions(sim, "binance")  # flat at the start of the window: fills explain it all
    asyncio.run(trade(sim, [("buy", 2.0), ("sell", 1.0), ("sell", 1.5)]))
    result = dg.materialize([exchange_positions, realised_pnl],
                            resources={"settings": SettingsResource(config_file=str(config)),
                                       "exchange_accounts": ExchangeAccountsResource()},
                            instance=dg.DagsterInstance.ephemeral())
    check = next(c for c in result.get_asset_check_evaluations()
                 if c.check_name == "realised_matches_venue")
    assert check.passed, check.metadata
    table = result.output_for_node("realised_pnl")
    (row,) = [r for r in table.to_dict("records") if r["instrument"] == BTC]
    assert row["fills"] >= 3 and row["matches"] is True
    assert row["gross"] == pytest.approx(row["venue_reported"], abs=0.01)
    assert row["net"] == pytest.approx(row["gross"] - row["fees"] + row["funding"])
    assert row["fees"] > 0
    (event,) = [e for e in result.get_asset_materialization_events()
                if e.asset_key == dg.AssetKey("realised_pnl")]
    meta: dict[str, Any] = {k: v.value for k, v in
                            event.step_materialization_data.materialization.metadata.items()}
    assert meta["fills"] == row["fills"]
