"""A Slack Web API simulator on loopback, for the real ``slack_sdk`` clients.

It speaks the subset Risk Monitor uses (``auth.test``, ``chat.postMessage``, ``chat.update``,
``conversations.list``, ``conversations.history``, ``conversations.replies``,
``chat.getPermalink``) with Slack's own
conventions: every answer is HTTP 200 with
``{"ok": false, "error": "..."}`` on failure, except rate limits (429 + ``Retry-After``) and
server errors. Message metadata (``metadata={"event_type", "event_payload"}``) is kept and
returned by the history methods only with ``include_all_metadata=true``, as Slack does; history
lists top-level messages and broadcast replies newest first, replies list a thread oldest first,
both paginated with ``limit`` / ``cursor`` and bounded by ``oldest`` / ``latest``. Bodies are accepted as JSON, form-urlencoded or multipart, token in the
``Authorization: Bearer`` header or the ``token`` parameter, as slack_sdk (sync and async) sends
them. Every accepted message is recorded with its receive time, so tests can measure alert
latency and check that no alert is lost or sent twice.

``hang_after_accept`` records the next posts and then holds their answers, which is how a
crash between Slack accepting a post and the client hearing of it is reproduced.

Outages (5xx, 429, ``invalid_auth``, hang) are faults of the shared :class:`FaultInjector`, so
they can also be switched over HTTP from another process (``POST /__admin/outage``).

``python -m risk_sim.slack`` serves it in a process of its own (:func:`main`), as a real Slack
is another machine: a load test whose publisher shares the simulator's interpreter would
otherwise time each message's arrival behind that publisher's turn at the GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import re
import secrets
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal

from aiohttp import web

from risk_sim.faults import Fault, FaultInjector
from risk_sim.server import BackgroundServer

OutageMode = Literal["none", "error_5xx", "ratelimited", "invalid_auth", "hang"]
OUTAGE_MODES: tuple[str, ...] = ("none", "error_5xx", "ratelimited", "invalid_auth", "hang")

TEAM_ID = "T0SIMTEAM"
BOT_USER_ID = "U0SIMBOT"
BOT_ID = "B0SIMBOT"
MAX_TEXT_CHARS = 40_000  # Slack truncates/refuses beyond this
MAX_BLOCKS = 50  # Slack's limit per message
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{8,}$")
_JSON_FIELDS = ("blocks", "attachments", "metadata")


def channel_id_for(name: str) -> str:
    """Stable Slack-like channel ID for a channel name (tests can predict it)."""
    digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:10].upper()
    return f"C{digest}"


class SlackError(Exception):
    """A Slack method failure answered as ``{"ok": false, "error": code}``."""

    def __init__(self, code: str, status: int = 200) -> None:
        super().__init__(code)
        self.code = code
        self.status = status


def _slack_error_body(fault: Fault, _: web.Request) -> web.Response:
    """Injected failures rendered as Slack renders them."""
    if fault.kind == "rate_limit":
        retry_after = str(int(fault.params.get("retry_after", 1)))
        return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                 headers={"Retry-After": retry_after})
    if fault.kind == "auth_error":
        return web.json_response({"ok": False, "error": str(fault.params.get("error",
                                                                            "invalid_auth"))})
    status = int(fault.params.get("status", 500))
    error = "service_unavailable" if status == 503 else "internal_error"
    return web.json_response({"ok": False, "error": error}, status=status)


class SlackSimulator:
    """Slack Web API on ``http://127.0.0.1:<port>/api/``; point ``WebClient(base_url=api_base)``."""

    def __init__(self, *, token: str | None = None, host: str = "127.0.0.1", port: int = 0,
                 channels: Iterable[str] | None = None, seed: int = 0) -> None:
        self.token = token or f"xoxb-sim-{secrets.token_hex(12)}"
        self.faults = FaultInjector(seed)
        self.messages: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._last_ts_us = 0
        self._channels: dict[str, str] = {}  # id -> name
        self._restricted = False
        self._outage_fault: int | None = None
        self._outage_mode: str = "none"
        self._hold_after_accept = 0
        self._hold_s = 0.0
        if channels is not None:
            self.set_channels(channels)
        self._server = BackgroundServer(self._build_app(), host=host, port=port, name="slack")

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self._server.url

    @property
    def api_base(self) -> str:
        return f"{self._server.url}/api/"

    def start(self) -> SlackSimulator:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> SlackSimulator:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- test / scenario controls -------------------------------------------------------------
    def set_channels(self, channels: Iterable[str] | None) -> None:
        """Restrict the workspace to these channels (names or IDs); ``None`` accepts any."""
        with self._cond:
            self._channels.clear()
            self._restricted = channels is not None
            for channel in channels or ():
                self._register_channel(channel)

    def channel_id(self, channel: str) -> str:
        """The ID this simulator answers for a channel name (or the ID itself)."""
        value = channel.lstrip("#")
        return value if _CHANNEL_ID.match(value) else channel_id_for(value)

    def set_outage(self, mode: OutageMode, *, retry_after: int = 1, hang_seconds: float = 30,
                   count: int | None = None) -> None:
        """Switch an outage on every ``/api/*`` call; ``count`` limits it to the next N calls."""
        if mode not in OUTAGE_MODES:
            raise ValueError(f"unknown outage mode {mode!r}; expected one of {OUTAGE_MODES}")
        with self._cond:
            if self._outage_fault is not None:
                self.faults.remove(self._outage_fault)
                self._outage_fault = None
            self._outage_mode = mode
            if mode == "none":
                return
            if mode == "error_5xx":
                fault = self.faults.add("http_error", "/api/*", count=count, status=503)
            elif mode == "ratelimited":
                fault = self.faults.add("rate_limit", "/api/*", count=count,
                                        retry_after=retry_after)
            elif mode == "invalid_auth":
                fault = self.faults.add("auth_error", "/api/*", count=count)
            else:
                fault = self.faults.add("timeout", "/api/*", count=count, seconds=hang_seconds)
            self._outage_fault = fault.id

    def hang_after_accept(self, count: int = 1, seconds: float = 30.0) -> None:
        """Record the next ``count`` chat.postMessage calls, then hold each answer ``seconds``."""
        with self._cond:
            self._hold_after_accept = count
            self._hold_s = seconds

    @property
    def outage(self) -> str:
        """The outage mode in force ("none" once a counted burst is used up or faults cleared)."""
        with self._cond:
            if self._outage_fault is None:
                return "none"
            if all(f.id != self._outage_fault for f in self.faults.snapshot()):
                return "none"
            return self._outage_mode

    def reset(self) -> None:
        """Forget messages, requests, faults and outages; keep token and channel policy."""
        self.faults.clear()
        with self._cond:
            self._outage_fault = None
            self._outage_mode = "none"
            self.messages.clear()
            self.requests.clear()
            self._hold_after_accept = 0
            self.faults.fired.clear()
            self._cond.notify_all()

    def messages_in(self, channel: str) -> list[dict[str, Any]]:
        """Accepted messages of a channel, by ID, name or ``#name``, in posting order."""
        wanted = self.channel_id(channel)
        with self._cond:
            return [m for m in self.messages if m["channel"] == wanted]

    def wait_for_messages(self, n: int, timeout: float = 10.0, *,
                          channel: str | None = None) -> list[dict[str, Any]]:
        """Block until at least ``n`` messages (in ``channel`` if given) arrived; TimeoutError."""
        wanted = self.channel_id(channel) if channel is not None else None

        def selected() -> list[dict[str, Any]]:
            return [m for m in self.messages if wanted is None or m["channel"] == wanted]

        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = selected()
                if len(found) >= n:
                    return list(found)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"expected {n} Slack message(s), got {len(found)} "
                                       f"within {timeout}s")
                self._cond.wait(remaining)

    # -- app ----------------------------------------------------------------------------------
    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._record_middleware(),
                                           self.faults.middleware(_slack_error_body)])
        app.add_routes(self.faults.admin_routes())
        app.add_routes([
            web.get("/__admin/health", self._admin_health),
            web.get("/__admin/messages", self._admin_messages),
            web.post("/__admin/outage", self._admin_outage),
            web.post("/__admin/reset", self._admin_reset),
            web.post("/__admin/channels", self._admin_channels),
            web.route("*", "/api/{method}", self._api),
        ])
        return app

    def _record_middleware(self) -> Any:
        @web.middleware
        async def record(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
            if not request.path.startswith("/api/"):
                return await handler(request)
            entry: dict[str, Any] = {"method": request.path[len("/api/"):],
                                     "http_method": request.method, "status": None,
                                     "ok": None, "error": None, "received_at": time.time()}
            with self._cond:
                self.requests.append(entry)
            response = await handler(request)
            entry["status"] = response.status
            if isinstance(response, web.Response) and isinstance(response.body, bytes):
                try:
                    body = json.loads(response.body)
                except ValueError:
                    body = None
                if isinstance(body, dict):
                    entry["ok"] = body.get("ok")
                    entry["error"] = body.get("error")
            return response

        return record

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "auth.test": self._auth_test,
            "api.test": self._api_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update_message,
            "conversations.list": self._conversations_list,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "chat.getPermalink": self._permalink,
        }
        hold = 0.0
        try:
            params = await _read_params(request)
            if method != "api.test":
                self._authenticate(request, params)
            handler = handlers.get(method)
            if handler is None:
                raise SlackError("unknown_method", status=404)
            with self._cond:
                result = handler(params)
                if method == "chat.postMessage" and self._hold_after_accept > 0:
                    self._hold_after_accept -= 1
                    hold = self._hold_s
                self._cond.notify_all()
        except SlackError as exc:
            return web.json_response({"ok": False, "error": exc.code}, status=exc.status)
        if hold:
            await asyncio.sleep(hold)  # accepted and recorded; the caller hears nothing yet
        return web.json_response({"ok": True, **result})

    def _authenticate(self, request: web.Request, params: dict[str, Any]) -> None:
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        token = token or params.get("token")
        if not token:
            raise SlackError("not_authed")
        if not secrets.compare_digest(str(token), self.token):
            raise SlackError("invalid_auth")

    # -- methods (called with the lock held) -------------------------------------------------
    def _auth_test(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"url": "https://risk-sim.slack.com/", "team": "Risk Sim", "user": "risk-monitor",
                "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": BOT_ID,
                "is_enterprise_install": False}

    def _api_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"args": {k: v for k, v in params.items() if k != "token"}}

    def _post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel_id, channel_name = self._channel(params.get("channel"))
        text, blocks, attachments = _content(params)
        ts = self._next_ts()
        message: dict[str, Any] = {
            "channel": channel_id,
            "channel_name": channel_name,
            "ts": ts,
            "text": text,
            "blocks": blocks,
            "attachments": attachments,
            "thread_ts": params.get("thread_ts"),
            "received_at": time.time(),
            "updated_at": None,
            "updates": [],
            "metadata": _metadata(params.get("metadata")),
            "reply_broadcast": _truthy(params.get("reply_broadcast")),
            "params": {k: v for k, v in params.items()
                       if k not in ("token", "channel", "text", "blocks", "attachments")},
        }
        self.messages.append(message)
        return {"channel": channel_id, "ts": ts, "message": _wire_message(message)}

    def _update_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel_id, _ = self._channel(params.get("channel"))
        ts = params.get("ts")
        target = next((m for m in self.messages
                       if m["channel"] == channel_id and m["ts"] == ts), None) if ts else None
        if target is None:
            raise SlackError("message_not_found")
        text, blocks, attachments = _content(params)
        now = time.time()
        target["updates"].append({"text": text, "blocks": blocks, "attachments": attachments,
                                  "received_at": now})
        target["text"] = text if text is not None else target["text"]
        if blocks is not None:
            target["blocks"] = blocks
        if attachments is not None:
            target["attachments"] = attachments
        target["updated_at"] = now
        wire = _wire_message(target)
        wire["edited"] = {"user": BOT_USER_ID, "ts": self._next_ts()}
        return {"channel": channel_id, "ts": target["ts"], "text": target["text"] or "",
                "message": wire}

    def _conversations_list(self, _: dict[str, Any]) -> dict[str, Any]:
        channels = [{"id": cid, "name": name, "is_channel": True, "is_private": False,
                     "is_archived": False, "is_member": True}
                    for cid, name in sorted(self._channels.items(), key=lambda kv: kv[1])]
        return {"channels": channels, "response_metadata": {"next_cursor": ""}}

    def _permalink(self, params: dict[str, Any]) -> dict[str, Any]:
        channel_id = self._known_channel(params.get("channel"))
        ts = params.get("message_ts")
        if not any(m["channel"] == channel_id and m["ts"] == ts for m in self.messages):
            raise SlackError("message_not_found")
        link = f"https://risk-sim.slack.com/archives/{channel_id}/p{str(ts).replace('.', '')}"
        return {"channel": channel_id, "permalink": link}

    def _conversations_history(self, params: dict[str, Any]) -> dict[str, Any]:
        """Top-level messages and broadcast replies of a channel, newest first."""
        channel_id = self._known_channel(params.get("channel"))
        found = [m for m in self.messages if m["channel"] == channel_id
                 and (not m["thread_ts"] or m["reply_broadcast"])]
        found = _in_window(found, params)
        found.sort(key=lambda m: float(m["ts"]), reverse=True)
        return _page(found, params)

    def _conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        """A thread: its parent, then its replies, oldest first."""
        channel_id = self._known_channel(params.get("channel"))
        ts = params.get("ts")
        if not ts:
            raise SlackError("invalid_arguments")
        parent = next((m for m in self.messages
                       if m["channel"] == channel_id and m["ts"] == ts), None)
        if parent is None:
            raise SlackError("thread_not_found")
        root = parent["thread_ts"] or parent["ts"]
        found = [m for m in self.messages if m["channel"] == channel_id
                 and (m["ts"] == root or m["thread_ts"] == root)]
        found = _in_window(found, params)
        found.sort(key=lambda m: float(m["ts"]))
        return _page(found, params)

    # -- helpers -----------------------------------------------------------------------------
    def _known_channel(self, value: Any) -> str:
        """History needs an existing conversation: never registers one."""
        if not isinstance(value, str) or not value.strip("# "):
            raise SlackError("channel_not_found")
        cid = self.channel_id(value)
        if cid not in self._channels and not any(m["channel"] == cid for m in self.messages):
            raise SlackError("channel_not_found")
        return cid

    def _register_channel(self, channel: str) -> tuple[str, str]:
        value = channel.lstrip("#")
        cid = self.channel_id(value)
        name = self._channels.setdefault(cid, value)
        return cid, name

    def _channel(self, value: Any) -> tuple[str, str]:
        if not isinstance(value, str) or not value.strip("# "):
            raise SlackError("channel_not_found")
        cid = self.channel_id(value)
        if cid in self._channels:
            return cid, self._channels[cid]
        if self._restricted:
            raise SlackError("channel_not_found")
        return self._register_channel(value)

    def _next_ts(self) -> str:
        now_us = max(int(time.time() * 1_000_000), self._last_ts_us + 1)
        self._last_ts_us = now_us
        return f"{now_us // 1_000_000}.{now_us % 1_000_000:06d}"

    # -- admin over HTTP ---------------------------------------------------------------------
    async def _admin_health(self, _: web.Request) -> web.Response:
        return web.json_response({"ok": True, "outage": self.outage})

    async def _admin_messages(self, request: web.Request) -> web.Response:
        channel = request.query.get("channel")
        with self._cond:
            messages = self.messages_in(channel) if channel else list(self.messages)
            return web.json_response(messages)

    async def _admin_outage(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            self.set_outage(body.get("mode", "none"),
                            retry_after=int(body.get("retry_after", 1)),
                            hang_seconds=float(body.get("hang_seconds", 30)),
                            count=body.get("count"))
        except ValueError as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        return web.json_response({"ok": True, "outage": self.outage})

    async def _admin_reset(self, _: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def _admin_channels(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.set_channels(body.get("channels"))
        with self._cond:
            names = sorted(self._channels.values())
        return web.json_response({"ok": True, "channels": names,
                                  "restricted": self._restricted})


async def _read_params(request: web.Request) -> dict[str, Any]:
    """Parameters from query, JSON or form body, as slack_sdk sends them."""
    params: dict[str, Any] = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError as exc:
                raise SlackError("invalid_json") from exc
            if not isinstance(body, dict):
                raise SlackError("invalid_json")
            params.update(body)
        elif request.content_type in ("application/x-www-form-urlencoded",
                                      "multipart/form-data"):
            form = await request.post()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
    for key in _JSON_FIELDS:  # form bodies carry these as JSON strings
        value = params.get(key)
        if isinstance(value, str) and value:
            try:
                params[key] = json.loads(value)
            except ValueError as exc:
                raise SlackError(f"invalid_{key}" if key != "metadata" else
                                 "invalid_metadata_format") from exc
    return params


def _content(params: dict[str, Any]) -> tuple[str | None, list[Any] | None, list[Any] | None]:
    """Validate text / blocks / attachments as Slack does."""
    text = params.get("text")
    blocks = params.get("blocks")
    attachments = params.get("attachments")
    if text is not None and not isinstance(text, str):
        text = str(text)
    if blocks is not None and (not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS or not all(
            isinstance(b, dict) and isinstance(b.get("type"), str) for b in blocks)):
        raise SlackError("invalid_blocks")
    if attachments is not None and not isinstance(attachments, list):
        raise SlackError("invalid_attachments")
    if not text and not blocks and not attachments:
        raise SlackError("no_text")
    if text is not None and len(text) > MAX_TEXT_CHARS:
        raise SlackError("msg_too_long")
    return text, blocks, attachments


def _wire_message(message: dict[str, Any]) -> dict[str, Any]:
    wire: dict[str, Any] = {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID,
                            "team": TEAM_ID, "ts": message["ts"],
                            "text": message["text"] or ""}
    if message["blocks"] is not None:
        wire["blocks"] = message["blocks"]
    if message["attachments"] is not None:
        wire["attachments"] = message["attachments"]
    if message["thread_ts"]:
        wire["thread_ts"] = message["thread_ts"]
        if message.get("reply_broadcast"):
            wire["subtype"] = "thread_broadcast"
    return wire


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1")


def _metadata(value: Any) -> dict[str, Any] | None:
    """Slack keeps ``{"event_type": str, "event_payload": object}``; anything else is refused."""
    if value is None or value == "":
        return None
    if not isinstance(value, dict) or not isinstance(value.get("event_type"), str) \
            or not isinstance(value.get("event_payload", {}), dict):
        raise SlackError("invalid_metadata_format")
    return {"event_type": value["event_type"], "event_payload": value.get("event_payload", {})}


def _in_window(messages: list[dict[str, Any]], params: dict[str, Any]) -> list[dict[str, Any]]:
    """``oldest`` / ``latest`` bounds (exclusive unless ``inclusive``), as Slack applies them."""
    inclusive = _truthy(params.get("inclusive"))
    try:
        oldest = float(params.get("oldest") or 0)
        latest = float(params["latest"]) if params.get("latest") else float("inf")
    except (TypeError, ValueError) as exc:
        raise SlackError("invalid_ts_oldest") from exc

    def inside(ts: float) -> bool:
        if inclusive:
            return oldest <= ts <= latest
        return oldest < ts < latest

    return [m for m in messages if inside(float(m["ts"]))]


def _page(messages: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """One page of ``limit`` (default 100, at most 999) from the opaque ``cursor``."""
    try:
        limit = min(999, max(1, int(params.get("limit") or 100)))
        cursor = params.get("cursor") or ""
        start = int(base64.b64decode(cursor).decode().split(":", 1)[1]) if cursor else 0
    except (TypeError, ValueError, IndexError) as exc:
        raise SlackError("invalid_cursor") from exc
    chunk = messages[start:start + limit]
    more = start + limit < len(messages)
    next_cursor = base64.b64encode(f"offset:{start + limit}".encode()).decode() if more else ""
    with_metadata = _truthy(params.get("include_all_metadata"))
    wire = []
    for message in chunk:
        item = _wire_message(message)
        if with_metadata and message["metadata"] is not None:
            item["metadata"] = message["metadata"]
        wire.append(item)
    return {"messages": wire, "has_more": more,
            "response_metadata": {"next_cursor": next_cursor}}


def main(argv: list[str] | None = None) -> None:
    """Serve the simulator until stdin closes (its parent exited) or SIGTERM: one JSON line
    ``{"url", "api_base", "token"}`` on stdout says where; messages via ``/__admin/messages``."""
    parser = argparse.ArgumentParser(prog="python -m risk_sim.slack", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default=None)
    args = parser.parse_args(argv)
    simulator = SlackSimulator(token=args.token, host=args.host, port=args.port).start()
    try:
        print(json.dumps({"url": simulator.url, "api_base": simulator.api_base,
                          "token": simulator.token}), flush=True)
        sys.stdin.read()
    finally:
        simulator.stop()


if __name__ == "__main__":
    main()
