"""Alertmanager sink (optional, beside Slack): every alert series mirrored into a real
Alertmanager (``POST /api/v2/alerts``), so firms route alerts to PagerDuty or Opsgenie with the
tools they already run.

It reads the outbox the Slack dispatcher delivers from and keeps its own state per series in
``sink_deliveries``: the latest state change is pushed once (retried with backoff), and kept
alive while it fires, because Alertmanager resolves an alert not re-sent before its ``endsAt``.
A status change (WARN -> BREACH) changes the label set, so the old one is resolved in the same
push. Silenced or acknowledged rows are not pushed: Alertmanager has silences of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from risk_monitor.adapters.alert_messages import alertmanager_annotations, links
from risk_monitor.adapters.sql import codec
from risk_monitor.adapters.sql.dispatcher import NOTIFIER_UP, BackoffPolicy
from risk_monitor.adapters.sql.engine import dialect_insert
from risk_monitor.adapters.sql.schema import outbox, sink_deliveries
from risk_monitor.domain.model import Notification, NotificationKind
from risk_monitor.domain.silences import labels_of
from risk_monitor.platform.errors import (
    NotificationError,
    NotificationRejectedError,
    NotifierConfigError,
)
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.settings import Settings

log = get_logger(__name__)

SINK = "alertmanager"
ALERTNAME = "RiskMonitorLimit"
#: endsAt of a firing alert is this many resend intervals ahead (Prometheus uses 4)
KEEPALIVE_FACTOR = 4
_BATCH = 500


def alert_labels(n: Notification) -> dict[str, str]:
    """The series' labels in its current status (empty values left out, as Prometheus does)."""
    return {"alertname": ALERTNAME, **{k: v for k, v in labels_of(n).items() if v}}


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


