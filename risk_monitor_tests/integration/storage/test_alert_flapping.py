"""A flapping source at the default settings, through the real alert transaction
(``application.raise_alerts`` on PostgreSQL: store lock, states, outbox, audit) and the outbox
dispatcher to the Slack simulator, for 10 simulated minutes (injected clock): at most one
notified episode, and one Slack message for it (the store still records each flap)."""

from __future__ import annotations

import pytest

from risk_monitor import application
from risk_monitor.adapters.notifiers import SlackNotifier
from risk_monitor.adapters.sql import BackoffPolicy, OutboxDispatcher, Storage
from risk_monitor.platform.settings import Settings, load_settings
from risk_monitor_tests.fixtures.storage import FakeClock, make_result
from risk_sim.slack import SlackSimulator

pytestmark = pytest.mark.integration

TOKEN_ENV = "RISK_MONITOR_TEST_SLACK_TOKEN"


@pytest.mark.parametrize("period_s", [20, 60])
def test_a_flapping_source_for_ten_minutes_is_at_most_one_episode(
        pg_storage: Storage, clock: FakeClock, slack_sim: SlackSimulator,
        monkeypatch: pytest.MonkeyPatch, period_s: int) -> None:
    monkeypatch.setenv(TOKEN_ENV, slack_sim.token)
    settings = load_settings(slack={"token_env": TOKEN_ENV, "base_url": slack_sim.api_base})
    defaults = Settings.model_validate({}).alerts
    assert settings.alerts == defaults  # the noise controls at their defaults
    policy = application.alert_policy(settings)
    dispatcher = OutboxDispatcher(pg_storage.engine, SlackNotifier.from_settings(settings),
                                  clock=clock, notifier_name="slack",
                                  backoff=BackoffPolicy(initial_s=1.0, max_s=30.0, jitter=0.0))
    step_s = 10
    for i in range(10 * 60 // step_s):  # down for period_s, back for period_s, ...
        at = clock.advance(step_s)
        down = (i * step_s // period_s) % 2 == 1
        result = make_result("UNKNOWN" if down else "OK", at)
        application.raise_alerts(pg_storage, [result], now=at, policy=policy, context={})
        dispatcher.dispatch_once(10)

    rows = pg_storage.outbox.rows()
    assert len({row.episode for row in rows}) <= 1, [(r.kind, r.episode) for r in rows]
    assert [row.kind for row in rows] in ([], ["firing"])  # never resolved while it flaps
    assert len(slack_sim.messages) == len(rows)
    if period_s > defaults.unknown_for_s:  # down long enough each time: paged, once
        assert [(row.kind, row.alert_status, row.status) for row in rows] == [
            ("firing", "UNKNOWN", "sent")]
    # the series is recorded all along (compliance and the dashboard see every flap)
    (state,) = pg_storage.alerts.all_states()
    assert state.last_evaluated_at == clock()
