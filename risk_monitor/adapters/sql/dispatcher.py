"""The outbox dispatcher: claims due notifications, delivers them through a notifier, records
the outcome (see :mod:`risk_monitor.adapters.sql.outbox` for the delivery rules).

Rows claimed on insert skip the claim round: their posts (ahead of the commit, inline on the
committing thread, or handed over to this dispatcher's thread) are in
:mod:`risk_monitor.adapters.sql.claimed_delivery`, the dispatcher's base class."""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection, Engine

from risk_monitor.adapters.errors import map_exception
from risk_monitor.adapters.sql import codec
from risk_monitor.adapters.sql.alert_controls import SqlAlertControls
from risk_monitor.adapters.sql.claimed_delivery import ClaimedOnInsertDelivery
from risk_monitor.adapters.sql.dispatch_metrics import NOTIFIER_UP, RECORD_STEP, SEND_STEP
from risk_monitor.adapters.sql.dispatch_policy import (
    INLINE_TIMEOUT_S,
    BackoffPolicy,
    BatchStop,
    ClaimReads,
    DispatchResult,
    FindsEarlierPosts,
    InlinePosts,
    PostsThreadNotes,
    SendGate,
    held_by_text,
    server_retry_after,
)
from risk_monitor.adapters.sql.outbox import SOURCE, InsertClaim, OutboxEntry, OutboxRepository
from risk_monitor.adapters.sql.thread_notes import post_thread_notes
from risk_monitor.domain.model import Notification
from risk_monitor.domain.silences import Acknowledgement, Silence, verdict
from risk_monitor.platform.errors import (
    NotificationRejectedError,
    NotifierConfigError,
    RiskMonitorError,
)
from risk_monitor.platform.logging import get_logger, log_context
from risk_monitor.platform.metrics import record_error
from risk_monitor.ports import Notifier

log = get_logger(__name__)
#: what other modules import from here (most now defined in dispatch_policy / dispatch_metrics)
__all__ = ["NOTIFIER_UP", "BackoffPolicy", "ClaimReads", "DispatchResult", "FindsEarlierPosts",
           "OutboxDispatcher", "PostsThreadNotes"]


