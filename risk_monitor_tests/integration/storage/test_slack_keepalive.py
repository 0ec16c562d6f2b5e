"""The Slack client's keep-alive transport (``adapters/slack_transport.py``, issue 10): posts
reuse one HTTP connection, a connection the server dropped while idle is replaced without
losing or doubling the post, and Slack's error answers reach slack_sdk as before (the outage
behaviour itself is covered by test_outbox_slack.py through ``SlackNotifier.from_settings``)."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError

from risk_monitor.adapters.slack_transport import KeepAliveWebClient
from risk_monitor.adapters.sql.dispatch_policy import PostAborted, SendGate
from risk_monitor_tests.fixtures.waiting import wait_until
from risk_sim.slack import SlackSimulator


@pytest.fixture
def sim() -> Iterator[SlackSimulator]:
    with SlackSimulator(token="xoxb-keepalive") as simulator:
        yield simulator


def _client(sim: SlackSimulator) -> KeepAliveWebClient:
    return KeepAliveWebClient(token="xoxb-keepalive", base_url=sim.api_base, timeout=5)


def _pooled_socket(client: KeepAliveWebClient) -> socket.socket:
    [(_, conn)] = client._idle
    assert conn.sock is not None
    return conn.sock


def test_posts_reuse_one_connection(sim: SlackSimulator) -> None:
    client = _client(sim)
    client.chat_postMessage(channel="#risk-alerts", text="one")
    first = _pooled_socket(client)
    for text in ("two", "three"):
        assert client.chat_postMessage(channel="#risk-alerts", text=text)["ok"]
        assert _pooled_socket(client) is first
    assert [m["text"] for m in sim.messages] == ["one", "two", "three"]
    client.close()


def test_a_dropped_idle_connection_is_replaced_and_the_post_sent_once(
        sim: SlackSimulator) -> None:
    client = _client(sim)
    client.chat_postMessage(channel="#risk-alerts", text="before")
    _pooled_socket(client).shutdown(socket.SHUT_RDWR)  # what a server's idle close leaves
    assert client.chat_postMessage(channel="#risk-alerts", text="after")["ok"]
    assert [m["text"] for m in sim.messages] == ["before", "after"]


def test_slack_errors_reach_slack_sdk_as_before(sim: SlackSimulator) -> None:
    client = _client(sim)
    sim.set_outage("ratelimited", retry_after=7, count=1)
    with pytest.raises(SlackApiError) as limited:
        client.chat_postMessage(channel="#risk-alerts", text="limited")
    assert limited.value.response.status_code == 429
    assert limited.value.response.headers.get("Retry-After") == "7"
    sim.set_outage("invalid_auth", count=1)
    with pytest.raises(SlackApiError) as refused:
        client.chat_postMessage(channel="#risk-alerts", text="refused")
    assert refused.value.response["error"] == "invalid_auth"
    assert client.chat_postMessage(channel="#risk-alerts", text="fine")["ok"]


def test_a_request_goes_out_in_one_write(sim: SlackSimulator,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Headers and body in one ``send``: no second interpreter-lock wait mid-request."""
    client = _client(sim)
    client.chat_postMessage(channel="#risk-alerts", text="warm")  # the connection is pooled
    writes: list[bytes] = []
    original = http.client.HTTPConnection.send

    def counting(self: http.client.HTTPConnection, data: Any) -> None:
        writes.append(bytes(data))
        original(self, data)

    monkeypatch.setattr(http.client.HTTPConnection, "send", counting)
    assert client.chat_postMessage(channel="#risk-alerts", text="one write")["ok"]
    assert len(writes) == 1
    assert writes[0].startswith(b"POST /api/chat.postMessage") and b"one write" in writes[0]
    assert [m["text"] for m in sim.messages] == ["warm", "one write"]


def test_bounded_caps_this_threads_wait_for_a_hanging_slack(sim: SlackSimulator) -> None:
    client = _client(sim)  # its own timeout: 5 s
    client.chat_postMessage(channel="#risk-alerts", text="warm")
    sim.set_outage("hang", hang_seconds=30, count=1)
    started = time.monotonic()
    with client.bounded(0.2), pytest.raises(TimeoutError):
        client.chat_postMessage(channel="#risk-alerts", text="held")
    assert time.monotonic() - started < 3.0  # the client's 5 s did not apply
    assert client.chat_postMessage(channel="#risk-alerts", text="after")["ok"]


def test_keep_warm_keeps_one_connection_open_through_a_quiet_spell(sim: SlackSimulator) -> None:
    client = _client(sim)
    stop = threading.Event()
    warm = threading.Thread(target=client.keep_warm, args=(stop, 0.3), daemon=True)
    warm.start()
    try:
        first = wait_until(lambda: _pooled_socket(client),
                           message="a connection opened before the first alert")
        wait_until(lambda: sum(r["method"] == "api.test" for r in sim.requests) >= 3,
                   message="the idle connection refreshed during the quiet spell")
        assert wait_until(lambda: _pooled_socket(client)) is first  # the same one, kept open
        assert client.chat_postMessage(channel="#risk-alerts", text="after a quiet spell")["ok"]
        assert wait_until(lambda: _pooled_socket(client)) is first
    finally:
        stop.set()
        warm.join(5)
    assert not warm.is_alive()
    assert [m["text"] for m in sim.messages] == ["after a quiet spell"]


def test_a_gated_post_waits_for_its_gate_and_goes_out_from_the_opener(
        sim: SlackSimulator) -> None:
    """``gated``: the request is built on the preparing thread, its bytes held at the gate
    (``SendGate``) until it opens, then sent by the opening thread; an aborted gate sends
    nothing (the dispatcher's post prepared while its commit is in flight)."""
    client = _client(sim)
    client.chat_postMessage(channel="#risk-alerts", text="warm")
    senders: list[str] = []
    original = http.client.HTTPConnection.send

    def noting(self: http.client.HTTPConnection, data: Any) -> None:
        senders.append(threading.current_thread().name)
        original(self, data)

    answers: list[Any] = []

    def post(gate: SendGate, text: str) -> None:
        try:
            with client.gated(gate):
                answers.append(client.chat_postMessage(channel="#risk-alerts", text=text))
        except PostAborted as exc:
            answers.append(exc)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(http.client.HTTPConnection, "send", noting)
        gate = SendGate()
        preparing = threading.Thread(target=post, args=(gate, "gated"), name="preparing")
        preparing.start()
        wait_until(lambda: gate._parked is not None, message="the request built and parked")
        assert [m["text"] for m in sim.messages] == ["warm"]  # nothing sent before the gate
        gate.open()
        preparing.join(10)
        assert senders == ["MainThread"]  # the opener sent the bytes
        assert answers[0]["ok"] and [m["text"] for m in sim.messages] == ["warm", "gated"]

        aborted = SendGate()
        preparing = threading.Thread(target=post, args=(aborted, "never"), name="preparing")
        preparing.start()
        wait_until(lambda: aborted._parked is not None, message="the request built and parked")
        aborted.abort()
        preparing.join(10)
        assert isinstance(answers[1], PostAborted)
        late = SendGate()
        late.abort()  # decided before the request was built: not sent either
        post(late, "never either")
        assert isinstance(answers[2], PostAborted)
    assert [m["text"] for m in sim.messages] == ["warm", "gated"]
    assert client.chat_postMessage(channel="#risk-alerts", text="after")["ok"]
