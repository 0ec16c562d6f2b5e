"""Each venue server's /__admin JSON API, as a demo driver in another process uses it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from risk_sim.launcher import SimulatorStack

pytestmark = pytest.mark.integration
BTC = "BTC/USDT:USDT"


def admin(sim: SimulatorStack, venue: str, path: str, body: dict[str, Any] | None = None) -> Any:
    server = sim.venue(venue)
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{server.url}/__admin/{path}", data=data,
                                     method="POST" if body is not None else "GET",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


@pytest.mark.parametrize("venue", ["binance", "okx"])
def test_admin_changes_the_market_and_reports_the_truth(sim: SimulatorStack, venue: str) -> None:
    venue_id = sim.market.instrument(venue, BTC).venue_id
    answer = admin(sim, venue, "price", {"symbol": venue_id, "price": 50000, "venue_only": True})
    assert answer["ok"] and float(answer["quote"]["last"]) == 50000
    other = "okx" if venue == "binance" else "binance"
    assert sim.market.quote(other, BTC).last != 50000  # venue_only
    admin(sim, venue, "price", {"symbol": BTC, "pct": -10, "over": 10})
    admin(sim, venue, "clock/advance", {"seconds": 10})
    assert float(sim.market.quote(venue, BTC).last) == pytest.approx(45000, rel=2e-3)  # + walk
    admin(sim, venue, "balance", {"asset": "USDT", "amount": "123456.78"})
    admin(sim, venue, "position", {"symbol": BTC, "side": "short", "contracts": "3",
                                   "entry_price": "47000"})
    state = admin(sim, venue, "state")
    account = state["accounts"]["main"]
    assert account["balances"]["USDT"]["wallet"] == "123456.78"
    [short] = [p for p in account["positions"] if p["symbol"] == BTC and p["side"] == "short"]
    assert (short["contracts"], short["entry_price"]) == ("3", "47000")
    assert float(state["prices"][BTC]["last"]) == float(sim.market.quote(venue, BTC).last)
    admin(sim, venue, "clock/skew", {"seconds": 42})
    assert sim.venue(venue).clock_offset_s == 42
    assert admin(sim, venue, "reset", {})["ok"] and sim.venue(venue).clock_offset_s == 0


def test_admin_orders_rate_limits_and_errors(sim: SimulatorStack) -> None:
    placed = admin(sim, "binance", "order", {"symbol": "ETH/USDT:USDT", "side": "sell",
                                              "amount": "1"})
    assert placed["ok"] and float(placed["fee"]) > 0
    with pytest.raises(urllib.error.HTTPError) as refused:
        admin(sim, "binance", "order", {"symbol": "ETH/USDT:USDT", "side": "buy",
                                        "amount": "0.0001"})
    assert refused.value.code == 400
    assert json.loads(refused.value.read())["reason"] == "bad_quantity"
    assert admin(sim, "okx", "rate_limit", {"limit": 3})["limit"] == 3
    assert admin(sim, "binance", "rate_limit", {"limit": 50})["limit"] == 50
    with pytest.raises(urllib.error.HTTPError) as bad:
        admin(sim, "okx", "price", {"symbol": "NOPE"})
    assert bad.value.code == 400
    assert admin(sim, "okx", "position_mode", {"mode": "hedge"})["ok"]  # already hedge: no-op
    with pytest.raises(urllib.error.HTTPError):  # positions open: refused
        admin(sim, "binance", "position_mode", {"mode": "hedge"})