class OutboxDispatcher(ClaimedOnInsertDelivery):
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
        inline_timeout_s: float | None = INLINE_TIMEOUT_S,
    ) -> None:
        self.repository = OutboxRepository(engine)
        self.controls = SqlAlertControls(engine, clock=clock)
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
        self._claim_due = True  # a claim round is wanted (woken, or the poll interval passed)
        super().__init__()  # the claimed-on-insert posts' state
        #: when the committing thread may post (None timeout: never)
        self.inline = InlinePosts(inline_timeout_s)
        self._pool: ThreadPoolExecutor | None = None  # series delivered in parallel
        self._health_lock = threading.Lock()
        self.notifier_error: RiskMonitorError | None = None  # set while it refuses our config
        #: called with each notification the notifier delivered and its ref (lineage links)
        self.on_delivered: list[Callable[[Notification, str], None]] = []
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

    def delivery_status(self, overdue_s: float) -> tuple[bool, str, dict[str, Any]]:
        """For /readyz: ok unless alerts are overdue for delivery or the notifier is down."""
        now = self.clock()
        backlog = self.repository.overdue(now, overdue_s)
        error = self.notifier_error
        data: dict[str, Any] = {
            "overdue": backlog.overdue, "overdue_after_s": overdue_s,
            "oldest_overdue_age_s": round(backlog.age_s(now), 3),
            "oldest_overdue_key": backlog.oldest_key, "notifier": self.notifier_name,
            "notifier_up": error is None,
            "notifier_error_code": error.code if error is not None else None,
        }
        problems = []
        if backlog.overdue:
            problems.append(f"{backlog.overdue} alert(s) overdue for delivery (oldest "
                            f"{backlog.age_s(now):.0f}s)")
        if error is not None:
            problems.append(f"{self.notifier_name} refuses our configuration ({error.code}: "
                            f"{error.details.get('slack_error') or error.message})")
        return not problems, "; ".join(problems) or "delivering", data

    def wake(self) -> None:
        """Claim due rows now (call after enqueuing, or after setting the stop event)."""
        self._claim_due = True
        self._wake.set()

    def dispatch_once(self, batch: int = 100) -> DispatchResult:
        """Claim due rows and deliver them; returns what happened to each claimed row. The
        acknowledgement notes go after the deliveries: reading them never delays an alert."""
        result = self._deliver_due(batch)
        self._note_acknowledgements()
        return result

    def claim_reads(self, conn: Connection, claimed: list[OutboxEntry]) -> ClaimReads:
        """What a delivery of ``claimed`` needs, read in the claiming transaction: active
        silences, acknowledgements and thread roots (one transaction before the send)."""
        return ClaimReads(silences=self.controls.silences(active_at=self.clock(), conn=conn),
                          acks=self.controls.acknowledgements(
                              {e.fingerprint for e in claimed}, conn=conn),
                          roots=self.repository.thread_roots(claimed, conn=conn))

    def insert_claim(self, conn: Connection, fingerprints: Iterable[str]) -> InsertClaim:
        """A claim-on-insert for new rows of ``fingerprints`` (caller holds their locks)."""
        return InsertClaim.open(conn, fingerprints, self.clock(), self.lease_s)

    def claim_on_insert(self, fingerprints: Iterable[str], *, busy: Iterable[str]
                        ) -> InsertClaim:
        """:meth:`insert_claim` when the caller read the ``busy`` series itself (under their
        locks: ``alert_change.py``)."""
        return InsertClaim.of(fingerprints, busy, self.clock(), self.lease_s)

    def _deliver_due(self, batch: int) -> DispatchResult:
        """A claim round and its deliveries, holding the delivering thread's lock."""
        with self._sending:
            return self._claim_and_deliver(batch)

    def _claim_and_deliver(self, batch: int) -> DispatchResult:
        found: list[ClaimReads] = []
        entries = self.repository.claim(batch, self.clock(), self.lease_s,
                                        reads=lambda conn, claimed: found.append(
                                            self.claim_reads(conn, claimed)))
        if not entries:
            return DispatchResult()
        return self._deliver_entries(entries, found[0])

    def _deliver_entries(self, entries: list[OutboxEntry], reads: ClaimReads,
                         records: list[Callable[[], None]] | None = None) -> DispatchResult:
        """Deliver claimed rows: held back by silences and acks, else sent series by series;
        with ``records``, the delivery records of the sent ones are left there to write."""
        result = DispatchResult()
        entries = self._hold_back(entries, result, reads.silences, reads.acks)
        if not entries:
            return result
        roots = dict(reads.roots)
        series: dict[str, list[OutboxEntry]] = defaultdict(list)
        for entry in entries:
            series[entry.fingerprint].append(entry)
        stop = BatchStop(deadline=self.clock() + timedelta(seconds=self.lease_s / 2))
        lock = threading.Lock()

        def release(items: list[OutboxEntry]) -> int:
            error = self.notifier_error
            if error is not None:  # the notifier refuses us: the fallback sink gets them now
                for item in items:
                    self._to_fallback(item, error)
            return self.repository.release(items, stop.not_before)

        def run_series(items: list[OutboxEntry]) -> None:
            for index, entry in enumerate(items):
                if stop.stopped(self.clock()):
                    released = release(items[index:])
                    with lock:
                        result.deferred += released
                    return
                outcome = self._deliver(entry, roots, lock, stop, records)
                with lock:
                    setattr(result, outcome, getattr(result, outcome) + 1)
                if outcome == "retried":  # later rows of the series must wait for it
                    released = release(items[index + 1:])
                    with lock:
                        result.deferred += released
                    return

        groups = list(series.values())
        if self.max_workers == 1 or len(groups) == 1:
            for items in groups:
                run_series(items)
        else:
            if self._pool is None:  # kept: a pool per batch started its threads every time
                self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="outbox")
            for future in [self._pool.submit(run_series, items) for items in groups]:
                future.result()
        return result

    def _note_acknowledgements(self) -> None:
        """The thread notes of acknowledgements and silences (:func:`post_thread_notes`),
        while the notifier accepts our configuration."""
        if isinstance(self.notifier, PostsThreadNotes) and self.notifier_error is None:
            post_thread_notes(self.controls, self.notifier, self.notifier_name, self.clock)

    def _hold_back(self, entries: list[OutboxEntry], result: DispatchResult,
                   silences: list[Silence], acks: list[Acknowledgement]) -> list[OutboxEntry]:
        """Record as suppressed the rows a silence or an acknowledgement holds; the rest go on.
        ``silences`` and ``acks`` are read when the rows are claimed for delivery, so a
        silence added while a row waits still holds it."""
        now = self.clock()
        if not silences and not acks:
            return entries
        kept: list[OutboxEntry] = []
        for entry in entries:
            found = verdict(entry.notification, silences, acks, now)
            if found.send:
                kept.append(entry)
                continue
            held_by = held_by_text(found)
            n = entry.notification
            if self.repository.mark_suppressed(entry, now, held_by, {
                    "idempotency_key": n.idempotency_key, "fingerprint": n.fingerprint,
                    "episode": n.episode, "kind": n.kind.value, "status": n.status.value,
                    "severity": n.severity.value, "limit_id": n.limit_id, "scope": n.scope,
                    "held_by": held_by}):
                result.suppressed += 1
                log.info("alert notification held back", idempotency_key=n.idempotency_key,
                         correlation_id=n.correlation_id, kind=n.kind.value,
                         status=n.status.value, held_by=held_by)
        return kept

    def _deliver(self, entry: OutboxEntry, roots: dict[tuple[str, int], str],
                 lock: threading.Lock, stop: BatchStop,
                 records: list[Callable[[], None]] | None = None) -> str:
        n = entry.notification
        key = (entry.fingerprint, entry.episode)
        with lock:
            previous_ref = roots.get(key)
        with log_context(correlation_id=n.correlation_id, fingerprint=n.fingerprint):
            try:
                ref = self._earlier_post(entry, previous_ref)
                if ref is None:
                    started = time.perf_counter()
                    ref = self.notifier.send(n, previous_ref)
                    gate: SendGate | None = getattr(self._ahead_gate, "gate", None)
                    if gate is not None:  # prepared ahead: the post from its gate's opening
                        started = max(started, gate.opened_at)
                    took = time.perf_counter() - started
                    SEND_STEP.observe(took)
                    self.inline.sent(took)
            except Exception as exc:
                error = map_exception(exc, source=self.notifier_name)
                return self._failed_attempt(entry, error, stop)
            self._set_notifier_health(None)
            now = self.clock()
            if previous_ref is None:
                with lock:
                    roots[key] = ref
            sent = (entry, ref, now, previous_ref is None)
            if records is None:
                self._record_sent(*sent)
            else:
                with lock:
                    records.append(lambda: self._record_sent(*sent))
            return "sent"

    def _record_sent(self, entry: OutboxEntry, ref: str, now: datetime,
                     thread_root: bool) -> None:
        """The delivery record of a post (and its hooks): written after the post. Unwritten
        (database down), the row's lease runs out and its retry adopts the post (find_sent)."""
        n = entry.notification
        with log_context(correlation_id=n.correlation_id, fingerprint=n.fingerprint):
            started = time.perf_counter()
            if not self.repository.mark_sent(entry, ref, now, thread_root=thread_root):
                log.warning("outbox lease lost before marking sent; it may be sent again",
                            idempotency_key=n.idempotency_key)
            RECORD_STEP.observe(time.perf_counter() - started)
            log.info("alert notification sent", idempotency_key=n.idempotency_key,
                     kind=n.kind.value, status=n.status.value, severity=n.severity.value,
                     limit_id=n.limit_id, scope=n.scope, delivery_ref=ref,
                     attempts=entry.attempts)
            for hook in self.on_delivered:
                try:
                    hook(n, ref)
                except Exception as exc:  # a hook never fails a delivery
                    log.warning("on_delivered hook failed", error=str(exc),
                                error_class=type(exc).__name__)

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
                        stop: BatchStop) -> str:
        n = entry.notification
        record_error(error)
        self.inline.failed()
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
        retry_after = server_retry_after(error)
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
        self._start_recorder()
        while True:
            try:
                self._deliver_direct()  # claimed on insert: first, and no claim round
                if stop_event.is_set():
                    break
                if not self._claim_due:
                    result = DispatchResult()
                else:
                    self._claim_due = False
                    # the rows posted are recorded first: a claim round sees them sent (a
                    # later row of their series is claimable only then)
                    self._records.join()
                    result = self._deliver_due(batch)
                    self._deliver_direct()  # handed over meanwhile: before the notes' reads
                    self._note_acknowledgements()
            except Exception as exc:  # the loop must survive a database outage
                error = map_exception(exc, source=SOURCE)
                record_error(error)
                log.error("outbox dispatch failed", error_code=error.code, error=str(error))
                result = DispatchResult()
            if result.sent and result.claimed >= batch:
                self._claim_due = True
                continue  # a full batch went out: more is probably due
            if not self._wake.wait(poll_interval_s):
                self._claim_due = True  # the poll: rows of other writers, retries, leases
            self._wake.clear()
        self._stop_recorder()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        self._pool = None
        self.repository.close()
        log.info("outbox dispatcher stopped", notifier=self.notifier_name)
