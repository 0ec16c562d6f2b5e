"""The durable outbox: claim due notifications, deliver them in order, record the outcome.

A row is claimed (``sending``, with a lease and a claim token) in one transaction, sent outside
any transaction, then marked in another: a crash between send and mark leaves the row
``sending`` until its lease expires (``alerts.outbox_lease_s``, seconds). Before sending a row
again, the dispatcher asks the notifier for the earlier post (Slack: message metadata carrying
the idempotency key) and adopts it, so a crash after Slack accepted a post gives no second post. Within a series (fingerprint) rows go
out strictly by ``sequence``: a row is claimable only when every earlier unfinished row of its
series is claimed with it, and a retry stops the rest of the series. A retryable failure
(Slack 5xx, timeout, 429) also ends the batch, since the next send would meet the same outage;
the delay honours Retry-After. A configuration rejection (revoked token, unknown channel) keeps
the row pending and retried on the same schedule, writes it once to the fallback sink, and marks
the notifier down (``risk_monitor_notifier_up`` 0) until a delivery succeeds. Only a rejection
of the message itself (malformed, too long) fails the row for good, after the fallback sink got
it, logged and counted.

Claims are serialised on PostgreSQL by an advisory lock (and ``FOR UPDATE SKIP LOCKED``), on
SQLite by ``BEGIN IMMEDIATE``, so two dispatchers (service replicas) never split a series.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

import sqlalchemy as sa
from prometheus_client import Gauge
from sqlalchemy.engine import Connection, Engine

from risk_monitor.adapters.errors import map_exception
from risk_monitor.adapters.sql import codec
from risk_monitor.adapters.sql.engine import is_postgres, lock_names, read_only, write_tx
from risk_monitor.adapters.sql.schema import UtcDateTime, alert_states, outbox
from risk_monitor.domain.model import Notification
from risk_monitor.platform.errors import (
    NotificationRejectedError,
    NotifierConfigError,
    RateLimitedError,
    RiskMonitorError,
)
from risk_monitor.platform.logging import get_logger, log_context, redact_text
from risk_monitor.platform.metrics import record_error
from risk_monitor.platform.settings import Settings
from risk_monitor.ports import Notifier

log = get_logger(__name__)
SOURCE = "outbox"
UNFINISHED = ("pending", "sending")

NOTIFIER_UP = Gauge("risk_monitor_notifier_up",
                    "1 while the notifier accepts deliveries; 0 after it refused our "
                    "configuration (revoked token, unknown channel) until a delivery succeeds.",
                    ["notifier"])


@runtime_checkable
class FindsEarlierPosts(Protocol):
    """A notifier that can find a post whose answer was lost (Slack message metadata)."""

    def find_sent(self, notification: Notification, previous_ref: str | None) -> str | None: ...


@dataclass(frozen=True)
class BackoffPolicy:
    """Exponential backoff with jitter; a server's Retry-After is a floor, never shortened."""

    initial_s: float = 1.0
    max_s: float = 60.0
    multiplier: float = 2.0
    jitter: float = 0.2  # +/- fraction of the delay, so replicas do not retry in lockstep

    def delay(self, attempt: int, retry_after: float | None = None,
              rng: random.Random | None = None) -> float:
        base = min(self.max_s, self.initial_s * self.multiplier ** max(0, attempt - 1))
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        delay = max(0.0, base * (1.0 + spread))
        return max(delay, retry_after or 0.0)


@dataclass(frozen=True)
class OutboxEntry:
    """One claimed row: what to send and the token that proves the claim is ours."""

    id: int
    claim_token: str
    fingerprint: str
    episode: int
    sequence: int
    attempts: int
    notification: Notification
    fallback_ref: str | None = None


@dataclass(frozen=True)
class DeliveryBacklog:
    """Undelivered notifications older than the overdue threshold (for /readyz)."""

    overdue: int
    oldest_created_at: datetime | None
    oldest_key: str | None

    def age_s(self, now: datetime) -> float:
        return 0.0 if self.oldest_created_at is None else \
            max(0.0, (now - self.oldest_created_at).total_seconds())