class AlertmanagerClient:
    """``/api/v2/alerts`` over HTTP; errors become ours (retryable or configuration)."""

    def __init__(self, url: str, *, timeout_s: float = 5.0, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, headers=headers)

    def post(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        try:
            response = self._http.post("/api/v2/alerts", json=list(alerts))
        except httpx.HTTPError as exc:
            raise NotificationError(f"alertmanager unreachable: {type(exc).__name__}",
                                    source=SINK, retryable=True) from exc
        status = response.status_code
        if status < 300:
            return
        detail = {"http_status": status, "body": response.text[:300]}
        if status in (401, 403, 404):
            raise NotifierConfigError(f"alertmanager refused our configuration ({status})",
                                      source=SINK, retryable=True, details=detail)
        if status == 400:
            raise NotificationRejectedError("alertmanager rejected the alerts (400)",
                                            source=SINK, details=detail)
        raise NotificationError(f"alertmanager answered {status}", source=SINK,
                                retryable=True, details=detail)

    def close(self) -> None:
        self._http.close()


@dataclass(frozen=True)
class _Due:
    row_id: int
    fingerprint: str
    notification: Notification
    labels: dict[str, str]
    new_state: bool
    attempts: int
    bodies: list[dict[str, Any]]


class AlertmanagerSink:
    """Mirrors the outbox's latest state per series into Alertmanager (module docstring)."""

    def __init__(self, engine: Engine, client: AlertmanagerClient, *, ui_url: str,
                 dashboard_url: str | None = None, resend_s: float = 60.0,
                 backfill_s: float = 3600.0, backoff: BackoffPolicy | None = None,
                 clock: codec.Clock = codec.utc_now) -> None:
        self.engine = engine
        self.client = client
        self.ui_url = ui_url
        self.dashboard_url = dashboard_url
        self.resend_s = resend_s
        self.backfill_s = backfill_s
        self.backoff = backoff or BackoffPolicy(initial_s=1.0, max_s=30.0)
        self.clock = clock
        self.up = True

    @classmethod
    def from_settings(cls, engine: Engine, settings: Settings) -> AlertmanagerSink | None:
        am = settings.alertmanager
        if am is None:
            return None
        token = (Settings.require_secret(am.token_env, key="alertmanager.token_env")
                 .get_secret_value() if am.token_env else None)
        alerts = settings.alerts
        return cls(engine, AlertmanagerClient(am.url, timeout_s=am.timeout_s, token=token),
                   ui_url=alerts.dagster_ui_url, dashboard_url=alerts.dashboard_url,
                   resend_s=am.resend_s, backfill_s=am.backfill_s,
                   backoff=BackoffPolicy(initial_s=alerts.retry_initial_s,
                                         max_s=max(alerts.retry_initial_s, alerts.retry_max_s)))

    def _latest(self, now: datetime) -> sa.Select[Any]:
        """The outbox id of each series' latest pushable state within the backfill window."""
        return (sa.select(sa.func.max(outbox.c.id))
                .where(outbox.c.status != "suppressed",
                       outbox.c.created_at >= now - timedelta(seconds=self.backfill_s))
                .group_by(outbox.c.fingerprint))

    def _body(self, n: Notification, labels: Mapping[str, str],
              ends_at: datetime) -> dict[str, Any]:
        """One entry of ``POST /api/v2/alerts``."""
        found = links(n, self.ui_url, self.dashboard_url)
        return {"labels": dict(labels),
                "annotations": alertmanager_annotations(n, self.ui_url, self.dashboard_url),
                "startsAt": _iso(codec.parse_time(n.context.get("episode_started_at"))
                                 or n.detected_at),
                "endsAt": _iso(ends_at),
                "generatorURL": found.get("Dagster event") or found.get("Dagster run")
                or found["Asset"]}

    def _due(self, now: datetime) -> list[_Due]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(outbox.c.id, outbox.c.fingerprint, outbox.c.payload)
                                .where(outbox.c.id.in_(self._latest(now)))).all()
            known = {r.fingerprint: r for r in conn.execute(
                sa.select(sink_deliveries).where(sink_deliveries.c.sink == SINK)).all()}
        due = []
        for row in rows:
            n = codec.notification_from_payload(row.payload)
            seen = known.get(row.fingerprint)
            resolved = n.kind is NotificationKind.RESOLVED
            new_state = seen is None or seen.outbox_id != row.id
            if new_state:
                waiting = seen is not None and seen.attempts > 0 and seen.next_push_at is not None \
                    and seen.next_push_at > now  # backing off after a failure
            else:
                waiting = resolved or seen is None or seen.next_push_at is None \
                    or seen.next_push_at > now
            if waiting:
                continue
            pushed = dict(seen.pushed_labels) if seen is not None and seen.pushed_labels else None
            if resolved:
                labels = pushed or alert_labels(n)
                bodies = [self._body(n, labels, n.detected_at)]
            else:
                labels = alert_labels(n)
                ends = now + timedelta(seconds=KEEPALIVE_FACTOR * self.resend_s)
                bodies = [self._body(n, labels, ends)]
                if pushed is not None and pushed != labels:  # the old status is over
                    bodies.append(self._body(n, pushed, now))
            due.append(_Due(row.id, row.fingerprint, n, labels, new_state,
                            seen.attempts if seen is not None else 0, bodies))
        return due

    def delivery_status(self, overdue_s: float) -> tuple[bool, str, dict[str, Any]]:
        """For /readyz, as the Slack dispatcher's: ok unless a state change has waited longer
        than ``overdue_s`` for Alertmanager to take it, or Alertmanager refuses our
        configuration (keep-alives of already delivered alerts do not count)."""
        now = self.clock()
        pending = (sa.select(outbox.c.created_at, outbox.c.idempotency_key,
                             sink_deliveries.c.last_error)
                   .select_from(outbox.outerjoin(sink_deliveries, sa.and_(
                       sink_deliveries.c.sink == SINK,
                       sink_deliveries.c.fingerprint == outbox.c.fingerprint)))
                   .where(outbox.c.id.in_(self._latest(now)),
                          sa.or_(sink_deliveries.c.outbox_id.is_(None),
                                 sink_deliveries.c.outbox_id != outbox.c.id),
                          outbox.c.created_at <= now - timedelta(seconds=overdue_s))
                   .order_by(outbox.c.created_at, outbox.c.id))
        with self.engine.connect() as conn:
            late = conn.execute(pending).all()
        oldest = late[0] if late else None
        age = max(0.0, (now - oldest.created_at).total_seconds()) if oldest else 0.0
        data: dict[str, Any] = {
            "overdue": len(late), "overdue_after_s": overdue_s,
            "oldest_overdue_age_s": round(age, 3),
            "oldest_overdue_key": oldest.idempotency_key if oldest else None,
            "last_error": oldest.last_error if oldest else None,
            "notifier": SINK, "notifier_up": self.up,
        }
        problems = []
        if late:
            problems.append(f"{len(late)} alert(s) overdue for delivery to alertmanager "
                            f"(oldest {age:.0f}s)")
        if not self.up:
            problems.append("alertmanager refuses our configuration")
        return not problems, "; ".join(problems) or "delivering", data

    def sync_once(self) -> None:
        """Push every due state and keep-alive in batches; record the outcome per series (in
        ``sink_deliveries``: what was delivered when, attempts and the last error)."""
        now = self.clock()
        due = self._due(now)
        for start in range(0, len(due), _BATCH):
            batch = due[start:start + _BATCH]
            try:
                self.client.post([body for item in batch for body in item.bodies])
            except NotificationError as error:
                self._failed(batch, error, now)
                continue
            self._delivered(batch, now)

    def _upsert(self, fingerprint: str, values: dict[str, Any]) -> None:
        with self.engine.begin() as conn:  # ON CONFLICT: another replica may record it first
            insert = dialect_insert(conn, sink_deliveries).values(
                sink=SINK, fingerprint=fingerprint, **values)
            conn.execute(insert.on_conflict_do_update(
                index_elements=["sink", "fingerprint"], set_=values))

    def _delivered(self, batch: Sequence[_Due], now: datetime) -> None:
        for item in batch:
            firing = item.notification.kind is not NotificationKind.RESOLVED
            self._upsert(item.fingerprint, {
                "outbox_id": item.row_id, "pushed_labels": item.labels, "delivered_at": now,
                "next_push_at": now + timedelta(seconds=self.resend_s) if firing else None,
                "attempts": 0, "last_error": None})
            if item.new_state:
                log.info("alert pushed to alertmanager", fingerprint=item.fingerprint,
                         kind=item.notification.kind.value,
                         status=item.notification.status.value,
                         correlation_id=item.notification.correlation_id)
        self._set_up(True)

    def _failed(self, batch: Sequence[_Due], error: NotificationError, now: datetime) -> None:
        for item in batch:
            attempts = item.attempts + 1
            self._upsert(item.fingerprint, {
                "attempts": attempts, "last_error": str(error)[:500],
                "next_push_at": now + timedelta(seconds=self.backoff.delay(attempts))})
        log.warning("alertmanager push failed; retrying", error=str(error),
                    rejected=isinstance(error, NotificationRejectedError),
                    alerts=len(batch), error_code=error.code)
        self._set_up(not isinstance(error, NotifierConfigError))

    def _set_up(self, up: bool) -> None:
        self.up = up
        NOTIFIER_UP.labels(notifier=SINK).set(1 if up else 0)

    def run(self, stop: threading.Event, poll_s: float = 1.0) -> None:
        """Sync until ``stop`` is set (the service runs this in a thread)."""
        while not stop.is_set():
            try:
                self.sync_once()
            except Exception as exc:  # the database blinked: try again next round
                log.warning("alertmanager sync failed", error=str(exc),
                            error_class=type(exc).__name__)
            stop.wait(poll_s)
        self.client.close()
