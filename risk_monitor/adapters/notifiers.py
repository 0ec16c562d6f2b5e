"""Alert delivery: Slack (Web API through slack_sdk), or the JSON-lines file sink
(``adapters/file_sink.py``) when Slack is not configured or refuses our configuration.

What a message says is built in ``adapters/alert_messages.py`` (shared with the Alertmanager
sink); this module decides where and how it is posted.

Both implement :class:`risk_monitor.ports.Notifier` and sit behind the durable outbox, which
retries, orders and records them; a notifier makes one delivery attempt and raises our
``NotificationError`` family (``map_exception`` decides retryable or rejected).

Slack threading: the first notification of an episode posts a message in the severity's
channel; each later state of the same episode (escalated, de-escalated, repeat, resolved)
posts a threaded reply *and then* edits that message to show the current state (the reply is
the alert: it goes first, the edit waits for it), so the channel shows one line per episode and
each state is one recorded message. Every posted message carries the
notification's status, kind and idempotency key in Slack message metadata, so "one WARN, one
BREACH, one RESOLVED" is countable, and lets :meth:`SlackNotifier.find_sent` find a post whose
answer was lost (a crash after Slack accepted it): the outbox adopts it instead of posting twice.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from itertools import chain
from typing import TYPE_CHECKING, Any

from risk_monitor.adapters.alert_messages import (
    EVENT_LINKS_KEY,
    METADATA_EVENT_TYPE,
    NOTE_EVENT_TYPE,
    message_metadata,
    note_metadata,
    render_blocks,
    render_text,
)
from risk_monitor.adapters.errors import map_exception
from risk_monitor.adapters.file_sink import FileSink
from risk_monitor.adapters.slack_thread_links import ThreadLinks
from risk_monitor.domain.alerts import episode_key_prefix
from risk_monitor.domain.model import AlertSeverity, LimitStatus, Notification, NotificationKind
from risk_monitor.domain.routing import (
    STATUS_CHANGES,
    Route,
    channels_for,
    episode_copy_channels,
    escalation_channels,
    has_continue,
    parse_routes,
)
from risk_monitor.platform.errors import ConfigError, NotificationError, NotificationRejectedError
from risk_monitor.platform.logging import get_logger, log_context
from risk_monitor.platform.settings import Settings
from risk_monitor.ports import Notifier

if TYPE_CHECKING:
    from slack_sdk import WebClient

    from risk_monitor.adapters.slack_transport import Gate

log = get_logger(__name__)

#: Slack errors that say an alert thread cannot go on (its reply refused, or its first message
#: not editable); ``message_not_found`` on the edit after a reply: a new message is posted
_ROOT_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed",
                        "channel_not_found", "is_archived", "not_in_channel"})
_SLACK_REF = re.compile(r"^[CDG][A-Z0-9]+:\d+\.\d+$")
_CHANNEL_ID = re.compile(r"^[CDG][A-Z0-9]{8,}$")
#: a post is searched from this long before the alert's detection (clock skew between us and Slack)
FIND_LOOKBACK_S = 300.0
FIND_PAGE_SIZE = 200
FIND_MAX_PAGES = 10
#: ``block_id`` prefix of the first block of a route copy (continue routes, the escalation's
#: critical route): it names the notification, so a retry finds the copy and posts it once
COPY_BLOCK_PREFIX = "rm-copy:"


# --- Slack ---------------------------------------------------------------------------------------
class SlackNotifier:
    """Posts, threads and updates alert messages (see the module docstring)."""

    name = "slack"

    def __init__(self, client: WebClient, channels: Mapping[str, str], *,
                 dagster_ui_url: str, routes: Sequence[Route] = (),
                 dashboard_url: str | None = None) -> None:
        missing = {"info", "warning", "critical"} - set(channels)
        if missing:
            raise ConfigError(f"no Slack channel for severities {sorted(missing)}",
                              key="slack.channels")
        self.client = client
        self.channels = dict(channels)
        self.routes = tuple(routes)
        self.dagster_ui_url = dagster_ui_url
        self.dashboard_url = dashboard_url
        self._channel_ids: dict[str, str] = {}
        self._threads = ThreadLinks()

    @classmethod
    def from_settings(cls, settings: Settings) -> SlackNotifier:
        if settings.slack is None:
            raise ConfigError("Slack is not configured", key="slack")
        from slack_sdk import WebClient

        from risk_monitor.adapters.slack_transport import KeepAliveWebClient

        token = Settings.require_secret(settings.slack.token_env, key="slack.token_env")
        client = KeepAliveWebClient(  # one connection per alert cost 2-6 ms (slack_transport)
            token=token.get_secret_value(),
            base_url=settings.slack.base_url or WebClient.BASE_URL,
            timeout=max(1, math.ceil(settings.slack.timeout_s)),
        )
        channels = {str(sev.value): channel for sev, channel in settings.slack.channels.items()}
        return cls(client, channels, dagster_ui_url=settings.alerts.dagster_ui_url,
                   dashboard_url=settings.alerts.dashboard_url,
                   routes=slack_routes(settings))

    def channel_for(self, n: Notification) -> str:
        """The primary channel (the routing tree's first match): the episode's thread."""
        return self.routes_for(n)[0]

    def routes_for(self, n: Notification) -> list[str]:
        """Every channel the routing tree sends ``n`` to, the primary first."""
        return channels_for(n, self.routes, self.channels)

    def bounded(self, timeout_s: float) -> AbstractContextManager[None] | None:
        """Caps this thread's waits on Slack inside (the dispatcher's post on the committing
        thread); None with a client that cannot (a stock ``WebClient``)."""
        from risk_monitor.adapters.slack_transport import KeepAliveWebClient

        if isinstance(self.client, KeepAliveWebClient):
            return self.client.bounded(timeout_s)
        return None

    def gated(self, gate: Gate) -> AbstractContextManager[None] | None:
        """This thread's posts inside are built, then sent through ``gate`` (the dispatcher's
        post prepared while its commit is in flight); None with a stock ``WebClient``."""
        from risk_monitor.adapters.slack_transport import KeepAliveWebClient

        if isinstance(self.client, KeepAliveWebClient):
            return self.client.gated(gate)
        return None

    def keep_warm(self, stop: threading.Event) -> None:
        """Keep a connection to Slack open until ``stop`` (run on a thread of its own; returns
        at once with a client that cannot: a stock ``WebClient``)."""
        from risk_monitor.adapters.slack_transport import KeepAliveWebClient

        if isinstance(self.client, KeepAliveWebClient):
            self.client.keep_warm(stop)

    def send(self, notification: Notification, previous_ref: str | None) -> str:
        n = notification
        text = render_text(n)
        blocks = render_blocks(n, self.dagster_ui_url, dashboard_url=self.dashboard_url)
        with log_context(correlation_id=n.correlation_id):
            if previous_ref is not None and not _SLACK_REF.match(previous_ref):
                log.warning("thread root is not a Slack message (sink changed?); posting anew",
                            previous_ref=previous_ref, idempotency_key=n.idempotency_key)
                previous_ref = None
            if previous_ref is not None:
                threaded = self._reply(n, previous_ref, text, blocks)
                if threaded is not None:
                    return threaded
            primary, *others = self.routes_for(n)
            response = self._call("chat.postMessage", channel=primary, text=text,
                                  blocks=blocks, metadata=message_metadata(n))
            self._learn_id(primary, response)
            self._copy_to(n, others, text, blocks, retry=False)
            ref = _ref(response)
            self._threads.root(ref, n)
            return ref

    def _reply(self, n: Notification, root_ref: str, text: str,
               blocks: list[dict[str, Any]]) -> str | None:
        """A later state of an episode: the reply in its thread first (the alert reaches the
        channel one round trip sooner), then the thread's first message edited to show it.
        None when the thread is gone (the caller posts a new message): the reply was refused,
        or the first message was deleted (Slack accepts a reply to it and shows it nowhere)."""
        channel, _, root_ts = root_ref.partition(":")
        try:
            reply = _ref(self._call(
                "chat.postMessage", channel=channel, thread_ts=root_ts, text=text,
                blocks=blocks, metadata=message_metadata(n),
                reply_broadcast=n.kind is NotificationKind.ESCALATED))
        except NotificationError as error:
            if error.details.get("slack_error") not in _ROOT_GONE:
                raise
            log.warning("alert thread cannot take a reply; posting a new message",
                        slack_error=error.details.get("slack_error"),
                        idempotency_key=n.idempotency_key)
            return None
        gone = self._update_root(n, channel, root_ts)
        if gone == "message_not_found":
            log.warning("alert thread's first message is gone; posting a new message",
                        idempotency_key=n.idempotency_key, orphaned_reply=reply)
            return None
        self._threads.message(reply, root_ref)
        routed = None
        if n.kind is NotificationKind.ESCALATED:
            routed = self._escalate(n, channel, root_ts, text, blocks)
            if routed is not None:
                self._threads.message(routed, root_ref)
        self._copy_to(n, self._heard(n, channel, root_ts, routed), text, blocks, retry=False)
        return routed or reply

    def _copy_to(self, n: Notification, channels: Sequence[str], text: str,
                 blocks: list[dict[str, Any]], *, retry: bool) -> None:
        """A copy for each further route that matched (``continue``), each delivered exactly
        once: a copy carries no message metadata (the state is counted once, in the primary
        channel) but a marker ``block_id``. A failed copy fails the delivery, so the outbox
        retries it; the retry adopts the primary post (``find_sent``) and posts only the
        copies its channels do not hold yet (``retry``: look first)."""
        failed: NotificationError | None = None
        for channel in channels:
            try:
                if retry and self._find_copy(n, channel) is not None:
                    continue
                self._learn_id(channel, self._call("chat.postMessage", channel=channel,
                                                   text=text, blocks=_marked(blocks, n)))
            except NotificationError as error:
                log.warning("alert copy to a further route failed; the delivery is retried",
                            channel=channel, idempotency_key=n.idempotency_key,
                            slack_error=error.details.get("slack_error"))
                failed = failed or error
        if failed is not None:
            raise failed

    def _heard(self, n: Notification, thread_channel: str, root_ts: str,
               routed: str | None) -> list[str]:
        """The further channels that heard the episode and hear this change of status too:
        those that got its first message (``continue``) and, for a de-escalation or resolve,
        one its escalation was copied to. Leaves out the thread's channel and ``routed`` (the
        escalation's critical channel, which has its copy already)."""
        skip = {thread_channel, routed.partition(":")[0] if routed else None}
        heard = [c for c in self._first_heard(n, thread_channel, root_ts)
                 if self._channel_id(c) not in skip]
        skip.update(self._channel_id(c) for c in heard)
        for channel in escalation_channels(n, self.routes, self.channels):
            if self._channel_id(channel) not in skip \
                    and self._find_copy(n, channel, episode_since=root_ts) is not None:
                heard.append(channel)
        return heard

    def _first_heard(self, n: Notification, thread_channel: str, root_ts: str) -> list[str]:
        """The channels that got the episode's first message (:func:`episode_copy_channels`);
        its status and severity are read from its metadata."""
        if n.kind not in STATUS_CHANGES or not has_continue(self.routes):
            return []
        response = self._call("conversations.replies", channel=thread_channel, ts=root_ts,
                              limit=1, include_all_metadata=True)
        messages = response.get("messages") or []
        meta = (messages[0].get("metadata") or {}) if messages else {}
        payload = meta.get("event_payload") or {}
        try:
            status = LimitStatus(payload["status"])
            severity = AlertSeverity(payload["severity"])
        except (KeyError, ValueError):
            log.warning("episode's first message has no alert metadata; later states are not "
                        "copied to its continue routes", thread=f"{thread_channel}:{root_ts}",
                        idempotency_key=n.idempotency_key)
            return []
        return episode_copy_channels(n, status, severity, self.routes, self.channels)

    def _escalate(self, n: Notification, thread_channel: str, root_ts: str, text: str,
                  blocks: list[dict[str, Any]], *, retry: bool = False) -> str | None:
        """An escalation whose severity routes elsewhere (WARN thread -> critical channel) is
        also posted there, linking back to the thread; None when the route is the same. Once:
        a retry (``retry``) first looks for the copy in the target channel."""
        target = self.channel_for(n)
        if self._channel_id(target) == thread_channel:
            return None
        if retry:
            found = self._find_copy(n, target)
            if found is not None:
                return found
        link = self._call("chat.getPermalink", channel=thread_channel,
                          message_ts=root_ts).get("permalink")
        back = f"<{link}|earlier thread>" if link else f"thread {thread_channel}:{root_ts}"
        note = {"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"Escalated from the {back}"}]}
        # no message metadata: the state is counted once, by the thread reply; this is a copy
        return _ref(self._call("chat.postMessage", channel=target, text=f"{text} - escalated "
                               f"from {link or back}", blocks=_marked([*blocks, note], n)))

    def _find_copy(self, n: Notification, channel: str, *,
                   episode_since: str | None = None) -> str | None:
        """The ref of an earlier route copy of ``n`` in ``channel`` (by its marker block); with
        ``episode_since`` (a Slack ts: the thread's first message), of any copy of ``n``'s
        episode posted since."""
        channel_id = self._channel_id(channel)
        if channel_id is None:
            return None
        if episode_since is None:
            oldest = f"{n.detected_at.timestamp() - FIND_LOOKBACK_S:.6f}"
            marker = COPY_BLOCK_PREFIX + n.idempotency_key
        else:
            oldest = episode_since
            marker = COPY_BLOCK_PREFIX + episode_key_prefix(n.fingerprint, n.episode)
        for message in chain.from_iterable(self._pages(
                "conversations.history", "messages", channel=channel_id, oldest=oldest)):
            ids = (str(b.get("block_id")) for b in message.get("blocks") or [])
            if any(i.startswith(marker) if episode_since else i == marker for i in ids):
                return f"{channel_id}:{message['ts']}"
        return None

    def _pages(self, method: str, items: str, **args: Any) -> Iterator[list[dict[str, Any]]]:
        """The ``items`` of a paginated Web API answer, page by page (at most FIND_MAX_PAGES)."""
        cursor: str | None = None
        for _ in range(FIND_MAX_PAGES):
            response = self._call(method, limit=FIND_PAGE_SIZE, cursor=cursor, **args)
            yield response.get(items) or []
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if cursor is None:
                return

    def find_sent(self, notification: Notification, previous_ref: str | None) -> str | None:
        """The delivery ref of an earlier post of this notification, if Slack has one.

        Searches the thread (``conversations.replies``) and the severity's channel
        (``conversations.history``) for message metadata carrying the idempotency key.
        """
        n = notification
        oldest = f"{n.detected_at.timestamp() - FIND_LOOKBACK_S:.6f}"
        places: list[tuple[str, dict[str, Any]]] = []
        if previous_ref is not None and _SLACK_REF.match(previous_ref):
            channel, _, root_ts = previous_ref.partition(":")
            places.append(("conversations.replies", {"channel": channel, "ts": root_ts}))
        channel_id = self._channel_id(self.channel_for(n))
        if channel_id is not None:  # an unknown channel holds no earlier post
            places.append(("conversations.history", {"channel": channel_id}))
        for method, args in places:
            for message in chain.from_iterable(self._pages(
                    method, "messages", oldest=oldest, include_all_metadata=True, **args)):
                if _metadata_key(message, METADATA_EVENT_TYPE) == n.idempotency_key:
                    found = f"{args['channel']}:{message['ts']}"
                    return self._complete_copies(n, previous_ref, found)
        return None

    def _complete_copies(self, n: Notification, previous_ref: str | None, found: str) -> str:
        """An adopted post whose route copies may be missing (the earlier attempt stopped
        after the primary): post each missing copy once; the ref the delivery records."""
        text = render_text(n)
        blocks = render_blocks(n, self.dagster_ui_url, dashboard_url=self.dashboard_url)
        if previous_ref is None or not _SLACK_REF.match(previous_ref):  # posted as a first
            self._copy_to(n, self.routes_for(n)[1:], text, blocks, retry=True)
            return found
        channel, _, root_ts = previous_ref.partition(":")
        if found.partition(":")[2] != root_ts:  # a reply: its first message may not show it
            self._update_root(n, channel, root_ts)
        routed = None
        if n.kind is NotificationKind.ESCALATED:
            routed = self._escalate(n, channel, root_ts, text, blocks, retry=True)
        self._copy_to(n, self._heard(n, channel, root_ts, routed), text, blocks, retry=True)
        return routed or found

    def _learn_id(self, channel: str, response: Any) -> None:
        """Remember the ID Slack answered for a channel name (a retry searches its history)."""
        channel_id = response.get("channel") if response is not None else None
        if isinstance(channel_id, str):
            self._channel_ids.setdefault(channel.lstrip("#"), channel_id)

    def _channel_id(self, channel: str) -> str | None:
        """History needs a channel ID; settings may name the channel (``#risk-alerts``)."""
        value = channel.lstrip("#")
        if _CHANNEL_ID.match(value):
            return value
        if value not in self._channel_ids:
            for page in self._pages("conversations.list", "channels", exclude_archived=True,
                                    types="public_channel,private_channel"):
                self._channel_ids.update((str(c.get("name")), str(c.get("id"))) for c in page)
                if value in self._channel_ids:
                    break
        return self._channel_ids.get(value)

    def post_note(self, thread_ref: str, text: str, key: str | None = None) -> str:
        """A plain threaded reply under an alert's first message (acknowledgements, silences).
        Its metadata is of another event type than alerts', so it never counts as an alert
        state; with ``key`` it carries that idempotency key and a note the thread already
        holds (a crash between the post and its record) is adopted instead of posted again."""
        channel, _, root_ts = thread_ref.partition(":")
        if not _SLACK_REF.match(thread_ref):
            raise NotificationRejectedError(f"not a Slack message reference: {thread_ref!r}",
                                            source="slack")
        found = self._find_note(channel, root_ts, key) if key is not None else None
        if found is not None:
            log.warning("adopting an earlier thread note (its record was lost)", note_key=key,
                        delivery_ref=found)
            return found
        return _ref(self._call("chat.postMessage", channel=channel, thread_ts=root_ts, text=text,
                               metadata=note_metadata(key) if key is not None else None))

    def _find_note(self, channel: str, root_ts: str, key: str) -> str | None:
        """The ref of a note with idempotency key ``key`` in the thread, if there is one."""
        for message in chain.from_iterable(self._pages(
                "conversations.replies", "messages", channel=channel, ts=root_ts,
                include_all_metadata=True)):
            if _metadata_key(message, NOTE_EVENT_TYPE) == key:
                return f"{channel}:{message['ts']}"
        return None

    def link_event(self, ref: str, notification: Notification, url: str) -> None:
        """Edit a delivered message in place (``chat.update``) to add the "Dagster event"
        button: the hot path reports its evaluation to Dagster while the message is posted."""
        if not _SLACK_REF.match(ref):
            raise NotificationRejectedError(f"not a Slack message reference: {ref!r}",
                                            source="slack")
        channel, _, ts = ref.partition(":")
        root, events, latest = self._threads.linked(ref, notification, url)
        if root == ref and latest is not None \
                and latest.idempotency_key != notification.idempotency_key:
            self._update_root(latest, channel, ts)  # it shows a later state already: keep it
            return
        n = replace(notification, context={**notification.context, "dagster_event_url": url})
        if root == ref:  # the thread's first message lists every event of the episode
            n = replace(n, context={**n.context, EVENT_LINKS_KEY: events})
        self._call("chat.update", channel=channel, ts=ts, text=render_text(n),
                   blocks=render_blocks(n, self.dagster_ui_url, dashboard_url=self.dashboard_url))
        if root != ref and latest is not None:  # ... and keeps them all when a reply is linked
            root_channel, _, root_ts = root.partition(":")
            self._update_root(latest, root_channel, root_ts)

    def _update_root(self, n: Notification, channel: str, ts: str) -> str | None:
        """Show the current state on the thread's first message, with every Dagster event
        link of the episode so far (newest first); Slack's error when it cannot be edited
        (deleted, archived, ...), else None."""
        n = self._threads.shown_on_root(f"{channel}:{ts}", n)
        try:
            self._call("chat.update", channel=channel, ts=ts, text=render_text(n),
                       blocks=render_blocks(n, self.dagster_ui_url, root=True,
                                            dashboard_url=self.dashboard_url))
        except NotificationError as error:
            code = error.details.get("slack_error")
            if code in _ROOT_GONE:
                log.warning("alert thread root cannot be updated", slack_error=code,
                            idempotency_key=n.idempotency_key)
                return str(code)
            raise
        return None

    def _call(self, method: str, **kwargs: Any) -> Any:
        """One Web API call through slack_sdk's own method (``chat.update``: ``chat_update``);
        errors become ours."""
        call: Callable[..., Any] = getattr(self.client, method.replace(".", "_"))
        try:
            return call(**kwargs)
        except Exception as exc:
            raise map_exception(exc, source="slack", endpoint=method) from exc


def slack_routes(settings: Settings) -> tuple[Route, ...]:
    """The routing tree of ``slack.routes`` (ConfigError naming the route that is wrong)."""
    if settings.slack is None:
        return ()
    try:
        return parse_routes([r.model_dump(by_alias=True) for r in settings.slack.routes],
                            where="slack.routes")
    except ValueError as exc:  # "slack.routes[0].matchers: why" -> key, message
        key, _, why = str(exc).partition(": ")
        raise ConfigError(str(exc), key=key if why else "slack.routes") from exc


def build_notifier(settings: Settings) -> Notifier:
    """Slack when configured, else the file sink under the data directory."""
    if settings.slack is not None:
        return SlackNotifier.from_settings(settings)
    return FileSink(settings.alerts.file_sink_path or settings.data_dir / "alerts.jsonl")


def build_fallback(settings: Settings) -> Notifier | None:
    """Where alerts go while Slack refuses our configuration; none when Slack is not used
    (the file sink is then the primary)."""
    if settings.slack is None:
        return None
    path = settings.alerts.fallback_sink_path or settings.data_dir / "alerts-fallback.jsonl"
    return FileSink(path)


def _ref(response: Any) -> str:
    """The delivery ref of a posted message: ``<channel id>:<ts>``."""
    return f"{response['channel']}:{response['ts']}"


def _metadata_key(message: Mapping[str, Any], event_type: str) -> Any:
    """The idempotency key in a message's metadata of ``event_type`` (None otherwise)."""
    meta = message.get("metadata") or {}
    return (meta.get("event_payload") or {}).get("idempotency_key") \
        if meta.get("event_type") == event_type else None


def _marked(blocks: list[dict[str, Any]], n: Notification) -> list[dict[str, Any]]:
    """``blocks`` with the copy marker as the first block's ``block_id`` (invisible)."""
    if not blocks:
        return blocks
    return [{**blocks[0], "block_id": COPY_BLOCK_PREFIX + n.idempotency_key}, *blocks[1:]]
