"""Messages that tell people what to do, as posted through the outbox, the real slack_sdk client
and the Slack simulator: owner, runbook, value vs warn/breach in the limit's unit, headroom in
USD, time in status, links to the dashboard and the lineage record, and how long a resolved
episode lasted (``adapters/alert_messages.py``)."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import Any

import pytest

from risk_monitor.adapters.alert_messages import alertmanager_annotations, render_text
from risk_monitor.adapters.notifiers import SlackNotifier
from risk_monitor.adapters.sql import BackoffPolicy, OutboxDispatcher, Storage
from risk_monitor.application.alerting import raise_alerts
from risk_monitor.domain.alerts import AlertPolicy, AlertRule, plan_alerts
from risk_monitor.domain.engine import evaluate as evaluate_desk
from risk_monitor.platform.settings import load_settings
from risk_monitor_tests.fixtures.storage import FakeClock, make_result
from risk_monitor_tests.unit.domain.builders import NOW, config, desk
from risk_sim.slack import SlackSimulator

pytestmark = pytest.mark.integration

TOKEN_ENV = "RISK_MONITOR_TEST_SLACK_TOKEN"
RUNBOOK = "https://runbooks.example/max-notional"
DASHBOARD = "https://risk.example/dashboard"
LINEAGE = "http://dagster.test:3000/assets/live_limit_status?partition=abc"


def _payload(message: dict[str, Any]) -> dict[str, Any]:
    return dict(message["metadata"]["event_payload"])


def test_every_state_says_who_what_how_far_how_long_and_where(
        pg_storage: Storage, clock: FakeClock, slack_sim: SlackSimulator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, slack_sim.token)
    settings = load_settings(slack={"token_env": TOKEN_ENV, "base_url": slack_sim.api_base},
                             alerts={"dagster_ui_url": "http://dagster.test:3000",
                                     "dashboard_url": DASHBOARD})
    notifier = SlackNotifier.from_settings(settings)
    policy = AlertPolicy(rules={"max_notional": AlertRule(owner="btc-desk",
                                                          runbook_url=RUNBOOK)})
    dispatcher = OutboxDispatcher(pg_storage.engine, notifier, clock=clock,
                                  notifier_name="slack",
                                  backoff=BackoffPolicy(initial_s=1.0, max_s=30.0, jitter=0.0))
    states = []
    for status in ("WARN", "BREACH", "OK"):
        result = make_result(status, clock.advance(60))
        with pg_storage.alerts.locked([result.fingerprint]) as tx:
            plan = plan_alerts(tx.states, [result], clock(), policy,
                               context={"dagster_event_url": LINEAGE})
            tx.apply(plan.states, plan.notifications)
        assert dispatcher.dispatch_once(10).sent == 1
        # as posted (the simulator later edits the thread's first message in place)
        states.append(copy.deepcopy([m for m in slack_sim.messages if m["metadata"]][-1]))
    firing, escalated, resolved = states
    correlation = _payload(firing)["correlation_id"]
    assert [_payload(m)["kind"] for m in states] == ["firing", "escalated", "resolved"]

    # the text alone (notifications, file sink) says it all
    assert "value 850 USD vs warn 800 USD / breach 1,000 USD (85.0% of breach level)" \
        in firing["text"]
    assert "headroom 150 USD" in firing["text"]
    assert "owner btc-desk" in firing["text"] and f"runbook {RUNBOOK}" in firing["text"]
    assert "headroom -200 USD (breached)" in escalated["text"]
    assert "firing for 1m 00s" in escalated["text"]  # time in status since the episode began
    assert "episode lasted 2m 00s" in resolved["text"]

    blocks = json.dumps(firing["blocks"])
    assert f"*What to do*: follow the <{RUNBOOK}|runbook>; owner *btc-desk*" in blocks
    assert f"{DASHBOARD}?alert={correlation}" in blocks  # the dashboard, on this alert
    assert LINEAGE in blocks  # the lineage record (the evaluation's Dagster event)
    assert f"risk-monitor audit trace {correlation}" in blocks
    reply = json.dumps(escalated["blocks"])
    assert "*Headroom to breach*\\n-200 USD (breached)" in reply
    assert "*Time in status*\\n1m 00s" in reply
    assert "*Episode lasted*\\n2m 00s" in json.dumps(resolved["blocks"])


def test_a_limit_without_runbook_says_so_and_annotations_match_the_message() -> None:
    at = make_result("BREACH", clock_start := FakeClock()())
    (note,) = plan_alerts({}, [at], clock_start).notifications
    assert "runbook" not in render_text(note)
    note = replace(note, context={**note.context, "owner": "btc-desk", "runbook_url": RUNBOOK})
    found = alertmanager_annotations(note, "http://dagster.test:3000", DASHBOARD)
    assert found["description"] == render_text(note)
    assert (found["value"], found["breach_level"], found["headroom"]) == (
        "1,200 USD", "1,000 USD", "-200 USD (breached)")
    assert found["runbook_url"] == RUNBOOK and found["owner"] == "btc-desk"
    assert found["dashboard_url"] == f"{DASHBOARD}?alert={note.correlation_id}"
    assert found["trace"] == f"risk-monitor audit trace {note.correlation_id}"


def test_percent_and_ratio_limits_give_their_headroom_in_usd_too(
        pg_storage: Storage, slack_sim: SlackSimulator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Leverage and concentration headroom in USD from the evaluation's own equity (carried
    on the result, not recomputed by the message); a liquidation distance says it has none.
    The desk: equity 2,481,000 USD, gross 1,771,000 USD, BTC gross 1,220,000 USD."""
    monkeypatch.setenv(TOKEN_ENV, slack_sim.token)
    settings = load_settings(slack={"token_env": TOKEN_ENV, "base_url": slack_sim.api_base})
    cfg = config(
        {"id": "lev", "kind": "leverage", "scope": {}, "warn": 0.5, "breach": 0.8},
        {"id": "conc", "kind": "concentration", "scope": {"asset": "BTC"}, "warn": 40,
         "breach": 80},
        {"id": "liq", "kind": "liquidation_distance",
         "scope": {"venue": "binance", "instrument": "BTC/USDT:USDT"}, "warn": 20, "breach": 10},
        venues=["binance", "okx", "fireblocks"])
    results = evaluate_desk(desk(), cfg).results
    raise_alerts(pg_storage, results, now=NOW, policy=AlertPolicy(), context={})
    dispatcher = OutboxDispatcher(pg_storage.engine, SlackNotifier.from_settings(settings),
                                  notifier_name="slack")
    assert dispatcher.dispatch_once(10).sent == 3
    text = {m["metadata"]["event_payload"]["limit_id"]: m["text"] for m in slack_sim.messages}
    assert "headroom 0.0862x ≈ 213,800 USD of gross notional" in text["lev"]  # 0.8 x eq - gross
    assert "headroom 30.8263% ≈ 764,800 USD of exposure" in text["conc"]  # 80% x eq - BTC
    assert "(no USD figure: a price distance to liquidation, not an amount)" in text["liq"]
    (stored,) = [n for _, n in pg_storage.outbox.recent() if n.limit_id == "lev"]
    assert stored.usd_per_unit == pytest.approx(2_481_000)  # kept through the outbox
