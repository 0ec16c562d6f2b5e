"""Materialise the collection assets in-process against the simulators."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import dagster as dg

from risk_monitor.defs.balances.assets import custodian_balances, exchange_balances
from risk_monitor.defs.balances.resources import CustodiansResource
from risk_monitor.defs.market_data.assets import market_prices
from risk_monitor.defs.market_data.resources import MarketDataResource
from risk_monitor.defs.positions.assets import exchange_positions
from risk_monitor.defs.positions.resources import ExchangeAccountsResource
from risk_monitor.defs.resources import SettingsResource
from risk_monitor.domain.model import Collected
from risk_sim.faults import Fault, FaultKind

ASSETS = {"market_prices": market_prices, "exchange_positions": exchange_positions,
          "exchange_balances": exchange_balances, "custodian_balances": custodian_balances}


def materialize(config: Path, *names: str, raise_on_error: bool = True
                ) -> dg.ExecuteInProcessResult:
    chosen = [ASSETS[n] for n in (names or ASSETS)]
    return dg.materialize(
        chosen,
        resources={"settings": SettingsResource(config_file=str(config)),
                   "exchange_accounts": ExchangeAccountsResource(),
                   "custodians": CustodiansResource(),
                   "market_data": MarketDataResource()},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )


def output(result: dg.ExecuteInProcessResult, name: str) -> Collected:
    value = result.output_for_node(name)
    assert isinstance(value, Collected)
    return value


def metadata(result: dg.ExecuteInProcessResult, name: str) -> dict[str, Any]:
    (event,) = [e for e in result.get_asset_materialization_events()
                if e.asset_key == dg.AssetKey(name)]
    mat = event.step_materialization_data.materialization
    return {k: v.value for k, v in mat.metadata.items()}


def checks(result: dg.ExecuteInProcessResult, name: str) -> dict[str, Any]:
    found = {}
    for event in result.get_asset_check_evaluations():
        if event.asset_key == dg.AssetKey(name):
            found[event.check_name] = event
    return found


def add_fault(sim: Any, kind: str, route: str = "*", **params: Any) -> Fault:
    """Add a fault named by a (parametrised) string to a simulator's injector."""
    fault: Fault = sim.faults.add(cast(FaultKind, kind), route, **params)
    return fault
