"""Lineage of hot-path evaluations (use case): what the service records for each alert.

Three steps around the service's alert transaction (hooks in ``service/hot_path.py``):

* :meth:`HotPathLineage.context` adds the content-addressed data versions of the exact inputs
  evaluated (``domain.lineage.evaluated_inputs``, the functions the Dagster assets hash with; the
  collection inputs also per venue) and an evaluation id to the alert context, so they are
  written with the alert, in its transaction: the versions once per evaluation
  (``evaluation_lineage``), their digest sealed in each alert's audit entry. The Slack message's
  "Asset" button points at ``live_limit_status`` and it lists the inputs' versions;
* :meth:`HotPathLineage.after_commit` reports the evaluation into Dagster's catalog as a
  runless materialisation of ``live_limit_status`` tagged with that evaluation id
  (``dagster_catalog.py``). A failure there is logged and counted, never allowed to delay or
  drop the alert: the audit entry already holds the lineage;
* :class:`SlackEventLinks` then edits each of the evaluation's Slack messages in place
  (``chat.update``) with a "Dagster event" button opening that exact event. The outbox posts
  the message while the event is being reported (neither waits for the other); the link is
  added when both are known, whichever comes first.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from risk_monitor.dagster_catalog import (
    LIVE_ASSET,
    DagsterCatalog,
    ReportedEvent,
    evaluation_version,
)
from risk_monitor.domain.engine import RiskReport
from risk_monitor.domain.lineage import LineageDigest, evaluated_inputs
from risk_monitor.domain.model import Notification
from risk_monitor.platform.code_version import code_version
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.settings import Settings

log = get_logger(__name__)

#: context key of the evaluation's input versions, as a :class:`LineageDigest`
LINEAGE_KEY = "lineage_digest"
#: how long one half of a (reported, delivered) pair waits for the other
PAIR_TTL_S = 600.0


@runtime_checkable
class LinksEvents(Protocol):
    """A notifier that can edit a delivered message to add a link (Slack: ``chat.update``)."""

    def link_event(self, ref: str, notification: Notification, url: str) -> None: ...


@dataclass
class _Half:
    at: float
    url: str | None = None
    ref: str | None = None
    notification: Notification | None = None


class SlackEventLinks:
    """Pairs "the Dagster event is reported" with "the message is delivered", per notification,
    and edits the message with the event's link on a thread of its own (a Slack call never
    holds up the outbox or the hot path's writer). A failed edit is logged: the link is a
    convenience, the audit entry and the event hold the lineage."""

    def __init__(self, notifier: LinksEvents) -> None:
        self.notifier = notifier
        self.linked = 0
        self.failed = 0
        self._halves: dict[str, _Half] = {}
        self._lock = threading.Lock()
        self._jobs: queue.Queue[tuple[str, Notification, str] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> SlackEventLinks:
        self._thread = threading.Thread(target=self._run, name="slack-event-links", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout)
            self._thread = None

    def reported(self, notifications: Sequence[Notification], url: str) -> None:
        for note in notifications:
            self._meet(note.idempotency_key, url=url)

    def delivered(self, notification: Notification, ref: str) -> None:
        """The outbox dispatcher's hook: called for every message it delivered."""
        if notification.context.get("source") != "service":
            return  # Dagster-path alerts link to their run from the first post
        self._meet(notification.idempotency_key, ref=ref, notification=notification)

    def _meet(self, key: str, *, url: str | None = None, ref: str | None = None,
              notification: Notification | None = None) -> None:
        now = time.monotonic()
        with self._lock:
            half = self._halves.setdefault(key, _Half(at=now))
            half.url = url or half.url
            half.ref = ref or half.ref
            half.notification = notification or half.notification
            ready = half.url is not None and half.ref is not None \
                and half.notification is not None
            if ready:
                del self._halves[key]
            for stale in [k for k, h in self._halves.items() if now - h.at > PAIR_TTL_S]:
                del self._halves[stale]
        if ready:
            assert half.ref is not None and half.notification is not None and half.url
            self._jobs.put((half.ref, half.notification, half.url))

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            ref, note, url = job
            try:
                self.notifier.link_event(ref, note, url)
            except Exception as exc:
                self.failed += 1
                log.warning("slack_event_link_failed", error=str(exc),
                            error_class=type(exc).__name__, delivery_ref=ref,
                            idempotency_key=note.idempotency_key)
                continue
            self.linked += 1
            log.info("slack_message_linked_to_dagster_event", delivery_ref=ref,
                     idempotency_key=note.idempotency_key, dagster_event_url=url)