@dataclass(frozen=True)
class OutboxRow:
    """A row as stored, for operators, the service API and tests."""

    id: int
    idempotency_key: str
    fingerprint: str
    episode: int
    sequence: int
    kind: str
    alert_status: str
    severity: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    last_error_code: str | None
    delivery_ref: str | None
    created_at: datetime
    detected_at: datetime
    source_event_time: datetime | None
    notified_at: datetime | None
    correlation_id: str
    fallback_ref: str | None


@dataclass
class DispatchResult:
    """Outcome of one dispatch: sent, rescheduled, failed for good, and released unsent."""

    sent: int = 0
    retried: int = 0
    failed: int = 0
    deferred: int = 0

    @property
    def claimed(self) -> int:
        return self.sent + self.retried + self.failed + self.deferred


class OutboxRepository:
    """The SQL side of the outbox: claim, mark, reschedule, inspect."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- claiming -------------------------------------------------------------------------------
    def claim(self, batch: int, now: datetime, lease_s: float) -> list[OutboxEntry]:
        """Claim up to ``batch`` due rows, each series' rows as an in-order prefix."""
        token = str(uuid.uuid4())
        with write_tx(self.engine, source=SOURCE) as conn:
            lock_names(conn, ["risk_monitor.outbox.claim"])
            due = (
                sa.select(outbox.c.id, outbox.c.fingerprint, outbox.c.sequence)
                .where(sa.or_(
                    sa.and_(outbox.c.status == "pending", outbox.c.next_attempt_at <= now),
                    sa.and_(outbox.c.status == "sending", outbox.c.lease_until <= now),
                ))
                .order_by(outbox.c.next_attempt_at, outbox.c.id)
                .limit(batch)
            )
            if is_postgres(conn):
                due = due.with_for_update(skip_locked=True)
            candidates = {row.id for row in conn.execute(due)}
            if not candidates:
                return []
            accepted = _in_order_prefixes(conn, candidates)
            if not accepted:
                return []
            conn.execute(
                outbox.update().where(outbox.c.id.in_(accepted)).values(
                    status="sending",
                    claim_token=token,
                    lease_until=now + timedelta(seconds=lease_s),
                    attempts=outbox.c.attempts + 1,
                )
            )
            rows = conn.execute(
                sa.select(outbox.c.id, outbox.c.fingerprint, outbox.c.episode,
                          outbox.c.sequence, outbox.c.attempts, outbox.c.payload,
                          outbox.c.fallback_ref)
                .where(outbox.c.id.in_(accepted))
                .order_by(outbox.c.fingerprint, outbox.c.sequence)
            )
            return [
                OutboxEntry(id=r.id, claim_token=token, fingerprint=r.fingerprint,
                            episode=r.episode, sequence=r.sequence, attempts=r.attempts,
                            notification=codec.notification_from_payload(r.payload),
                            fallback_ref=r.fallback_ref)
                for r in rows
            ]

    def thread_roots(self, entries: Sequence[OutboxEntry]) -> dict[tuple[str, int], str]:
        """Delivery ref of the first sent message of each (fingerprint, episode) in play."""
        if not entries:
            return {}
        fingerprints = sorted({e.fingerprint for e in entries})
        episodes = sorted({e.episode for e in entries})
        roots: dict[tuple[str, int], str] = {}
        with read_only(self.engine, source=SOURCE) as conn:
            rows = conn.execute(
                sa.select(outbox.c.fingerprint, outbox.c.episode, outbox.c.delivery_ref)
                .where(outbox.c.fingerprint.in_(fingerprints), outbox.c.episode.in_(episodes),
                       outbox.c.status == "sent", outbox.c.delivery_ref.is_not(None))
                .order_by(outbox.c.fingerprint, outbox.c.episode, outbox.c.sequence)
            )
            for row in rows:
                roots.setdefault((row.fingerprint, row.episode), row.delivery_ref)
        return roots

    # -- outcomes -------------------------------------------------------------------------------
    def mark_sent(self, entry: OutboxEntry, delivery_ref: str, now: datetime,
                  *, thread_root: bool) -> bool:
        """Record a delivery; False when our lease was lost (someone may send it again)."""
        with write_tx(self.engine, source=SOURCE) as conn:
            done = conn.execute(
                outbox.update()
                .where(outbox.c.id == entry.id, outbox.c.claim_token == entry.claim_token)
                .values(status="sent", delivery_ref=delivery_ref, notified_at=now,
                        finished_at=now, lease_until=None, claim_token=None)
            ).rowcount
            if done and thread_root:
                conn.execute(
                    alert_states.update()
                    .where(alert_states.c.fingerprint == entry.fingerprint,
                           alert_states.c.episode == entry.episode)
                    .values(message_ref=delivery_ref)
                )
        return bool(done)

    def reschedule(self, entry: OutboxEntry, next_attempt_at: datetime,
                   error: RiskMonitorError) -> bool:
        with write_tx(self.engine, source=SOURCE) as conn:
            return bool(conn.execute(
                outbox.update()
                .where(outbox.c.id == entry.id, outbox.c.claim_token == entry.claim_token)
                .values(status="pending", next_attempt_at=next_attempt_at, lease_until=None,
                        claim_token=None, last_error=_error_text(error),
                        last_error_code=error.code)
            ).rowcount)

    def mark_failed(self, entry: OutboxEntry, now: datetime, error: RiskMonitorError) -> bool:
        with write_tx(self.engine, source=SOURCE) as conn:
            return bool(conn.execute(
                outbox.update()
                .where(outbox.c.id == entry.id, outbox.c.claim_token == entry.claim_token)
                .values(status="failed", finished_at=now, lease_until=None, claim_token=None,
                        last_error=_error_text(error), last_error_code=error.code)
            ).rowcount)

    def record_fallback(self, entry: OutboxEntry, fallback_ref: str) -> bool:
        """Remember that the fallback sink has this row, so each retry does not write it again."""
        with write_tx(self.engine, source=SOURCE) as conn:
            return bool(conn.execute(
                outbox.update()
                .where(outbox.c.id == entry.id, outbox.c.claim_token == entry.claim_token)
                .values(fallback_ref=fallback_ref)
            ).rowcount)

    def release(self, entries: Sequence[OutboxEntry], not_before: datetime | None) -> int:
        """Give claimed rows back unsent (not counted as an attempt)."""
        if not entries:
            return 0
        released = 0
        with write_tx(self.engine, source=SOURCE) as conn:
            for entry in entries:
                values: dict[str, Any] = {"status": "pending", "lease_until": None,
                                          "claim_token": None,
                                          "attempts": outbox.c.attempts - 1}
                if not_before is not None:
                    later = sa.literal(not_before, UtcDateTime())
                    values["next_attempt_at"] = sa.case(
                        (outbox.c.next_attempt_at < later, later),
                        else_=outbox.c.next_attempt_at,
                    )
                released += conn.execute(
                    outbox.update()
                    .where(outbox.c.id == entry.id, outbox.c.claim_token == entry.claim_token)
                    .values(**values)
                ).rowcount
        return released

    # -- inspection -----------------------------------------------------------------------------
    def rows(self, *, fingerprint: str | None = None, status: str | None = None,
             limit: int = 1000) -> list[OutboxRow]:
        query = sa.select(*[outbox.c[f] for f in OutboxRow.__dataclass_fields__])
        if fingerprint is not None:
            query = query.where(outbox.c.fingerprint == fingerprint)
        if status is not None:
            query = query.where(outbox.c.status == status)
        query = query.order_by(outbox.c.id).limit(limit)
        with read_only(self.engine, source=SOURCE) as conn:
            return [OutboxRow(**dict(r._mapping)) for r in conn.execute(query)]

    def recent(self, limit: int = 50) -> list[tuple[OutboxRow, Notification]]:
        """The alert feed: newest notifications first, with their delivery state."""
        fields = [outbox.c[f] for f in OutboxRow.__dataclass_fields__]
        query = sa.select(*fields, outbox.c.payload).order_by(outbox.c.id.desc()).limit(limit)
        with read_only(self.engine, source=SOURCE) as conn:
            found: list[tuple[OutboxRow, Notification]] = []
            for r in conn.execute(query):
                values = dict(r._mapping)
                payload = values.pop("payload")
                found.append((OutboxRow(**values), codec.notification_from_payload(payload)))
            return found

    def overdue(self, now: datetime, older_than_s: float) -> DeliveryBacklog:
        """Unfinished rows created more than ``older_than_s`` ago: alerts late for delivery."""
        cutoff = now - timedelta(seconds=older_than_s)
        late = sa.and_(outbox.c.status.in_(UNFINISHED), outbox.c.created_at <= cutoff)
        with read_only(self.engine, source=SOURCE) as conn:
            count = conn.execute(sa.select(sa.func.count()).where(late)).scalar_one()
            oldest = conn.execute(
                sa.select(outbox.c.created_at, outbox.c.idempotency_key).where(late)
                .order_by(outbox.c.created_at, outbox.c.id).limit(1)
            ).first()
        return DeliveryBacklog(overdue=int(count),
                               oldest_created_at=oldest.created_at if oldest else None,
                               oldest_key=oldest.idempotency_key if oldest else None)

    def counts(self) -> dict[str, int]:
        with read_only(self.engine, source=SOURCE) as conn:
            rows = conn.execute(
                sa.select(outbox.c.status, sa.func.count()).group_by(outbox.c.status)
            )
            found: dict[str, int] = {str(r[0]): int(r[1]) for r in rows}
        return {status: found.get(status, 0) for status in ("pending", "sending", "sent", "failed")}


