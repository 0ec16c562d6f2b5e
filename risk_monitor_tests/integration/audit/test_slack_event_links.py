"""The hot path's Slack message is edited in place (``chat.update``) with a link to its Dagster
event, whichever comes first: the report of the event or the delivery of the message. Real
slack-sdk client against the Slack simulator, real outbox dispatcher, real Dagster instance."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from slack_sdk import WebClient

from risk_monitor import application
from risk_monitor.adapters.notifiers import SlackNotifier
from risk_monitor.adapters.sql import OutboxDispatcher, Storage
from risk_monitor.dagster_catalog import DagsterCatalog
from risk_monitor.domain.alerts import AlertPolicy
from risk_monitor.lineage import HotPathLineage, link_slack_messages
from risk_monitor_tests.fixtures.service import wait_until
from risk_monitor_tests.fixtures.storage import make_result, sqlite_url
from risk_sim.slack import SlackSimulator

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
UI = "http://dagster.example"
CHANNELS = {"info": "#risk-info", "warning": "#risk-warn", "critical": "#risk-critical"}


@pytest.fixture
def rig(tmp_path: Path, slack_sim: SlackSimulator) -> Iterator[dict[str, Any]]:
    storage = Storage.open(sqlite_url(tmp_path))
    (tmp_path / "dagster").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "dagster")) as instance:
        notifier = SlackNotifier(WebClient(token=slack_sim.token, base_url=slack_sim.api_base,
                                           timeout=5), CHANNELS, dagster_ui_url=UI)
        dispatcher = OutboxDispatcher(storage.engine, notifier)
        lineage = HotPathLineage(DagsterCatalog(instance, UI))
        links = link_slack_messages(lineage, dispatcher)
        assert links is not None
        try:
            yield {"storage": storage, "dispatcher": dispatcher, "lineage": lineage,
                   "links": links, "slack": slack_sim}
        finally:
            links.stop()
            storage.close()


def _raise(storage: Storage, status: str, scope: str) -> tuple[dict[str, Any], list[Any]]:
    context = {"source": "service", "instance_id": "svc-1", "trigger": "tick",
               "evaluated_at": T0.isoformat(), "limit_config_version": "cfg-v1",
               "code_version": "git:abc", "evaluation_id": f"eval-{scope}",
               "asset_key": "live_limit_status",
               "input_data_versions": {"market_prices": {"data_version": "dv-1", "as_of": None,
                                                         "venues": {"binance": {
                                                             "data_version": "dv-b"}}}}}
    raised = application.raise_alerts(storage, [make_result(status, T0, scope=scope)], now=T0,
                                    policy=AlertPolicy(), context=context)
    return context, list(raised.plan.notifications)


def _buttons(message: dict[str, Any]) -> dict[str, str]:
    found = {}
    for block in message.get("blocks") or []:
        if block.get("type") == "actions":
            for element in block["elements"]:
                found[element["text"]["text"]] = element.get("url")
    return found


@pytest.mark.parametrize("first", ["reported", "delivered"])
def test_the_message_gets_the_dagster_event_link_in_place(rig: dict[str, Any],
                                                           first: str) -> None:
    storage, dispatcher, lineage = rig["storage"], rig["dispatcher"], rig["lineage"]
    slack: SlackSimulator = rig["slack"]
    context, notes = _raise(storage, "BREACH", f"scope-{first}")
    if first == "reported":
        url = lineage.after_commit(context, notes)
        assert dispatcher.dispatch_once().sent == 1
    else:
        assert dispatcher.dispatch_once().sent == 1
        [posted] = slack.messages
        assert "Dagster event" not in _buttons(posted)  # the first post: asset link only
        url = lineage.after_commit(context, notes)
    assert url is not None and url.startswith(f"{UI}/assets/live_limit_status?view=events&time=")
    [message] = slack.messages  # one message: edited, not posted again
    wait_until(lambda: rig["links"].linked == 1, timeout=10, message="chat.update of the message")
    assert _buttons(message)["Dagster event"] == url
    assert _buttons(message)["Asset"] == f"{UI}/assets/live_limit_status"
    assert [r["method"] for r in slack.requests].count("chat.update") == 1
    # the linker counts after Slack answers, which is after the simulator recorded the update
    wait_until(lambda: rig["links"].linked == 1, timeout=10, message="the link counted")


def test_dagster_path_alerts_keep_their_first_post(rig: dict[str, Any]) -> None:
    storage, dispatcher = rig["storage"], rig["dispatcher"]
    application.raise_alerts(storage, [make_result("WARN", T0, scope="dagster")], now=T0,
                           policy=AlertPolicy(), context={"source": "dagster", "run_id": "r1"})
    assert dispatcher.dispatch_once().sent == 1
    [message] = rig["slack"].messages
    assert "Dagster run" in _buttons(message)
    assert not message["updates"] and rig["links"].linked == 0


def _event_list(message: dict[str, Any]) -> list[str]:
    """The URLs of the "Dagster events, newest first" note of a message, in order."""
    for block in message.get("blocks") or []:
        for element in block.get("elements") or [] if block.get("type") == "context" else []:
            text = element.get("text", "")
            if text.startswith("Dagster events, newest first: "):
                return [part.split("|")[0].lstrip("<")
                        for part in text.removeprefix("Dagster events, newest first: ")
                        .split(" · ")]
    return []


def test_the_thread_s_first_message_keeps_every_event_link_newest_first(
        rig: dict[str, Any]) -> None:
    """A later state edits the thread's first message (chat.update): the earlier state's
    Dagster event link stays on it, listed with the new one, newest first."""
    storage, dispatcher, lineage = rig["storage"], rig["dispatcher"], rig["lineage"]
    slack: SlackSimulator = rig["slack"]
    urls = []
    for minutes, status in ((0, "WARN"), (1, "BREACH")):
        at = T0 + timedelta(minutes=minutes)
        context = {"source": "service", "instance_id": "svc-1", "trigger": "tick",
                   "evaluated_at": at.isoformat(), "limit_config_version": "cfg-v1",
                   "evaluation_id": f"eval-{minutes}", "asset_key": "live_limit_status",
                   "input_data_versions": {"market_prices": {"data_version": f"dv-{minutes}"}}}
        raised = application.raise_alerts(storage, [make_result(status, at, scope="thread")],
                                          now=at, policy=AlertPolicy(), context=context)
        assert dispatcher.dispatch_once().sent == 1
        url = lineage.after_commit(context, list(raised.plan.notifications))
        assert url is not None
        urls.append(url)
        linked = len(urls)
        wait_until(lambda n=linked: rig["links"].linked == n, timeout=10,
                   message="the event link edited in")
    root = slack.messages[0]
    assert urls[0] != urls[1]
    wait_until(lambda: _event_list(root) == [urls[1], urls[0]], timeout=10,
               message="the first message lists both events, newest first")
    assert "BREACH" in root["blocks"][0]["text"]["text"]  # it shows the latest state
    assert _buttons(root)["Dagster event"] == urls[1]
    # the BREACH's own message (the escalation's copy in the critical channel): its event
    assert any(_buttons(m).get("Dagster event") == urls[1] for m in slack.messages[1:])
