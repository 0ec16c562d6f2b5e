"""Delivery that never loses and never doubles: a revoked Slack token, overdue alerts, and the
notifier's health. Real PostgreSQL/SQLite, the real slack_sdk over HTTP against the
Slack simulator; time is a fake clock driven by the test (no sleeps).
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from risk_monitor.adapters.file_sink import FileSink
from risk_monitor.adapters.notifiers import SlackNotifier
from risk_monitor.adapters.sql import BackoffPolicy, OutboxDispatcher, Storage
from risk_monitor.platform.settings import load_settings
from risk_monitor_tests.fixtures.storage import FakeClock, evaluate, make_result
from risk_sim.slack import SlackSimulator

TOKEN_ENV = "RISK_MONITOR_TEST_SLACK_TOKEN"
SCOPES = [f"venue:v{i}" for i in range(3)]


@pytest.fixture
def notifier(slack_sim: SlackSimulator, monkeypatch: pytest.MonkeyPatch) -> SlackNotifier:
    monkeypatch.setenv(TOKEN_ENV, slack_sim.token)
    settings = load_settings(slack={"token_env": TOKEN_ENV, "base_url": slack_sim.api_base,
                                    "timeout_s": 5})
    return SlackNotifier.from_settings(settings)


def _dispatcher(storage: Storage, notifier: Any, clock: FakeClock, fallback: Path
                ) -> OutboxDispatcher:
    return OutboxDispatcher(storage.engine, notifier, clock=clock, notifier_name="slack",
                            backoff=BackoffPolicy(initial_s=1.0, max_s=5.0, jitter=0.0),
                            lease_s=10.0, fallback=FileSink(fallback))


def _states(slack_sim: SlackSimulator) -> list[dict[str, Any]]:
    """One message per alert state (the escalation's critical-channel copy has no metadata)."""
    return [m for m in slack_sim.messages if m["metadata"] is not None]


def _keys(slack_sim: SlackSimulator) -> list[str]:
    return [m["metadata"]["event_payload"]["idempotency_key"] for m in _states(slack_sim)]


def _gauge(notifier: str) -> float | None:
    return REGISTRY.get_sample_value("risk_monitor_notifier_up", {"notifier": notifier})


def test_invalid_auth_for_30s_then_a_good_token_delivers_every_alert_exactly_once(
        storage: Storage, clock: FakeClock, notifier: SlackNotifier,
        slack_sim: SlackSimulator, tmp_path: Path) -> None:
    fallback = tmp_path / "fallback.jsonl"
    dispatcher = _dispatcher(storage, notifier, clock, fallback)
    slack_sim.set_outage("invalid_auth")  # the token is revoked
    outage_end = clock() + timedelta(seconds=30)
    statuses = ["WARN", "BREACH", "OK"]
    step = 0
    while clock() < outage_end:  # alerts keep coming during the outage
        if step < len(statuses):
            for scope in SCOPES:
                evaluate(storage, make_result(statuses[step], clock(), scope=scope))
            step += 1
        dispatcher.dispatch_once(50)
        assert not dispatcher.notifier_up and _gauge("slack") == 0.0
        clock.advance(1)
    assert slack_sim.messages == []
    rows = storage.outbox.rows()
    assert len(rows) == 3 * len(SCOPES)
    assert {r.status for r in rows} <= {"pending", "sending"}  # nothing dropped
    ok, detail, data = dispatcher.delivery_status(overdue_s=20)
    assert not ok and "refuses our configuration" in detail and "overdue" in detail
    assert data["overdue"] == len(rows) and data["notifier_up"] is False
    # the fallback sink got every alert, once each (not once per retry)
    written = [json.loads(line)["idempotency_key"]
               for line in fallback.read_text().splitlines()]
    assert sorted(written) == sorted(r.idempotency_key for r in rows)
    assert all(r.fallback_ref for r in storage.outbox.rows())

    slack_sim.set_outage("none")  # a good token again
    for _ in range(60):
        if storage.outbox.counts()["sent"] == len(rows):
            break
        clock.advance(1)
        dispatcher.dispatch_once(50)
    assert storage.outbox.counts() == {"pending": 0, "sending": 0, "sent": len(rows),
                                       "failed": 0, "suppressed": 0}
    assert sorted(_keys(slack_sim)) == sorted(r.idempotency_key for r in rows)  # once each
    for scope in SCOPES:  # in order, threaded under the episode's first message
        kinds = [m["metadata"]["event_payload"]["kind"] for m in _states(slack_sim)
                 if m["metadata"]["event_payload"]["scope"] == scope]
        assert kinds == ["firing", "escalated", "resolved"]
    assert dispatcher.notifier_up and _gauge("slack") == 1.0
    assert dispatcher.delivery_status(overdue_s=20)[0]


def test_a_message_slack_refuses_for_good_goes_to_the_fallback_and_fails(
        storage: Storage, clock: FakeClock, notifier: SlackNotifier,
        slack_sim: SlackSimulator, tmp_path: Path) -> None:
    fallback = tmp_path / "fallback.jsonl"
    evaluate(storage, make_result("BREACH", clock()))
    slack_sim.faults.add("auth_error", "/api/chat.postMessage", count=1, error="msg_too_long")
    result = _dispatcher(storage, notifier, clock, fallback).dispatch_once(10)
    assert (result.sent, result.failed) == (0, 1)
    (row,) = storage.outbox.rows()
    assert (row.status, row.last_error_code) == ("failed", "RM401")
    assert row.fallback_ref is not None
    (line,) = fallback.read_text().splitlines()
    assert json.loads(line)["idempotency_key"] == row.idempotency_key


def test_readiness_reports_alerts_overdue_for_delivery(
        storage: Storage, clock: FakeClock, notifier: SlackNotifier,
        slack_sim: SlackSimulator, tmp_path: Path) -> None:
    dispatcher = _dispatcher(storage, notifier, clock, tmp_path / "fallback.jsonl")
    slack_sim.set_outage("error_5xx")
    evaluate(storage, make_result("BREACH", clock()))
    dispatcher.dispatch_once(10)
    assert dispatcher.delivery_status(overdue_s=30)[0]  # late, but not yet overdue
    clock.advance(31)
    ok, _, data = dispatcher.delivery_status(overdue_s=30)
    assert not ok and data["overdue"] == 1 and data["notifier_up"] is True
    assert data["oldest_overdue_age_s"] == pytest.approx(31, abs=1)
    slack_sim.set_outage("none")
    clock.advance(10)
    assert dispatcher.dispatch_once(10).sent == 1
    assert dispatcher.delivery_status(overdue_s=30)[0]


def test_an_escalation_reaches_the_critical_route_and_messages_say_what_to_do(
        storage: Storage, clock: FakeClock, notifier: SlackNotifier,
        slack_sim: SlackSimulator, tmp_path: Path) -> None:
    from risk_monitor.domain.alerts import AlertPolicy, AlertRule, plan_alerts

    runbook = "https://runbooks.example/max-notional"
    policy = AlertPolicy(rules={"max_notional": AlertRule(owner="desk-a", runbook_url=runbook)})
    for status in ("WARN", "BREACH", "OK"):
        result = make_result(status, clock.advance(60))
        with storage.alerts.locked([result.fingerprint]) as tx:
            plan = plan_alerts(tx.states, [result], clock(), policy)
            tx.apply(plan.states, plan.notifications)
    assert _dispatcher(storage, notifier, clock, tmp_path / "f.jsonl").dispatch_once(10).sent == 3

    root, reply, critical, resolved, resolved_copy = slack_sim.messages
    warning = slack_sim.channel_id("#risk-alerts")
    assert (root["channel"], root["thread_ts"]) == (warning, None)
    assert (reply["channel"], reply["thread_ts"]) == (warning, root["ts"])  # the thread goes on
    assert critical["channel"] == slack_sim.channel_id("#risk-critical")
    assert critical["thread_ts"] is None  # the critical channel hears it, top level
    permalink = f"archives/{warning}/p{root['ts'].replace('.', '')}"
    assert permalink in json.dumps(critical["blocks"]) and permalink in critical["text"]
    assert resolved["thread_ts"] == root["ts"]
    # the critical channel that heard the escalation hears the resolve too, top level
    assert (resolved_copy["channel"], resolved_copy["thread_ts"]) == (critical["channel"], None)
    assert resolved_copy["text"] == resolved["text"]
    escalated = next(r for r in storage.outbox.rows() if r.kind == "escalated")
    assert escalated.delivery_ref == f"{critical['channel']}:{critical['ts']}"

    first = json.dumps(root["updates"][0]["blocks"] if root["updates"] else root["blocks"])
    for expected in ("desk-a", runbook, "Headroom to breach", "Time in status"):
        assert expected in json.dumps(reply["blocks"]) or expected in first
    assert "*Headroom to breach*\\n-200" in json.dumps(reply["blocks"])  # 1,200 vs 1,000
    assert "episode lasted 2m 00s" in resolved["text"]
    assert "Episode lasted" in json.dumps(resolved["blocks"])
