"""Simulators for the collection tests: one deterministic market, Binance + OKX + Fireblocks.

The market is built here (not from a scenario) so every expected value is known: Binance in
one-way mode, OKX in hedge mode with a long and a short on the same instrument, balances on both,
and a few Fireblocks vaults. Servers are session-scoped; ``sims`` resets faults, skew and the
market state before each test. Each test writes its own settings file (environment differs by
configuration only) with fast timeouts, no rate limiting and short backoffs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from risk_monitor_tests.fixtures.guards import clear_guards
from risk_sim.exchange import BinanceSimulator, OkxSimulator
from risk_sim.fireblocks import FireblocksSimulator
from risk_sim.market import AccountSpec, InstrumentSpec, Market, MarketSpec, PositionSpec, VenueSpec

SYMBOLS = ["BTC/USDT:USDT", "ETH/USDT:USDT"]
#: the ``write_settings`` fixture: settings document -> YAML file named by RISK_MONITOR_CONFIG
WriteSettings = Callable[[dict[str, Any]], Path]


def market_spec() -> MarketSpec:
    return MarketSpec(
        seed=11,
        instruments=[
            InstrumentSpec("BTC/USDT:USDT", Decimal("60000"), volatility=0.0),
            InstrumentSpec("ETH/USDT:USDT", Decimal("3000"), volatility=0.0),
            InstrumentSpec("SOL/USDT:USDT", Decimal("150"), volatility=0.0),
        ],
        venues=[
            VenueSpec("binance", accounts=[AccountSpec(
                name="main", position_mode="one_way",
                balances={"USDT": Decimal("250000"), "BTC": Decimal("0.5")},
                positions=[
                    PositionSpec("BTC/USDT:USDT", "long", Decimal("1.5"), Decimal("58000"),
                                 leverage=5),
                    PositionSpec("ETH/USDT:USDT", "short", Decimal("20"), Decimal("3100"),
                                 margin_mode="isolated"),
                ])]),
            VenueSpec("okx", accounts=[AccountSpec(
                name="main", position_mode="hedge", balances={"USDT": Decimal("120000")},
                positions=[
                    PositionSpec("BTC/USDT:USDT", "long", Decimal("50"), Decimal("59000")),
                    PositionSpec("BTC/USDT:USDT", "short", Decimal("20"), Decimal("61000")),
                    PositionSpec("ETH/USDT:USDT", "long", Decimal("30"), Decimal("2900")),
                ])]),
        ],
    )


@dataclass
class Sims:
    market: Market
    binance: BinanceSimulator
    okx: OkxSimulator
    fireblocks: FireblocksSimulator

    def env(self) -> dict[str, str]:
        creds = self.market.credentials()
        return {
            "RMTEST_BINANCE_KEY": str(creds["binance"]["main"]["api_key"]),
            "RMTEST_BINANCE_SECRET": str(creds["binance"]["main"]["secret"]),
            "RMTEST_OKX_KEY": str(creds["okx"]["main"]["api_key"]),
            "RMTEST_OKX_SECRET": str(creds["okx"]["main"]["secret"]),
            "RMTEST_OKX_PASSWORD": str(creds["okx"]["main"]["password"]),
            "RMTEST_FB_KEY": self.fireblocks.api_key,
            "RMTEST_FB_PEM": self.fireblocks.private_key_pem,
        }

    def settings_doc(self, **overrides: Any) -> dict[str, Any]:
        """A Risk Monitor settings document pointing at the simulators, tuned for tests."""
        venue_common = {"enable_rate_limit": False, "timeout_ms": 3000, "symbols": SYMBOLS,
                        "options": {"fetchMarkets": {"types": ["swap"]}}}
        doc: dict[str, Any] = {
            "environment": "ci",
            "venues": [
                {"id": "binance", "exchange": "binanceusdm", "account": "main",
                 "api_key_env": "RMTEST_BINANCE_KEY", "secret_env": "RMTEST_BINANCE_SECRET",
                 "endpoint_override": self.binance.url, "ws_endpoint_override": self.binance.ws_url,
                 **venue_common, "options": {}},
                {"id": "okx", "exchange": "okx", "account": "main",
                 "api_key_env": "RMTEST_OKX_KEY", "secret_env": "RMTEST_OKX_SECRET",
                 "password_env": "RMTEST_OKX_PASSWORD",
                 "endpoint_override": self.okx.url, "ws_endpoint_override": self.okx.ws_url,
                 **venue_common},
            ],
            "custodians": [{"id": "fireblocks", "api_key_env": "RMTEST_FB_KEY",
                            "secret_key_env": "RMTEST_FB_PEM",
                            "endpoint_override": self.fireblocks.base_path, "page_size": 2,
                            "timeout_s": 3}],
            # 300 s, not 30: the schema checks re-apply the age rule at check time, and on a
            # loaded machine (CI's contention run) a collection can take a minute; the stale
            # cases use ages of an hour
            "market_data": {"source": "rest", "max_age_s": 300, "poll_interval_s": 0.2,
                            "reconnect_initial_s": 0.05, "reconnect_max_s": 0.5},
            "resilience": {"timeout_s": 5, "max_attempts": 3, "backoff_initial_s": 0.02,
                           "backoff_max_s": 0.2, "breaker_fail_max": 50,
                           "breaker_reset_s": 1},
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(doc.get(key), dict):
                doc[key] = {**doc[key], **value}
            else:
                doc[key] = value
        return doc

    def vaults(self) -> None:
        self.fireblocks.set_vault_balance("0", "BTC", "2.50000000", frozen="0.5")
        self.fireblocks.set_vault_balance("0", "USDT_ERC20", "1000000.123456")
        self.fireblocks.set_vault_balance("1", "ETH", "40", locked="1.25")
        self.fireblocks.set_vault_balance("2", "BTC", "0.001")
        self.fireblocks.set_vault_balance("3", "SOL", "0")


@pytest.fixture(scope="session")
def exchange_sims() -> Iterator[tuple[Market, BinanceSimulator, OkxSimulator]]:
    market = Market(market_spec())
    binance = BinanceSimulator(market, seed=1)
    okx = OkxSimulator(market, seed=2)
    binance.start()
    okx.start()
    yield market, binance, okx
    binance.stop()
    okx.stop()


@pytest.fixture
def sims(exchange_sims: tuple[Market, BinanceSimulator, OkxSimulator],
         fireblocks_sim: FireblocksSimulator,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[Sims]:
    market, binance, okx = exchange_sims
    market.load(market_spec())
    binance.reset()
    okx.reset()
    state = Sims(market, binance, okx, fireblocks_sim)
    state.vaults()
    for name, value in state.env().items():
        monkeypatch.setenv(name, value)
    clear_guards()
    yield state
    binance.reset()
    okx.reset()
    clear_guards()


@pytest.fixture
def write_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WriteSettings:
    """Write a settings document to a YAML file and point RISK_MONITOR_CONFIG at it."""
    def write(doc: dict[str, Any]) -> Path:
        path = tmp_path / "risk-monitor.yaml"
        # state (the markets cache, the embedded store) stays in the test's own folder
        path.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "state"), **doc}))
        monkeypatch.setenv("RISK_MONITOR_CONFIG", str(path))
        return path
    for name in list(os.environ):
        if name.startswith("RISK_MONITOR_") and name != "RISK_MONITOR_FORBID_SKIPS":
            monkeypatch.delenv(name)
    return write
