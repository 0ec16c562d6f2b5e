"""``bad_data`` through Dagster: NaN prices, negative balances, stale websocket pushes and
malformed positions are each caught — the source is marked missing, its checks fail, its limits
go UNKNOWN and alert — never a silent OK; clean data brings everything back.

The file's ``expect: {invalid: [<venue>.<dataset>, ...]}`` names what is bad in each step.
``prices`` / ``balances`` / ``positions`` are what the Dagster run collects by REST (the embedded
default). ``stream`` is the live websocket feed, which the service runs, not Dagster: for those
steps the real feed (``risk_monitor.service.market_stream``) is run against the simulators and
must reject every stale tick.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from risk_monitor.domain.model import LimitStatus
from risk_monitor_tests.fixtures.e2e import (
    ScenarioPlays,
    ScenarioRun,
    StepContext,
    StepOutcome,
    alert_payloads,
)
from risk_monitor_tests.fixtures.waiting import async_wait_until, scaled

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCENARIO = "bad_data"
#: dataset named in the file -> (asset, its completeness check)
DATASETS = {"prices": ("market_prices", "prices_are_complete"),
            "balances": ("exchange_balances", "balances_are_complete"),
            "positions": ("exchange_positions", "positions_are_complete")}
STREAM_WAIT_S = 15.0


def invalid(step: StepOutcome | StepContext) -> list[tuple[str, str]]:
    return [tuple(entry.split(".", 1)) for entry in step.expect["invalid"]]  # type: ignore[misc]


def watch_live_feed(context: StepContext) -> dict[str, Any] | None:
    """For a step with bad ``<venue>.stream`` data: run the service's live feed for the venues
    until each rejected a stale tick (a deadline poll: a feed that never does fails the play),
    recording what it accepted."""
    venues = [venue for venue, dataset in invalid(context) if dataset == "stream"]
    if not venues:
        return None
    from risk_monitor.platform.settings import load_settings
    from risk_monitor.service.market_stream import feeds_for

    settings = load_settings()
    accepted: list[dict[str, Any]] = []

    def listener(venue: str, rows: list[dict[str, Any]]) -> None:
        accepted.extend({**row, "venue": venue} for row in rows)

    async def watch() -> dict[str, Any]:
        stop = asyncio.Event()
        feeds = feeds_for(settings, None, listener, venue_ids=venues)
        running = asyncio.gather(*(feed.run(stop) for feed in feeds))
        try:
            await async_wait_until(lambda: all(f.rejected.get("stale") for f in feeds),
                                   timeout=STREAM_WAIT_S, interval=0.05,
                                   message=f"the live feeds of {venues} to reject a stale tick")
        finally:
            stop.set()
            await asyncio.wait_for(running, scaled(15))
        return {f.venue.id: {"rejected": dict(f.rejected), "accepted": f.accepted}
                for f in feeds}

    feeds = asyncio.run(watch())
    budget = timedelta(seconds=settings.market_data.max_age_s)
    now = datetime.now(UTC)
    stale_accepted = [row for row in accepted if now - pd.Timestamp(row["timestamp"]) > budget]
    return {"stream": feeds, "stale_accepted": stale_accepted}


@pytest.fixture(scope="module")
def play(scenario_plays: ScenarioPlays) -> ScenarioRun:
    return scenario_plays.get(SCENARIO, hook=watch_live_feed)


def unknown_alert_firing(step: StepOutcome, venue: str) -> bool:
    """An UNKNOWN alert scoped to the venue reached Slack and is not resolved by this step."""
    latest: dict[str, dict[str, Any]] = {}
    for payload in alert_payloads(step.slack_messages):
        latest[payload["fingerprint"]] = payload
    return any(p["scope"] == f"venue:{venue}" and p["status"] == LimitStatus.UNKNOWN.value
               and p["kind"] != "resolved" for p in latest.values())


def test_every_run_succeeds(play: ScenarioRun) -> None:
    assert len(play.steps) == len(play.scenario.steps)
    for step in play.steps:
        assert step.success, (step.index, step.failures[:3])


def test_bad_data_is_caught_never_a_silent_ok(play: ScenarioRun) -> None:
    venues = {s.venue for s in play.steps[0].collected("exchange_positions").sources}
    assert venues == {"binance", "okx"}
    caught = 0
    for step in play.steps:
        bad = set(invalid(step))
        for venue in sorted(venues):
            for dataset, (asset, check) in DATASETS.items():
                statuses = [s for s in step.collected(asset).sources if s.venue == venue]
                assert statuses, (step.index, asset, venue)
                if (venue, dataset) in bad:
                    assert not any(s.ok for s in statuses), (step.index, asset, venue)
                    assert all(s.error_code for s in statuses)
                    assert step.checks[(asset, check)] is False, (step.index, asset)
                    assert step.checks[("limit_status", "risk_is_fully_known")] is False
                    scoped = [r for r in step.results
                              if f"venue:{venue}" in r.scope.split("|")]
                    assert any(r.status is LimitStatus.UNKNOWN for r in scoped), step.index
                    assert unknown_alert_firing(step, venue), (step.index, venue)
                    caught += 1
                else:  # the fault hit exactly what the file says, nothing else
                    assert all(s.ok for s in statuses), \
                        (step.index, asset, venue, [(s.key, s.error) for s in statuses])
        if not [entry for entry in bad if entry[1] in DATASETS]:
            assert not step.failed_checks(), (step.index, step.failed_checks(),
                                              step.check_metadata, step.delivery_errors)
            assert not [r for r in step.results if r.status is LimitStatus.UNKNOWN]
    assert caught == sum(1 for s in play.steps for _, d in invalid(s) if d in DATASETS) > 0


def test_stale_websocket_ticks_are_rejected_by_the_live_feed(play: ScenarioRun) -> None:
    steps = [s for s in play.steps if any(d == "stream" for _, d in invalid(s))]
    assert steps
    for step in steps:
        expected = {venue for venue, dataset in invalid(step) if dataset == "stream"}
        feeds = step.extra["stream"]
        assert set(feeds) == expected
        for venue, counters in feeds.items():
            assert counters["rejected"].get("stale", 0) >= 1, (venue, counters)
        assert step.extra["stale_accepted"] == []


def test_clean_data_resolves_every_unknown_alert(play: ScenarioRun) -> None:
    last = play.steps[-1]
    assert last.expect["invalid"] == []
    latest: dict[str, dict[str, Any]] = {}
    for payload in alert_payloads(last.slack_messages):
        latest[payload["fingerprint"]] = payload
    assert latest and all(p["kind"] == "resolved" for p in latest.values())
