"""The trading scenarios end to end: simulators, ``risk-monitor serve`` on PostgreSQL and Redis,
and the simulated desk asking CheckOrder before every order.

Each test plays one scenario script (``risk_sim.trading.scenarios``) exactly as
``risk-sim demo --scenario <name>`` does and asserts what the desk and the venues saw: every
order was checked first, no denied order reached a venue, the desk's realised P&L equals the
venues' fills minus fees, the scenario's own expectations (the fat finger denied, the run-up
denied at the limit, reductions passing, the outage venue halted while the other trades);
after every step, the monitor's positions and P&L matched the venues' within the stated
tolerance (``risk_sim.trading.truth``; each comparison is on the timeline); and the Slack
simulator received exactly the scenario's expected alert sequence, in order, each once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from risk_monitor_tests.fixtures.services import create_database, drop_database
from risk_monitor_tests.fixtures.waiting import async_wait_until, scaled
from risk_sim.trading.scenarios import EXPECTED_ALERTS, SCRIPTS, Expectation, ExpectedAlert
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
                             printer=print,  # the timeline shows when a test fails
                             catch_up_s=scaled(CATCH_UP_S), ready_timeout_s=scaled(120.0))
    async with session as rig:
        expectations = await SCRIPTS[name](rig)
        if name == "active_trading":
            rig.notes.append(str(await wait_for_break(rig, "okx")))
        # the service's reconciliation pages the break (the same use case as the Dagster
        # asset): its notice is part of the expected Slack sequence
        delivered = await wait_for_delivery(rig, list(EXPECTED_ALERTS[name]))
        rig.desk.log("note", "", "", rig.catch_up_summary())
        rig.desk.log("note", "", "", "Slack received: " + ("; ".join(a.text() for a in delivered)
                                                           or "nothing"))
    return rig, expectations


#: how long a comparison waits for the monitor to agree with the venues: a hang guard, not a
#: speed goal (the comparison polls and returns at agreement; how fast the monitor follows a fill
#: is measured by bench/bench_trading.py, and the timeline prints the slowest catch-up). At 2 s
#: (x3 under contention) a venue's reconnect after an outage missed it at load average 24.
CATCH_UP_S = 10.0


async def wait_for_delivery(rig: TradingRig, expected: list[ExpectedAlert],
                            timeout_s: float = 45.0) -> list[ExpectedAlert]:
    """Until Slack holds the expected sequence and every alert the service raised (gRPC
    ``WatchAlerts``) reached Slack; then what was delivered (the test compares it)."""
    def delivered() -> tuple[list[ExpectedAlert]] | None:  # a tuple: [] is an answer too
        notices = rig.delivered_alerts()
        keys = {str(a.get("idempotency_key")) for a in notices}
        sequence = [ExpectedAlert.of(a) for a in notices]
        complete = sequence == expected and {a["key"] for a in rig.alerts} <= keys
        return (sequence,) if complete else None

    found: tuple[list[ExpectedAlert]] = await async_wait_until(
        delivered, timeout=timeout_s, interval=0.1,
        message=f"Slack to hold {[a.text() for a in expected]} "
                f"(delivered: {[a.text() for a in map(ExpectedAlert.of, rig.delivered_alerts())]})")
    return found[0]


async def wait_for_break(rig: TradingRig, venue: str, timeout_s: float = 60.0
                         ) -> dict[str, Any]:
    """The service's three-book reconciliation finds the fill the desk did not book (the
    scenario injects one on ``venue``): the desk's published book and the venue disagree, as
    of the same time (a PENDING "desk ahead" row is no break)."""
    async def position_break() -> dict[str, Any] | None:
        breaks = (await rig.trading_dashboard())["reconciliation"].get("breaks", [])
        return next((dict(row) for row in breaks
                     if row.get("venue") == venue and row.get("kind") == "position"
                     and row.get("status") == "BREAK"), None)

    found: dict[str, Any] = await async_wait_until(
        position_break, timeout=timeout_s, interval=0.5,
        message=f"a {venue} position break on the trading dashboard")
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
    assert_alerts(rig)
    assert_truth(rig)  # last: a divergence still lets the checks above speak


def assert_truth(rig: TradingRig) -> None:
    """After every step the monitor agreed with the venues (positions, unrealised at its mark,
    realised P&L and fees from the fills) within the tolerance, caught up within CATCH_UP_S."""
    comparisons = rig.comparisons
    assert len(comparisons) > len(rig.desk.outcomes), "a step was not compared"
    diverged = [c.line() for c in comparisons if not c.ok]
    assert not diverged, f"the monitor diverged from the venues ({rig.tolerance.stated()}):\n" \
        + "\n".join(diverged)


def assert_alerts(rig: TradingRig) -> None:
    """Slack received the scenario's expected sequence, nothing missing, doubled or extra, in
    order; and every alert the service raised was delivered."""
    delivered = rig.delivered_alerts()
    keys = Counter(str(a.get("idempotency_key")) for a in delivered)
    assert all(n == 1 for n in keys.values()), keys  # each alert delivered once
    expected = [a.text() for a in EXPECTED_ALERTS[rig.stack.scenario.name]]
    assert [ExpectedAlert.of(a).text() for a in delivered] == expected
    assert {a["key"] for a in rig.alerts} <= set(keys), "raised but not delivered to Slack"


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


async def test_venue_outage_while_trading(tmp_path: Path, database_url: str, redis_url: str,
                                          redis_prefix: str) -> None:
    rig, expectations = await play("venue_outage_while_trading", tmp_path, database_url,
                                   redis_url, redis_prefix)
    assert_expectations(expectations)
    desk = rig.desk
    assert desk.violations() == []
    assert_alerts(rig)
    assert_truth(rig)  # last: a divergence still lets the checks above speak
    okx_denied = [o for o in desk.denied() if o.venue == "okx"]
    assert okx_denied and all(not o.sent for o in okx_denied)
    assert not [o for o in desk.denied() if o.venue == "binance"]