def with_versions(context: Mapping[str, Any]) -> Mapping[str, Any]:
    """The context with its input versions inline (what the Dagster event records): the
    Dagster path's are inline already, the hot path's held by its :class:`LineageDigest`."""
    ref = context.get(LINEAGE_KEY)
    if "input_data_versions" in context or not isinstance(ref, LineageDigest):
        return context
    return {**context, "input_data_versions": ref.versions}


class HotPathLineage:
    def __init__(self, catalog: DagsterCatalog | None,
                 links: SlackEventLinks | None = None) -> None:
        self.catalog = catalog
        self.links = links
        self.reported = 0
        self.failed = 0
        self.last_event: ReportedEvent | None = None
        #: the last evaluation's digest and Dagster data version: an evaluation of equal
        #: inputs (a heartbeat without ticks) reuses the latter
        self._last: tuple[str, str] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> HotPathLineage:
        code_version()  # resolved now (git), not on the first alert's critical path
        catalog = DagsterCatalog.from_environment(settings.alerts.dagster_ui_url)
        if catalog is not None:
            catalog.warm_up()  # nor Dagster's import and the instance's connection
        return cls(catalog)

    def context(self, report: RiskReport) -> dict[str, Any]:
        """Alert-context fields naming the exact inputs of this evaluation (each collection
        input also per venue), and, when a Dagster instance is configured, the evaluation id
        its ``live_limit_status`` event will carry (the "Asset" button opens that asset)."""
        inputs = evaluated_inputs(report.snapshot, report.config_version)
        versions = inputs.versions
        last = self._last
        if last is None or last[0] != inputs.digest:
            last = self._last = (inputs.digest, evaluation_version(versions))
        fields: dict[str, Any] = {
            # the versions travel as their digest (a ``str`` holding them): every alert of the
            # evaluation writes and seals 64 characters, the versions are stored once
            # (``adapters/sql/audit_lineage.py``); hashed here, once per evaluation. A new
            # ``LineageDigest`` per evaluation: what it learns of the store lives no longer
            LINEAGE_KEY: LineageDigest(inputs.digest, versions),
            "data_versions": {name: seen["data_version"] for name, seen in versions.items()},
        }
        if self.catalog is not None:
            fields["asset_key"] = LIVE_ASSET
            fields["evaluation_id"] = uuid.uuid4().hex
            fields["dagster_data_version"] = last[1]
        return fields

    def after_commit(self, context: Mapping[str, Any],
                     notifications: Sequence[Notification]) -> str | None:
        """Report an alerting evaluation to Dagster, then have its Slack messages linked to
        the event; returns the event's UI link."""
        if self.catalog is None or not notifications:
            return None
        try:
            event = self.catalog.report_evaluation(
                with_versions(context), sorted({n.correlation_id for n in notifications}))
        except Exception as exc:  # Dagster's storage down must not touch alerting
            self.failed += 1
            log.warning("dagster_catalog_report_failed", error=str(exc),
                        error_class=type(exc).__name__)
            return None
        self.reported += 1
        self.last_event = event
        if self.links is not None:
            self.links.reported(notifications, event.url)
        return event.url


def link_slack_messages(lineage: HotPathLineage, dispatcher: Any) -> SlackEventLinks | None:
    """Wire the hot path's Dagster events to the dispatcher's Slack messages (service start):
    nothing to link without a Dagster instance, or when the notifier cannot edit messages."""
    notifier = getattr(dispatcher, "notifier", None)
    if lineage.catalog is None or not isinstance(notifier, LinksEvents):
        return None
    links = SlackEventLinks(notifier).start()
    lineage.links = links
    dispatcher.on_delivered.append(links.delivered)
    return links
