"""The real slack_sdk clients against the Slack simulator."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from risk_monitor_tests.fixtures.waiting import scaled
from risk_sim.slack import SlackSimulator, channel_id_for

pytestmark = pytest.mark.integration

TS = re.compile(r"^\d{10}\.\d{6}$")
BLOCKS: list[dict[str, Any]] = [
    {"type": "header", "text": {"type": "plain_text", "text": "BREACH: BTC exposure"}},
    {"type": "section", "fields": [{"type": "mrkdwn", "text": "*Limit*\n1,000,000 USD"},
                                   {"type": "mrkdwn", "text": "*Value*\n1,250,000.50 USD"}]},
]


def client(sim: SlackSimulator, **kwargs: Any) -> WebClient:
    kwargs.setdefault("timeout", scaled(5))  # a hang guard: a busy machine stretches it
    return WebClient(token=sim.token, base_url=sim.api_base, **kwargs)


def admin(sim: SlackSimulator, path: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(sim.url + path, data=data, method="POST" if data else "GET",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def test_auth_test_identifies_the_bot(slack_sim: SlackSimulator) -> None:
    response = client(slack_sim).auth_test()
    assert response["ok"] is True
    assert response["user_id"] == "U0SIMBOT"
    assert response["team_id"] == "T0SIMTEAM"
    assert [r["method"] for r in slack_sim.requests] == ["auth.test"]


def test_post_message_with_blocks_is_recorded(slack_sim: SlackSimulator) -> None:
    before = time.time()
    response = client(slack_sim).chat_postMessage(channel="#risk-alerts", text="BTC breach",
                                                  blocks=BLOCKS)
    after = time.time()
    assert response["ok"] is True
    assert TS.match(response["ts"])
    assert response["channel"] == channel_id_for("risk-alerts") == slack_sim.channel_id("#risk-alerts")
    assert response["message"]["blocks"] == BLOCKS
    [message] = slack_sim.messages
    assert message["ts"] == response["ts"]
    assert message["text"] == "BTC breach"
    assert message["blocks"] == BLOCKS
    assert message["channel_name"] == "risk-alerts"
    assert before <= message["received_at"] <= after
    for name in ("#risk-alerts", "risk-alerts", response["channel"]):
        assert slack_sim.messages_in(name) == [message]
    assert slack_sim.messages_in("other") == []


def test_timestamps_are_unique_and_increasing(slack_sim: SlackSimulator) -> None:
    web = client(slack_sim)
    stamps = [web.chat_postMessage(channel="alerts", text=f"n{i}")["ts"] for i in range(15)]
    assert len(set(stamps)) == 15
    assert stamps == sorted(stamps, key=lambda ts: tuple(int(p) for p in ts.split(".")))
    assert [m["text"] for m in slack_sim.wait_for_messages(15, timeout=30)] == [
        f"n{i}" for i in range(15)]


def test_concurrent_posts_none_lost_none_twice(slack_sim: SlackSimulator) -> None:
    errors: list[BaseException] = []

    def post(worker: int) -> None:
        web = client(slack_sim)
        try:
            for i in range(10):
                web.chat_postMessage(channel="alerts", text=f"{worker}-{i}")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=post, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(scaled(30))
    assert not errors
    messages = slack_sim.wait_for_messages(60, timeout=scaled(30))
    assert sorted(m["text"] for m in messages) == sorted(
        f"{w}-{i}" for w in range(6) for i in range(10))
    assert len({m["ts"] for m in messages}) == 60


def test_update_keeps_history(slack_sim: SlackSimulator) -> None:
    web = client(slack_sim)
    posted = web.chat_postMessage(channel="alerts", text="BREACH", blocks=BLOCKS)
    resolved_blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "RESOLVED"}}]
    updated = web.chat_update(channel=posted["channel"], ts=posted["ts"], text="RESOLVED",
                              blocks=resolved_blocks)
    assert updated["ok"] is True
    assert updated["ts"] == posted["ts"]
    assert updated["message"]["text"] == "RESOLVED"
    [message] = slack_sim.messages_in("alerts")
    assert message["text"] == "RESOLVED"
    assert message["blocks"] == resolved_blocks
    assert [u["text"] for u in message["updates"]] == ["RESOLVED"]
    assert message["updated_at"] >= message["received_at"]


def test_update_of_unknown_message_fails(slack_sim: SlackSimulator) -> None:
    web = client(slack_sim)
    posted = web.chat_postMessage(channel="alerts", text="x")
    with pytest.raises(SlackApiError) as info:
        web.chat_update(channel=posted["channel"], ts="1.000001", text="y")
    assert info.value.response["error"] == "message_not_found"
    with pytest.raises(SlackApiError) as info:
        web.chat_update(channel="elsewhere", ts=posted["ts"], text="y")
    assert info.value.response["error"] == "message_not_found"


def test_unknown_or_missing_channel(slack_sim: SlackSimulator) -> None:
    web = client(slack_sim)
    with pytest.raises(SlackApiError) as info:
        web.chat_postMessage(channel="", text="x")
    assert info.value.response["error"] == "channel_not_found"
    slack_sim.set_channels(["risk-alerts"])
    with pytest.raises(SlackApiError) as info:
        web.chat_postMessage(channel="#typo-alerts", text="x")
    assert info.value.response["error"] == "channel_not_found"
    assert web.chat_postMessage(channel="#risk-alerts", text="ok")["ok"] is True
    listed = web.conversations_list()
    assert [c["name"] for c in listed["channels"]] == ["risk-alerts"]
    assert len(slack_sim.messages) == 1


def test_content_is_validated(slack_sim: SlackSimulator) -> None:
    web = client(slack_sim)
    with pytest.raises(SlackApiError) as info:
        web.api_call("chat.postMessage", json={"channel": "alerts"})
    assert info.value.response["error"] == "no_text"
    with pytest.raises(SlackApiError) as info:
        web.api_call("chat.postMessage", json={"channel": "alerts", "blocks": [{"text": "x"}]})
    assert info.value.response["error"] == "invalid_blocks"
    assert slack_sim.messages == []


def test_form_encoded_bodies_and_token_parameter(slack_sim: SlackSimulator) -> None:
    web = WebClient(base_url=slack_sim.api_base, timeout=5)  # no token header: token param
    response = web.api_call("chat.postMessage", params={
        "token": slack_sim.token, "channel": "alerts", "text": "form",
        "blocks": json.dumps(BLOCKS)})
    assert response["ok"] is True
    assert slack_sim.messages[0]["blocks"] == BLOCKS
    assert "token" not in slack_sim.messages[0]["params"]


def test_wrong_token_is_invalid_auth(slack_sim: SlackSimulator) -> None:
    web = WebClient(token="xoxb-wrong", base_url=slack_sim.api_base, timeout=5)
    with pytest.raises(SlackApiError) as info:
        web.chat_postMessage(channel="alerts", text="x")
    assert info.value.response.status_code == 200
    assert info.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as info:
        WebClient(base_url=slack_sim.api_base, timeout=5).auth_test()
    assert info.value.response["error"] == "not_authed"
    assert slack_sim.messages == []


def test_invalid_auth_outage(slack_sim: SlackSimulator) -> None:
    slack_sim.set_outage("invalid_auth")
    with pytest.raises(SlackApiError) as info:
        client(slack_sim).auth_test()
    assert info.value.response["error"] == "invalid_auth"
    slack_sim.set_outage("none")
    assert client(slack_sim).auth_test()["ok"] is True


def test_rate_limit_is_retried_after_retry_after(slack_sim: SlackSimulator) -> None:
    slack_sim.set_outage("ratelimited", retry_after=1, count=1)
    web = client(slack_sim, retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=2)])
    started = time.monotonic()
    response = web.chat_postMessage(channel="alerts", text="after 429")
    elapsed = time.monotonic() - started
    assert response["ok"] is True
    assert elapsed >= 0.9  # the handler slept Retry-After (1 s + jitter)
    assert [r["status"] for r in slack_sim.requests] == [429, 200]
    assert [m["text"] for m in slack_sim.messages] == ["after 429"]
    assert slack_sim.outage == "none"


def test_rate_limit_without_handler_raises_with_retry_after(slack_sim: SlackSimulator) -> None:
    slack_sim.set_outage("ratelimited", retry_after=7)
    with pytest.raises(SlackApiError) as info:
        client(slack_sim).chat_postMessage(channel="alerts", text="x")
    assert info.value.response.status_code == 429
    assert info.value.response.headers["Retry-After"] == "7"
    assert info.value.response["error"] == "ratelimited"
    assert slack_sim.messages == []


def test_server_errors_then_recovery(slack_sim: SlackSimulator) -> None:
    web = client(slack_sim)
    slack_sim.set_outage("error_5xx")
    for _ in range(2):
        with pytest.raises(SlackApiError) as info:
            web.chat_postMessage(channel="alerts", text="during outage")
        assert info.value.response.status_code == 503
    assert slack_sim.messages == []
    slack_sim.set_outage("none")
    assert web.chat_postMessage(channel="alerts", text="after outage")["ok"] is True
    assert [m["text"] for m in slack_sim.messages] == ["after outage"]


def test_hang_makes_the_client_time_out(slack_sim: SlackSimulator) -> None:
    hang_s = 20
    slack_sim.set_outage("hang", hang_seconds=hang_s)
    web = client(slack_sim, timeout=1)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        web.chat_postMessage(channel="alerts", text="lost in a hang")
    assert time.monotonic() - started < hang_s  # gave up before the hang ended (order, not speed)
    assert slack_sim.messages == []
    slack_sim.set_outage("none")
    assert web.chat_postMessage(channel="alerts", text="back")["ok"] is True


def test_wait_for_messages_times_out(slack_sim: SlackSimulator) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        slack_sim.wait_for_messages(1, timeout=0.2)
    assert time.monotonic() - started < 60  # a guard against waiting forever, not a speed bound


def test_wait_for_messages_wakes_on_arrival(slack_sim: SlackSimulator) -> None:
    timer = threading.Timer(0.2, lambda: client(slack_sim).chat_postMessage(
        channel="late", text="late"))
    timer.start()
    try:
        [message] = slack_sim.wait_for_messages(1, timeout=10, channel="late")
    finally:
        timer.join(10)
    assert message["text"] == "late"


def test_admin_endpoints_from_another_process(slack_sim: SlackSimulator) -> None:
    assert admin(slack_sim, "/__admin/outage", {"mode": "error_5xx"})["outage"] == "error_5xx"
    with pytest.raises(SlackApiError):
        client(slack_sim).chat_postMessage(channel="alerts", text="x")
    admin(slack_sim, "/__admin/outage", {"mode": "none"})
    client(slack_sim).chat_postMessage(channel="alerts", text="y")
    messages = admin(slack_sim, "/__admin/messages?channel=%23alerts")
    assert [m["text"] for m in messages] == ["y"]
    admin(slack_sim, "/__admin/reset", {})
    assert slack_sim.messages == []


def test_unknown_outage_mode_is_refused(slack_sim: SlackSimulator) -> None:
    with pytest.raises(ValueError, match="unknown outage mode"):
        slack_sim.set_outage("sometimes")  # type: ignore[arg-type]


async def test_async_client_posts_and_updates(slack_sim: SlackSimulator) -> None:
    web = AsyncWebClient(token=slack_sim.token, base_url=slack_sim.api_base, timeout=5)
    assert (await web.auth_test())["ok"] is True
    posted = await web.chat_postMessage(channel="alerts", text="async", blocks=BLOCKS)
    await web.chat_update(channel=posted["channel"], ts=posted["ts"], text="async resolved")
    [message] = slack_sim.messages_in("alerts")
    assert message["text"] == "async resolved"
    assert message["blocks"] == BLOCKS
    slack_sim.set_outage("invalid_auth")
    with pytest.raises(SlackApiError):
        await web.auth_test()


def test_the_simulator_serves_from_a_process_of_its_own() -> None:
    """``python -m risk_sim.slack``: where it listens on stdout, messages over the admin API,
    gone when its stdin closes (the load bench's sink)."""
    process = subprocess.Popen([sys.executable, "-m", "risk_sim.slack", "--token", "xoxb-own"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    try:
        where = json.loads(process.stdout.readline())
        assert where["token"] == "xoxb-own" and where["api_base"] == where["url"] + "/api/"
        web = WebClient(token=where["token"], base_url=where["api_base"], timeout=scaled(5))
        before = time.time()
        assert web.chat_postMessage(channel="#risk-alerts", text="from afar")["ok"]
        with urllib.request.urlopen(where["url"] + "/__admin/messages", timeout=5) as response:
            (message,) = json.loads(response.read())
        assert message["text"] == "from afar" and before <= message["received_at"] <= time.time()
    finally:
        process.stdin.close()
        assert process.wait(scaled(10)) == 0
