"""The default limits against the simulator's desks (figures copied from risk_sim/scenarios).

The calm desk must sit inside every default limit; the limit_breach walk must move exactly one
limit (binance_btc_notional) through OK → WARN → BREACH → OK. Custody asset ids such as
Fireblocks' USDT_ERC20 are valued through ``valuation.asset_aliases``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from risk_monitor.domain.engine import evaluate
from risk_monitor.domain.limits import load_limit_config
from risk_monitor.domain.model import LimitStatus
from risk_monitor_tests.unit.domain.builders import balance, by_scope, position, quote, snapshot

DEFAULT = load_limit_config(
    yaml.safe_load(
        (Path(__file__).resolve().parents[3] / "risk_monitor" / "config" / "limits.yaml").read_text()
    )
)
PRICES = {"BTC/USDT:USDT": 60000.0, "ETH/USDT:USDT": 3000.0, "SOL/USDT:USDT": 150.0}
VAULTS = ("0", "1", "2")


def _quotes() -> list[dict[str, Any]]:
    return [quote(v, s, p) for v in ("binance", "okx") for s, p in PRICES.items()]


def _custody(holdings: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    return [balance("fireblocks", asset, total, account=vault, source_type="custodian")
            for vault, assets in holdings.items() for asset, total in assets.items()]


def calm_desk() -> Any:
    positions = [
        position("binance", "BTC/USDT:USDT", 10, 59800, 60000),
        position("binance", "ETH/USDT:USDT", -100, 3050, 3000),
        position("binance", "SOL/USDT:USDT", 2000, 148, 150),
        position("okx", "BTC/USDT:USDT", 5, 60100, 60000, side="long"),  # 500 contracts x 0.01
        position("okx", "BTC/USDT:USDT", -2, 60500, 60000, side="short"),
        position("okx", "ETH/USDT:USDT", 30, 2980, 3000, side="long"),  # 300 contracts x 0.1
    ]
    balances = [
        balance("binance", "USDT", 2_500_000), balance("binance", "USDC", 250_000),
        balance("okx", "USDT", 1_500_000),
        *_custody({"0": {"BTC": 40, "ETH": 500, "USDT_ERC20": 3_000_000},
                   "1": {"BTC": 2.5, "USDT_ERC20": 250_000},
                   "2": {"BTC": 120, "ETH": 1500}}),
    ]
    return snapshot(positions, balances, _quotes(), vaults={"fireblocks": VAULTS})


def test_calm_desk_is_inside_every_default_limit() -> None:
    report = evaluate(calm_desk(), DEFAULT)
    not_ok = [(r.limit_id, r.scope, r.status.value, r.reason) for r in report.results
              if r.status is not LimitStatus.OK]
    assert not_ok == []
    assert report.portfolio.equity_usd == pytest.approx(23_256_100, rel=1e-3)
    top = max(r.utilisation or 0.0 for r in report.results)
    assert top < 0.8  # well inside: nothing closer than 80 % of a breach level
    custody = report.state.balances[report.state.balances["asset"] == "USDT_ERC20"]
    assert set(custody["currency"]) == {"USDT"} and bool(custody["is_stable"].all())


@pytest.mark.parametrize(
    ("btc", "status"), [(10, "OK"), (14.2, "WARN"), (18.4, "BREACH"), (8.4, "OK")]
)
def test_limit_breach_walk_moves_only_the_btc_limit(btc: float, status: str) -> None:
    # 600k → 852k → 1.104M → 504k at 60,000: 60 % → 85 % → 110 % → 50 %
    positions = [
        position("binance", "BTC/USDT:USDT", btc, 59800, 60000),
        position("okx", "ETH/USDT:USDT", 20, 2990, 3000),  # 200 contracts x 0.1
    ]
    balances = [balance("binance", "USDT", 2_500_000), balance("okx", "USDT", 1_000_000),
                *_custody({"0": {"BTC": 40, "USDT_ERC20": 3_000_000}})]
    snap = snapshot(positions, balances, _quotes(), vaults={"fireblocks": ("0",)})
    results = evaluate(snap, DEFAULT).results
    btc_limit = by_scope(results, "binance_btc_notional")["venue:binance|instrument:BTC/USDT:USDT"]
    assert btc_limit.status.value == status
    assert btc_limit.utilisation == pytest.approx(btc * 60000 / 1e6)
    others = [(r.limit_id, r.scope, r.status.value) for r in results
              if r.limit_id != "binance_btc_notional" and r.status is not LimitStatus.OK]
    assert others == []


def test_unaliased_custody_asset_fails_closed() -> None:
    cfg = load_limit_config({**DEFAULT.model_dump(mode="json"),
                             "valuation": {"asset_aliases": {}}})
    report = evaluate(calm_desk(), cfg)
    gross = by_scope(report.results, "portfolio_gross")["portfolio"]
    assert gross.status is LimitStatus.UNKNOWN and "USDT_ERC20" in gross.reason
