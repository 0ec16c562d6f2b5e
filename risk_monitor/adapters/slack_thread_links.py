"""The Dagster event links each Slack alert thread's first message shows (see
:class:`ThreadLinks`); kept by :class:`risk_monitor.adapters.notifiers.SlackNotifier`."""

from __future__ import annotations

import threading
from dataclasses import replace

from risk_monitor.adapters.alert_messages import EVENT_LINKS_KEY
from risk_monitor.domain.model import Notification


class ThreadLinks:
    """What each alert thread's first message shows beyond the latest state: the Dagster event
    links of the episode's messages, newest first (``chat.update`` of the first message would
    otherwise drop an earlier state's link). In memory, bounded: after a restart a thread's
    first message lists the events linked since; ``audit trace`` always has them all."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._root_of: dict[str, str] = {}  # message ref -> its thread's first message ref
        self._events: dict[str, list[dict[str, str]]] = {}  # first message ref -> links
        self._latest: dict[str, Notification] = {}  # first message ref -> state it shows
        self._lock = threading.Lock()

    def _bound(self) -> None:
        for table in (self._root_of, self._events, self._latest):
            while len(table) > self.size:
                table.pop(next(iter(table)))  # type: ignore[attr-defined]

    def root(self, ref: str, n: Notification) -> None:
        with self._lock:
            self._root_of[ref] = ref
            self._latest[ref] = n
            self._bound()

    def message(self, ref: str, root: str) -> None:
        with self._lock:
            self._root_of[ref] = self._root_of.get(root, root)
            self._bound()

    def shown_on_root(self, root: str, n: Notification) -> Notification:
        """``n`` as the first message shows it (and remember it as the state shown)."""
        with self._lock:
            self._latest[root] = n
            events = list(self._events.get(root, ()))
        if not events:
            return n
        return replace(n, context={**n.context, EVENT_LINKS_KEY: events,
                                   "dagster_event_url": events[0]["url"]})

    def linked(self, ref: str, n: Notification, url: str
               ) -> tuple[str, list[dict[str, str]], Notification | None]:
        """Record ``url`` as the event of ``n``'s message ``ref``; returns the thread's first
        message, its links newest first and the state it shows."""
        label = f"{n.status.value} {n.detected_at.strftime('%H:%M:%S')}"
        with self._lock:
            root = self._root_of.get(ref, ref)
            events = [{"label": label, "url": url},
                      *(e for e in self._events.get(root, ()) if e["url"] != url)]
            self._events[root] = events
            self._bound()
            return root, list(events), self._latest.get(root)
