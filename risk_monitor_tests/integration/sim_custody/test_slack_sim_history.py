"""Slack simulator: message metadata, conversations.history / replies, and a post whose answer
is held back (the crash-after-accept case), through the real slack_sdk client."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from risk_sim.slack import SlackSimulator

pytestmark = pytest.mark.integration


def client(sim: SlackSimulator, **kwargs: Any) -> WebClient:
    kwargs.setdefault("timeout", 5)
    return WebClient(token=sim.token, base_url=sim.api_base, **kwargs)


def meta(key: str) -> dict[str, Any]:
    return {"event_type": "risk_monitor_alert", "event_payload": {"idempotency_key": key}}


def test_history_shows_metadata_only_when_asked(slack_sim: SlackSimulator) -> None:
    web = client(slack_sim)
    posted = web.chat_postMessage(channel="#risk", text="one", metadata=meta("k1"))
    channel = posted["channel"]
    plain = web.conversations_history(channel=channel)
    assert [m["ts"] for m in plain["messages"]] == [posted["ts"]]
    assert "metadata" not in plain["messages"][0]
    full = web.conversations_history(channel=channel, include_all_metadata=True)
    assert full["messages"][0]["metadata"] == meta("k1")


def test_history_is_newest_first_paginated_and_bounded(slack_sim: SlackSimulator) -> None:
    web = client(slack_sim)
    stamps = [web.chat_postMessage(channel="#risk", text=str(i), metadata=meta(f"k{i}"))["ts"]
              for i in range(5)]
    channel = slack_sim.channel_id("#risk")
    seen: list[str] = []
    cursor = None
    while True:
        page = web.conversations_history(channel=channel, limit=2, cursor=cursor)
        seen.extend(m["ts"] for m in page["messages"])
        cursor = page["response_metadata"]["next_cursor"] or None
        assert page["has_more"] is (cursor is not None)
        if cursor is None:
            break
    assert seen == list(reversed(stamps))
    after = web.conversations_history(channel=channel, oldest=stamps[2])
    assert [m["ts"] for m in after["messages"]] == [stamps[4], stamps[3]]  # exclusive


def test_thread_replies_are_in_replies_and_broadcasts_in_history(
        slack_sim: SlackSimulator) -> None:
    web = client(slack_sim)
    root = web.chat_postMessage(channel="#risk", text="root", metadata=meta("r"))
    channel = root["channel"]
    quiet = web.chat_postMessage(channel=channel, thread_ts=root["ts"], text="quiet",
                                 metadata=meta("q"))
    loud = web.chat_postMessage(channel=channel, thread_ts=root["ts"], text="loud",
                                reply_broadcast=True, metadata=meta("l"))
    history = web.conversations_history(channel=channel, include_all_metadata=True)
    assert [m["ts"] for m in history["messages"]] == [loud["ts"], root["ts"]]
    assert history["messages"][0]["subtype"] == "thread_broadcast"
    replies = web.conversations_replies(channel=channel, ts=root["ts"],
                                        include_all_metadata=True)
    keys = [m["metadata"]["event_payload"]["idempotency_key"] for m in replies["messages"]]
    assert keys == ["r", "q", "l"]
    assert quiet["ts"] in [m["ts"] for m in replies["messages"]]


def test_history_of_an_unknown_channel_and_bad_metadata_are_refused(
        slack_sim: SlackSimulator) -> None:
    web = client(slack_sim)
    with pytest.raises(SlackApiError) as unknown:
        web.conversations_history(channel="C0NEVERUSED1")
    assert unknown.value.response["error"] == "channel_not_found"
    with pytest.raises(SlackApiError) as bad:
        web.chat_postMessage(channel="#risk", text="x", metadata={"event_payload": {}})
    assert bad.value.response["error"] == "invalid_metadata_format"


def test_hang_after_accept_records_the_post_and_withholds_the_answer(
        slack_sim: SlackSimulator) -> None:
    slack_sim.hang_after_accept(count=1, seconds=30)
    web = client(slack_sim, timeout=30)
    done = threading.Event()

    def post() -> None:
        try:
            web.chat_postMessage(channel="#risk", text="held", metadata=meta("h"))
        except Exception:  # the server may stop before it answers; only "no answer" matters
            pass
        finally:
            done.set()

    threading.Thread(target=post, daemon=True).start()
    (message,) = slack_sim.wait_for_messages(1, timeout=30)
    assert message["metadata"] == meta("h")
    assert not done.is_set()  # accepted and recorded, yet the client has no answer
    assert web.chat_postMessage(channel="#risk", text="next")["ok"]  # only one was held
