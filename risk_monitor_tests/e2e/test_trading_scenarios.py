"""The trading scenarios end to end: simulators, ``risk-monitor serve`` on PostgreSQL and Redis,
and the simulated desk asking CheckOrder before every order.

Each test plays one scenario script (``risk_sim.trading.scenarios``) exactly as
``risk-sim demo --scenario <name>`` does and asserts what the desk and the venues saw: every
order was checked first, no denied order reached a venue, the desk's realised P&L equals the
venues' fills minus fees, the scenario's own expectations (the fat finger denied, the run-up
denied at the limit, reductions passing, the outage venue halted while the other trades), and
the alerts raised during the session, each delivered once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from risk_monitor_tests.fixtures.services import create_database, drop_database
from risk_monitor_tests.fixtures.waiting import async_wait_until
from risk_sim.trading.scenarios import SCRIPTS, Expectation
from risk_sim.trading.session import TradingRig, TradingSession

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def database_url() -> Iterator[str]:
    url = create_database("rm_trading")
    yield url
    drop_database(url)


async def play(name: str, tmp_path: Path, database_url: str, redis_url: str,
               redis_prefix: str) -> tuple[TradingRig, list[Expectation]]:
    session = TradingSession(name, tmp_path / name, database_url=database_url,
                             redis_url=redis_url, redis_prefix=redis_prefix,
                             printer=print)  # the timeline shows when a test fails
    async with session as rig:
        expectations = await SCRIPTS[name](rig)
        if name == "active_trading":  # the run-up's WARN reaches the alert stream
            await wait_for_alert(rig, "binance_btc_notional", "WARN")
            rig.notes.append(str(await wait_for_break(rig, "okx")))
            # the service's reconciliation pages it (the same use case as the Dagster asset)
            paged = await wait_for_alert(rig, "reconciliation", "BREACH", scope="venue:okx")
            rig.notes.append(f"reconciliation paged: {paged['scope']}")
    return rig, expectations


async def wait_for_break(rig: TradingRig, venue: str, timeout_s: float = 60.0
                         ) -> dict[str, Any]:
    """The service's three-book reconciliation finds the fill the desk did not book (the
    scenario injects one on ``venue``): the desk's published book and the venue disagree."""
    async def position_break() -> dict[str, Any] | None:
        breaks = (await rig.trading_dashboard())["reconciliation"].get("breaks", [])
        return next((dict(row) for row in breaks
                     if row.get("venue") == venue and row.get("kind") == "position"), None)

    found: dict[str, Any] = await async_wait_until(
        position_break, timeout=timeout_s, interval=0.5,
        message=f"a {venue} position break on the trading dashboard")
    return found


async def wait_for_alert(rig: TradingRig, limit_id: str, status: str,
                         timeout_s: float = 30.0, scope: str = "") -> dict[str, Any]:
    found: dict[str, Any] = await async_wait_until(
        lambda: next((a for a in rig.alerts
                      if a["limit_id"] == limit_id and a["status"] == status
                      and scope in a["scope"]), None),
        timeout=timeout_s, interval=0.1, message=f"a {status} alert for {limit_id}")
    return found


def assert_expectations(expectations: list[Expectation]) -> None:
    failed = [f"{e.name}: {e.detail}" for e in expectations if not e.ok]
    assert expectations and not failed, failed


def assert_common(rig: TradingRig) -> None:
    desk = rig.desk
    assert desk.checked and desk.violations() == []
    assert set(desk.sent) <= set(desk.checked)
    assert all(not o.sent for o in desk.denied())
    for outcome in desk.allowed():  # every allowed order reached its venue; market ones filled
        assert outcome.sent and outcome.order_id is not None and outcome.error is None, outcome
        if outcome.status == "closed":
            assert outcome.filled == pytest.approx(outcome.quantity), outcome
    assert any(o.status == "open" for o in desk.allowed()) == (rig.stack.scenario.name ==
                                                               "active_trading")
    keys = Counter(a["key"] for a in rig.alerts)
    assert all(n == 1 for n in keys.values()), keys  # each alert delivered once


@pytest.mark.parametrize("name", ["active_trading", "fat_finger", "runaway_algo"])
async def test_trading_scenario(name: str, tmp_path: Path, database_url: str, redis_url: str,
                                redis_prefix: str) -> None:
    rig, expectations = await play(name, tmp_path, database_url, redis_url, redis_prefix)
    assert_expectations(expectations)
    assert_common(rig)
    if name == "fat_finger":
        [fat] = [o for o in rig.desk.outcomes if o.quantity == 50.0]
        assert not fat.decision.allowed and not fat.sent
        assert any(r.startswith("DENY binance_btc_notional") for r in fat.decision.reasons)
    if name == "active_trading":
        statuses = [a["status"] for a in rig.alerts if a["limit_id"] == "binance_btc_notional"]
        assert statuses[0] == "WARN"


async def test_venue_outage_while_trading(tmp_path: Path, database_url: str, redis_url: str,
                                          redis_prefix: str) -> None:
    rig, expectations = await play("venue_outage_while_trading", tmp_path, database_url,
                                   redis_url, redis_prefix)
    assert_expectations(expectations)
    desk = rig.desk
    assert desk.violations() == []
    okx_denied = [o for o in desk.denied() if o.venue == "okx"]
    assert okx_denied and all(not o.sent for o in okx_denied)
    assert not [o for o in desk.denied() if o.venue == "binance"]
