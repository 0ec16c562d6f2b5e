"""The configuration the simulator launcher writes (risk-sim up) drives the collection as is:
only test speed settings are changed (no client-side rate limiting)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from risk_monitor_tests.integration.collection.conftest import WriteSettings
from risk_monitor_tests.integration.collection.helpers import materialize, output
from risk_sim.launcher import SimulatorStack

pytestmark = pytest.mark.integration


def test_the_launcher_configuration_collects_every_source(sim: SimulatorStack,
                                                          write_settings: WriteSettings,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    doc = sim.settings_document()
    for venue in doc["venues"]:
        venue["enable_rate_limit"] = False
    config = write_settings(doc)
    for env_name, env_value in sim.env().items():
        monkeypatch.setenv(env_name, env_value)
    result = materialize(config)
    assert result.success
    collected = {name: output(result, name) for name in
                 ("market_prices", "exchange_positions", "exchange_balances",
                  "custodian_balances")}
    for asset, data in collected.items():
        assert data.complete, (asset, data.missing)
    expected_positions = sum(len(sim.market.positions(v["id"], v["account"]))
                             for v in doc["venues"])
    assert len(collected["exchange_positions"].frame) == expected_positions
    symbols = sum(len(v["symbols"]) for v in doc["venues"])
    assert len(collected["market_prices"].frame) == symbols
    assert sim.fireblocks is not None
    vault_assets = sum(1 for v in sim.fireblocks.vault_accounts() for a in v["assets"]
                       if Decimal(a["total"]) != 0 or Decimal(a["available"]) != 0)
    assert len(collected["custodian_balances"].frame) == vault_assets
