"""``risk-monitor alerts ack|silence|unsilence|list`` on the real PostgreSQL store, with the
dispatcher holding back what they cover and the Slack simulator receiving the rest."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner, Result

from risk_monitor.adapters.notifiers import SlackNotifier
from risk_monitor.adapters.sql import OutboxDispatcher, Storage
from risk_monitor.cli import cli
from risk_monitor.cli_alerts import parse_duration
from risk_monitor.platform.settings import load_settings
from risk_monitor_tests.fixtures.storage import FakeClock, evaluate, make_result
from risk_sim.slack import SlackSimulator

TOKEN_ENV = "RISK_MONITOR_TEST_SLACK_TOKEN"


@pytest.fixture
def run(migrated_postgres_url: str, pg_storage: Storage) -> Any:
    def invoke(*args: str) -> Result:
        env = {"RISK_MONITOR_DATABASE_URL": migrated_postgres_url, "RISK_MONITOR_CONFIG": None,
               "RISK_MONITOR_AUTHOR": None}
        return CliRunner().invoke(cli, ["alerts", *args], env=env, catch_exceptions=False)
    return invoke


@pytest.fixture
def dispatcher(pg_storage: Storage, slack_sim: SlackSimulator,
               monkeypatch: pytest.MonkeyPatch) -> OutboxDispatcher:
    """On the real clock: the CLI's silences start now."""
    monkeypatch.setenv(TOKEN_ENV, slack_sim.token)
    settings = load_settings(slack={"token_env": TOKEN_ENV, "base_url": slack_sim.api_base,
                                    "timeout_s": 2})
    return OutboxDispatcher(pg_storage.engine, SlackNotifier.from_settings(settings),
                            notifier_name="slack")


def test_silence_list_unsilence_through_the_cli(
        run: Any, pg_storage: Storage, clock: FakeClock, dispatcher: OutboxDispatcher,
        slack_sim: SlackSimulator) -> None:
    made = run("silence", "--match", "venue=okx", "--match", "severity=~critical|warning",
               "--duration", "2h", "--comment", "okx maintenance", "--author", "carol")
    assert made.exit_code == 0, made.output
    silence = json.loads(made.output)
    assert silence["active"] and silence["created_by"] == "carol"

    listed = json.loads(run("list", "--json").output)
    assert [s["silence_id"] for s in listed["silences"]] == [silence["silence_id"]]

    evaluate(pg_storage, make_result("BREACH", clock.advance(1), scope="venue:okx"))
    evaluate(pg_storage, make_result("BREACH", clock.advance(1), scope="venue:binance"))
    result = dispatcher.dispatch_once(10)
    assert (result.sent, result.suppressed) == (1, 1)
    assert [m["params"]["metadata"]["event_payload"]["scope"] for m in slack_sim.messages
            if (m["params"].get("metadata") or {}).get("event_type") == "risk_monitor_alert"] \
        == ["venue:binance"]
    held = pg_storage.outbox.rows(status="suppressed")
    assert [r.suppressed_by for r in held] == [f"silence:{silence['silence_id']}"]

    ended = run("unsilence", silence["silence_id"], "--author", "dave")
    assert ended.exit_code == 0 and json.loads(ended.output)["active"] is False
    assert json.loads(run("list", "--json").output)["silences"] == []
    assert len(json.loads(run("list", "--all", "--json").output)["silences"]) == 1
    events = [(r.event, r.payload["actor"]) for r in pg_storage.audit.recent(10)
              if r.event.startswith("silence_")]
    assert events == [("silence_expired", "dave"), ("silence_created", "carol")]


def test_ack_through_the_cli_holds_repeats(
        run: Any, pg_storage: Storage, clock: FakeClock) -> None:
    (firing,) = evaluate(pg_storage, make_result("WARN", clock.advance(1)))
    done = run("ack", firing.correlation_id, "--author", "erin", "--comment", "hedging")
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["acked_by"] == "erin"
    listed = run("list")
    assert "erin" in listed.output and firing.fingerprint in listed.output
    (audit,) = pg_storage.audit.recent(5, event="alert_acknowledged")
    assert audit.correlation_id == firing.correlation_id


def test_the_cli_refuses_bad_requests_clearly(run: Any) -> None:
    no_author = run("ack", "abc")
    assert no_author.exit_code == 2 and "--author" in no_author.output
    unknown = run("ack", "abc", "--author", "x")
    assert unknown.exit_code == 2 and "RM410" in unknown.output
    both = run("silence", "--match", "venue=a", "--duration", "1h", "--until", "2030-01-01",
               "--comment", "c", "--author", "x")
    assert both.exit_code == 2 and "exactly one" in both.output
    zero = run("silence", "--match", "venue=a", "--duration", "0m", "--comment", "c",
               "--author", "x")
    assert zero.exit_code == 2 and "positive" in zero.output
    bad = run("silence", "--match", "desk=a", "--duration", "1h", "--comment", "c",
              "--author", "x")
    assert bad.exit_code == 2 and "unknown label" in bad.output
    assert run("unsilence", "nope", "--author", "x").exit_code == 2


def test_durations_parse() -> None:
    assert parse_duration("90m").total_seconds() == 5400
    assert parse_duration("1.5h").total_seconds() == 5400
    assert parse_duration("30").total_seconds() == 30
