"""``slack_outage`` through Dagster: Slack fails (5xx, then timeouts) exactly while a limit
breaches; the alert waits in the durable outbox, arrives once Slack is back, never twice, and
the resolve follows it in the same thread.

The file's ``expect:`` gives, per step, the limit status, whether Slack is ``ok`` or ``failing``
and how many alerts Slack should hold by then (``alerts_delivered``).
"""

from __future__ import annotations

import pytest

from risk_monitor.adapters.sql import Storage
from risk_monitor_tests.fixtures.e2e import (
    ScenarioPlays,
    ScenarioRun,
    alert_payloads,
    assert_limit_expectations,
    expected_state_messages,
    limit_expectations,
    state_label,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCENARIO = "slack_outage"
DELIVERY_CHECK = ("risk_alerts", "alerts_are_delivered")


@pytest.fixture(scope="module")
def play(scenario_plays: ScenarioPlays) -> ScenarioRun:
    return scenario_plays.get(SCENARIO)


def test_every_run_succeeds_even_while_slack_is_down(play: ScenarioRun) -> None:
    assert len(play.steps) == len(play.scenario.steps)
    for step in play.steps:
        assert step.success, (step.index, step.failures[:3])


def test_each_step_matches_the_scenario_file(play: ScenarioRun) -> None:
    assert assert_limit_expectations(play, utilisation_tolerance=0.02) > 0


def test_a_failing_slack_fails_the_delivery_check_and_nothing_else(play: ScenarioRun) -> None:
    steps = [s for s in play.steps if "slack" in s.expect]
    assert {s.expect["slack"] for s in steps} == {"ok", "failing"}
    for step in steps:
        failing = step.expect["slack"] == "failing"
        assert step.checks[DELIVERY_CHECK] is not failing, (step.index, step.check_metadata)
        assert step.failed_checks() == ({DELIVERY_CHECK} if failing else set()), step.index
        if failing:  # queued for a retry, not dropped
            assert step.check_metadata[DELIVERY_CHECK]["pending"] >= 1
            assert step.check_metadata[DELIVERY_CHECK]["failed_for_good"] == 0


def test_alerts_reach_slack_only_once_it_is_back(play: ScenarioRun) -> None:
    counted = [s for s in play.steps if "alerts_delivered" in s.expect]
    assert counted
    for step in counted:
        assert len(alert_payloads(step.slack_messages)) == step.expect["alerts_delivered"], \
            (step.index, alert_payloads(step.slack_messages))


def test_every_alert_is_delivered_after_the_outage_and_none_twice(play: ScenarioRun) -> None:
    storage = Storage.open(play.database_url)
    try:
        rows = storage.outbox.rows()
    finally:
        storage.close()
    payloads = alert_payloads(play.slack_messages)
    assert rows and all(row.status == "sent" for row in rows), [(r.kind, r.status) for r in rows]
    keys = [p["idempotency_key"] for p in payloads]
    assert len(keys) == len(set(keys)), "a notification reached Slack twice"
    assert sorted(keys) == sorted(r.idempotency_key for r in rows)
    # the breach was raised during the outage: it took retries and still arrived exactly once
    outage_steps = [s.index for s in play.steps if s.expect.get("slack") == "failing"]
    raised_during_outage = [r for r in rows if r.kind == "firing"]
    assert raised_during_outage and all(r.attempts > len(outage_steps) for r in
                                        raised_during_outage), rows
    # in order, and the resolve threads under the breach message posted after the outage
    (limit_id, per_step), = limit_expectations(play).items()
    statuses = [expect["status"] for _, expect in per_step]
    assert [state_label(p) for p in payloads] == expected_state_messages(statuses)
    assert {p["limit_id"] for p in payloads} == {limit_id}
    first, resolve = (m for m in play.slack_messages
                      if ((m.get("params") or {}).get("metadata") or {}).get("event_type"))
    assert resolve["thread_ts"] == first["ts"]