def _in_order_prefixes(conn: Connection, candidates: set[int]) -> list[int]:
    """Keep, per series, the claimable rows that precede every unclaimable unfinished row."""
    fingerprints = sorted({
        r.fingerprint for r in conn.execute(
            sa.select(outbox.c.fingerprint).where(outbox.c.id.in_(candidates)).distinct()
        )
    })
    unfinished = conn.execute(
        sa.select(outbox.c.id, outbox.c.fingerprint)
        .where(outbox.c.fingerprint.in_(fingerprints), outbox.c.status.in_(UNFINISHED))
        .order_by(outbox.c.fingerprint, outbox.c.sequence)
    )
    accepted: list[int] = []
    blocked: set[str] = set()
    for row in unfinished:
        if row.fingerprint in blocked:
            continue
        if row.id in candidates:
            accepted.append(row.id)
        else:
            blocked.add(row.fingerprint)
    return accepted


def _error_text(error: RiskMonitorError) -> str:
    return redact_text(str(error))[:2000]


def _retry_after(error: RiskMonitorError) -> float | None:
    raw: Any = error.retry_after if isinstance(error, RateLimitedError) else None
    if raw is None:
        raw = error.details.get("retry_after")
    try:
        value = float(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None
    return value if value is not None and value >= 0 else None


class OutboxDispatcher:
    """Delivers the outbox through one notifier; call ``dispatch_once`` or run it in a thread."""

    def __init__(
        self,
        engine: Engine,
        notifier: Notifier,
        *,
        clock: codec.Clock = codec.utc_now,
        backoff: BackoffPolicy | None = None,
        max_attempts: int = 1000,
        lease_s: float = 10.0,
        max_workers: int = 1,
        rng: random.Random | None = None,
        notifier_name: str | None = None,
        fallback: Notifier | None = None,
    ) -> None:
        self.repository = OutboxRepository(engine)
        self.notifier = notifier
        self.fallback = fallback
        self.clock = clock
        self.backoff = backoff or BackoffPolicy()
        self.max_attempts = max_attempts
        self.lease_s = lease_s
        self.max_workers = max(1, max_workers)
        self.notifier_name = notifier_name or str(getattr(notifier, "name", "notifier"))
        self._rng = rng or random.Random()
        self._wake = threading.Event()
        self._health_lock = threading.Lock()
        self.notifier_error: RiskMonitorError | None = None  # set while it refuses our config
        NOTIFIER_UP.labels(notifier=self.notifier_name).set(1)

    @property
    def notifier_up(self) -> bool:
        """False from a configuration rejection until the next successful delivery."""
        with self._health_lock:
            return self.notifier_error is None

    def _set_notifier_health(self, error: RiskMonitorError | None) -> None:
        with self._health_lock:
            changed = (error is None) != (self.notifier_error is None)
            self.notifier_error = error
        NOTIFIER_UP.labels(notifier=self.notifier_name).set(0 if error is not None else 1)
        if changed and error is not None:
            log.error("notifier refuses our configuration; alerts wait and go to the fallback "
                      "sink", notifier=self.notifier_name, error_code=error.code,
                      error=str(error))
        elif changed:
            log.info("notifier accepts deliveries again", notifier=self.notifier_name)

    @classmethod
    def from_settings(cls, engine: Engine, settings: Settings,
                      notifier: Notifier | None = None) -> OutboxDispatcher:
        """The service's dispatcher: Slack when configured (else the file sink) with the
        fallback file sink, lease, retry schedule and limits from ``alerts.*`` and
        ``slack.max_concurrency``."""
        from risk_monitor.adapters.notifiers import build_fallback, build_notifier

        if notifier is None:
            notifier = build_notifier(settings)
        alerts = settings.alerts
        workers = settings.slack.max_concurrency if settings.slack is not None else 1
        backoff = BackoffPolicy(initial_s=alerts.retry_initial_s,
                                max_s=max(alerts.retry_initial_s, alerts.retry_max_s))
        return cls(engine, notifier, max_attempts=alerts.outbox_max_attempts,
                   max_workers=workers, lease_s=alerts.outbox_lease_s, backoff=backoff,
                   fallback=build_fallback(settings))

    def wake(self) -> None:
        """Cut the poll wait short (call after enqueuing, or after setting the stop event)."""
        self._wake.set()

    def dispatch_once(self, batch: int = 100) -> DispatchResult:
        """Claim due rows and deliver them; returns what happened to each claimed row."""
        entries = self.repository.claim(batch, self.clock(), self.lease_s)
        result = DispatchResult()
        if not entries:
            return result
        roots = self.repository.thread_roots(entries)
        series: dict[str, list[OutboxEntry]] = defaultdict(list)
        for entry in entries:
            series[entry.fingerprint].append(entry)
        stop = _BatchStop(deadline=self.clock() + timedelta(seconds=self.lease_s / 2))
        lock = threading.Lock()

        def run_series(items: list[OutboxEntry]) -> None:
            for index, entry in enumerate(items):
                if stop.stopped(self.clock()):
                    released = self.repository.release(items[index:], stop.not_before)
                    with lock:
                        result.deferred += released
                    return
                outcome = self._deliver(entry, roots, lock, stop)
                with lock:
                    setattr(result, outcome, getattr(result, outcome) + 1)
                if outcome == "retried":  # later rows of the series must wait for it
                    released = self.repository.release(items[index + 1:], stop.not_before)
                    with lock:
                        result.deferred += released
                    return

        groups = list(series.values())
        if self.max_workers == 1 or len(groups) == 1:
            for items in groups:
                run_series(items)
        else:
            with ThreadPoolExecutor(self.max_workers, thread_name_prefix="outbox") as pool:
                for future in [pool.submit(run_series, items) for items in groups]:
                    future.result()
        return result

    def _deliver(self, entry: OutboxEntry, roots: dict[tuple[str, int], str],
                 lock: threading.Lock, stop: _BatchStop) -> str:
        n = entry.notification
        key = (entry.fingerprint, entry.episode)
        with lock:
            previous_ref = roots.get(key)
        with log_context(correlation_id=n.correlation_id, fingerprint=n.fingerprint):
            try:
                ref = self._earlier_post(entry, previous_ref)
                if ref is None:
                    ref = self.notifier.send(n, previous_ref)
            except Exception as exc:
                error = map_exception(exc, source=self.notifier_name)
                return self._failed_attempt(entry, error, stop)
            self._set_notifier_health(None)
            now = self.clock()
            if previous_ref is None:
                with lock:
                    roots[key] = ref
            if not self.repository.mark_sent(entry, ref, now, thread_root=previous_ref is None):
                log.warning("outbox lease lost before marking sent; it may be sent again",
                            idempotency_key=n.idempotency_key)
            log.info("alert notification sent", idempotency_key=n.idempotency_key,
                     kind=n.kind.value, status=n.status.value, severity=n.severity.value,
                     limit_id=n.limit_id, scope=n.scope, delivery_ref=ref,
                     attempts=entry.attempts)
            return "sent"

    def _earlier_post(self, entry: OutboxEntry, previous_ref: str | None) -> str | None:
        """On a second or later attempt, the earlier post Slack may have accepted (adopt it)."""
        if entry.attempts <= 1 or not isinstance(self.notifier, FindsEarlierPosts):
            return None
        ref = self.notifier.find_sent(entry.notification, previous_ref)
        if ref is not None:
            log.warning("adopting an earlier post of this notification (its answer was lost)",
                        idempotency_key=entry.notification.idempotency_key, delivery_ref=ref,
                        attempts=entry.attempts)
        return ref

    def _to_fallback(self, entry: OutboxEntry, error: RiskMonitorError) -> None:
        """Write the row once to the fallback sink; a failing fallback only logs."""
        if self.fallback is None or entry.fallback_ref is not None:
            return
        try:
            ref = self.fallback.send(entry.notification, None)
        except Exception as exc:
            fallback_error = map_exception(exc, source="fallback_sink")
            record_error(fallback_error)
            log.error("fallback sink failed too", error_code=fallback_error.code,
                      error=str(fallback_error),
                      idempotency_key=entry.notification.idempotency_key)
            return
        self.repository.record_fallback(entry, ref)
        log.warning("alert written to the fallback sink", fallback_ref=ref,
                    idempotency_key=entry.notification.idempotency_key, error_code=error.code)

    def _failed_attempt(self, entry: OutboxEntry, error: RiskMonitorError,
                        stop: _BatchStop) -> str:
        n = entry.notification
        record_error(error)
        fields = {"idempotency_key": n.idempotency_key, "kind": n.kind.value,
                  "status": n.status.value, "error_code": error.code, "error": str(error),
                  "attempts": entry.attempts}
        rejected = isinstance(error, NotificationRejectedError)
        if isinstance(error, NotifierConfigError):
            self._set_notifier_health(error)
        if rejected or isinstance(error, NotifierConfigError):
            self._to_fallback(entry, error)
        now = self.clock()
        if rejected or entry.attempts >= self.max_attempts:
            self.repository.mark_failed(entry, now, error)
            log.error("alert notification failed for good", **fields)
            return "failed"
        retry_after = _retry_after(error)
        delay = self.backoff.delay(entry.attempts, retry_after, self._rng)
        next_at = now + timedelta(seconds=delay)
        self.repository.reschedule(entry, next_at, error)
        stop.trip(next_at)  # the destination is failing: the rest of the batch waits too
        log.warning("alert notification delivery failed; will retry", retry_in_s=round(delay, 3),
                    retry_after=retry_after, **fields)
        return "retried"

    def run(self, stop_event: threading.Event, poll_interval_s: float = 1.0,
            batch: int = 100) -> None:
        """Dispatch until ``stop_event`` is set: at once while work remains, else poll."""
        log.info("outbox dispatcher started", notifier=self.notifier_name)
        while not stop_event.is_set():
            try:
                result = self.dispatch_once(batch)
            except Exception as exc:  # the loop must survive a database outage
                error = map_exception(exc, source=SOURCE)
                record_error(error)
                log.error("outbox dispatch failed", error_code=error.code, error=str(error))
                result = DispatchResult()
            if result.sent and result.claimed >= batch:
                continue  # a full batch went out: more is probably due
            self._wake.wait(poll_interval_s)
            self._wake.clear()
        log.info("outbox dispatcher stopped", notifier=self.notifier_name)


class _BatchStop:
    """Shared by the series of one batch: stop after a retryable failure or near the lease."""

    def __init__(self, deadline: datetime) -> None:
        self.deadline = deadline
        self.not_before: datetime | None = None
        self._lock = threading.Lock()

    def trip(self, not_before: datetime) -> None:
        with self._lock:
            if self.not_before is None or not_before > self.not_before:
                self.not_before = not_before

    def stopped(self, now: datetime) -> bool:
        with self._lock:
            return self.not_before is not None or now >= self.deadline

