"""``flash_crash`` through Dagster: BTC -15 % (ETH -18 %, SOL -22 %) in seconds on every venue.

Risk Monitor prices the crash as the file says, books the unrealized loss, and the loss and
liquidation-distance limits fire (Slack hears each), while nothing was firing before it.
"""

from __future__ import annotations

import math

import pytest

from risk_monitor.domain.aggregation import PreparedInputs
from risk_monitor.domain.model import LimitStatus
from risk_monitor_tests.fixtures.e2e import ScenarioPlays, ScenarioRun, StepOutcome, alert_payloads

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCENARIO = "flash_crash"
#: the file gives the scheduled moves; the seeded random walk adds a little on top
PRICE_TOLERANCE = 0.01
#: the limits a crash of this size must trip (risk_monitor/config/limits.yaml)
CRASH_LIMITS = ("daily_loss", "liquidation_distance")


@pytest.fixture(scope="module")
def play(scenario_plays: ScenarioPlays) -> ScenarioRun:
    return scenario_plays.get(SCENARIO)


def crash_step(play: ScenarioRun) -> StepOutcome:
    (step,) = [s for s in play.steps if s.expect.get("unrealized_loss")]
    return step


def unrealized_usd(step: StepOutcome) -> float:
    state = step.outputs["portfolio_pnl"]
    assert isinstance(state, PreparedInputs)
    return float(state.pnl["unrealized_pnl_usd"].sum())


def test_every_run_succeeds(play: ScenarioRun) -> None:
    assert len(play.steps) == len(play.scenario.steps)
    for step in play.steps:
        assert step.success, (step.index, step.failures[:3])


def test_prices_follow_the_crash_on_every_venue(play: ScenarioRun) -> None:
    checked = 0
    for step in play.steps:
        frame = step.collected("market_prices").frame
        for symbol, expected in step.expect.get("prices", {}).items():
            rows = frame[frame["instrument"] == symbol]
            assert len(rows) == frame["venue"].nunique() > 0, (step.index, symbol)
            for row in rows.itertuples():
                assert math.isclose(row.last, float(expected), rel_tol=PRICE_TOLERANCE), \
                    (step.index, row.venue, symbol, row.last, expected)
                checked += 1
    assert checked


def test_the_crash_books_an_unrealized_loss(play: ScenarioRun) -> None:
    crash = crash_step(play)
    before = play.step(crash.index - 1)
    assert unrealized_usd(crash) < 0
    assert unrealized_usd(crash) < unrealized_usd(before)


def test_loss_and_liquidation_limits_fire_and_alert(play: ScenarioRun) -> None:
    crash = crash_step(play)
    before = play.step(crash.index - 1)
    previous = {p["idempotency_key"] for p in alert_payloads(before.slack_messages)}
    new = [p for p in alert_payloads(crash.slack_messages) if p["idempotency_key"] not in previous]
    for limit_id in CRASH_LIMITS:
        assert all(r.status is LimitStatus.OK for r in before.results_for(limit_id)), limit_id
        firing = [r for r in crash.results_for(limit_id)
                  if r.status in (LimitStatus.WARN, LimitStatus.BREACH)]
        assert firing, (limit_id, crash.results_for(limit_id))
        alerted = {(p["scope"], p["status"]) for p in new
                   if p["limit_id"] == limit_id and p["kind"] == "firing"}
        assert alerted == {(r.scope, r.status.value) for r in firing}, (limit_id, alerted)
    # a liquidation-distance breach means a mark at or past its liquidation price
    breached = [r for r in crash.results_for("liquidation_distance")
                if r.status is LimitStatus.BREACH]
    assert breached and all(r.value is not None and r.value <= r.breach_level for r in breached)
    assert not [r for r in crash.results if r.status is LimitStatus.UNKNOWN]
