"""``exchange_outage`` through Dagster: OKX REST answers 503 for a step. The venue is marked
missing (never zero), every limit scoped to it is UNKNOWN, Slack gets an UNKNOWN alert for that
venue ("risk monitor blind on okx"), and everything resolves once it recovers.

The file's ``expect:`` says per step which sources are ``ok`` / ``unavailable`` and which
venue's limits are ``UNKNOWN`` (``<venue>_limits``).
"""

from __future__ import annotations

import json

import pytest

from risk_monitor.domain.model import LimitStatus
from risk_monitor_tests.fixtures.e2e import (
    ScenarioPlays,
    ScenarioRun,
    StepOutcome,
    alert_payloads,
    state_label,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCENARIO = "exchange_outage"
#: collection assets that hold one source per exchange venue
VENUE_ASSETS = ("market_prices", "exchange_positions", "exchange_balances")


@pytest.fixture(scope="module")
def play(scenario_plays: ScenarioPlays) -> ScenarioRun:
    return scenario_plays.get(SCENARIO)


def venue_scoped(step: StepOutcome, venue: str) -> list[str]:
    return [f"{r.limit_id} {r.scope}: {r.status.value}" for r in step.results
            if f"venue:{venue}" in r.scope.split("|")]


def unknown_venues(step: StepOutcome) -> dict[str, str]:
    """``{venue: expected status}`` from ``<venue>_limits`` entries of the step's expect."""
    return {key.removesuffix("_limits"): value for key, value in step.expect.items()
            if key.endswith("_limits")}


def test_every_run_succeeds(play: ScenarioRun) -> None:
    assert len(play.steps) == len(play.scenario.steps)
    for step in play.steps:
        assert step.success, (step.index, step.failures[:3])


def test_sources_are_ok_or_missing_as_the_file_says(play: ScenarioRun) -> None:
    checked = 0
    for step in play.steps:
        for venue, state in step.expect.get("sources", {}).items():
            assert state in ("ok", "unavailable"), state
            for asset in VENUE_ASSETS:
                statuses = [s for s in step.collected(asset).sources if s.venue == venue]
                assert statuses, (step.index, asset, venue)
                assert all(s.ok is (state == "ok") for s in statuses), \
                    (step.index, asset, [(s.key, s.ok, s.error_code) for s in statuses])
                if state == "unavailable":  # missing, never an empty (zero-risk) answer
                    frame = step.collected(asset).frame
                    assert not (frame["venue"] == venue).any(), (step.index, asset)
                    assert all(s.error_code for s in statuses)
                checked += 1
    assert checked


def test_the_venue_goes_unknown_and_alerts_then_resolves(play: ScenarioRun) -> None:
    outage = [s for s in play.steps if unknown_venues(s)]
    assert outage, "the scenario file names no UNKNOWN venue"
    for step in outage:
        for venue, status in unknown_venues(step).items():
            scoped = venue_scoped(step, venue)
            assert scoped and all(s.endswith(status) for s in scoped), (step.index, scoped)
            assert ("limit_status", "risk_is_fully_known") in step.failed_checks()
            blind = [r for r in step.results
                     if r.limit_kind == "data_age" and r.scope == f"venue:{venue}"]
            assert len(blind) == 1 and blind[0].status is LimitStatus.UNKNOWN
            assert f"blind on {venue}" in blind[0].reason, blind[0]
            # Slack heard it: an UNKNOWN alert for the venue, with the reason in the message
            before = {p["idempotency_key"] for p in alert_payloads(
                play.step(step.index - 1).slack_messages)} if step.index > 1 else set()
            new = [m for m in step.slack_messages
                   if (m["params"].get("metadata") or {}).get("event_payload", {})
                   .get("idempotency_key") not in before
                   and (m["params"].get("metadata") or {}).get("event_type")]
            venue_alerts = [m for m in new
                            if m["params"]["metadata"]["event_payload"]["scope"]
                            == f"venue:{venue}"
                            and m["params"]["metadata"]["event_payload"]["status"]
                            == LimitStatus.UNKNOWN.value]
            assert venue_alerts, [m["params"]["metadata"]["event_payload"] for m in new]
            assert any(f"blind on {venue}" in json.dumps(m["blocks"]) for m in venue_alerts)


def test_recovery_resolves_every_unknown_alert(play: ScenarioRun) -> None:
    last = play.steps[-1]
    assert all(state == "ok" for state in last.expect["sources"].values())
    assert not [r for r in last.results if r.status is LimitStatus.UNKNOWN]
    payloads = alert_payloads(play.slack_messages)
    keys = [p["idempotency_key"] for p in payloads]
    assert len(keys) == len(set(keys)), "a notification reached Slack twice"
    unknown = {p["fingerprint"] for p in payloads if state_label(p) == "UNKNOWN"}
    assert unknown
    for fingerprint in unknown:
        states = [state_label(p) for p in payloads if p["fingerprint"] == fingerprint]
        assert states == ["UNKNOWN", "RESOLVED"], (fingerprint, states)
