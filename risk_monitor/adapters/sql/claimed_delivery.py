"""Delivery of the rows this process claimed on insert (``outbox.InsertClaim``), with no claim
round: the :class:`~risk_monitor.adapters.sql.dispatcher.OutboxDispatcher`'s fast path.

Rows claimed on insert are posted by the committing thread itself when that is safe and cheap
(:meth:`ClaimedOnInsertDelivery.deliver_claimed`): no hand-off to the dispatcher's thread, whose
wake-up waits for the interpreter lock behind the service's other threads. Better still, their
post is prepared while the commit is in flight (:meth:`ClaimedOnInsertDelivery.prepare_claimed`):
the post-ahead thread renders it and builds its request, whose bytes wait at a gate that the
committing thread opens after the commit (it sends them itself) or aborts. Otherwise they are
handed over to the dispatcher's thread. Either way the delivery records are written after the
posts, by the recorder thread while the dispatcher runs."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from risk_monitor.adapters.errors import map_exception
from risk_monitor.adapters.sql import codec
from risk_monitor.adapters.sql.dispatch_metrics import (
    HANDED_OFF,
    HANDOFF_STEP,
    POSTED_AHEAD,
    POSTED_INLINE,
)
from risk_monitor.adapters.sql.dispatch_policy import (
    ClaimReads,
    DispatchResult,
    GatesPosts,
    InlinePosts,
    PostAborted,
    SendGate,
)
from risk_monitor.adapters.sql.outbox import SOURCE, OutboxEntry
from risk_monitor.domain.silences import verdict
from risk_monitor.platform.errors import RiskMonitorError
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.metrics import record_error
from risk_monitor.ports import Notifier

log = get_logger(__name__)

#: posts of rows claimed on insert that may go out before their delivery records are written
RECORDS_HELD_S = 1.0


@dataclass
class PreparedPost:
    """A post prepared before its commit (:meth:`OutboxDispatcher.prepare_claimed`): pass it
    to ``deliver_claimed`` after the commit, or call :meth:`abort` if the commit failed."""

    gate: SendGate
    done: threading.Event = field(default_factory=threading.Event)

    def abort(self) -> None:
        """The transaction did not commit: nothing is sent (the prepared request is dropped)."""
        self.gate.abort()


class ClaimedOnInsertDelivery:
    """The claimed-on-insert posts of an outbox dispatcher (its base class): prepared ahead of
    the commit, posted inline by the committing thread, or handed over to the dispatcher's
    thread; and the recorder thread that writes their delivery records."""

    # the dispatcher's, which this part reads (set by OutboxDispatcher.__init__)
    clock: codec.Clock
    notifier: Notifier
    max_workers: int
    notifier_error: RiskMonitorError | None
    inline: InlinePosts
    _wake: threading.Event

    def __init__(self) -> None:
        #: claimed on insert, with when they were handed over (perf_counter)
        self._direct: list[tuple[list[OutboxEntry], ClaimReads, float]] = []
        self._direct_lock = threading.Lock()
        #: held while a thread delivers: the committing thread posts only when it gets it
        self._sending = threading.Lock()
        self._ahead: ThreadPoolExecutor | None = None  # the post-ahead thread
        self._ahead_gate = threading.local()  # .gate: the post-ahead thread's current gate
        #: delivery records of posts, for the recorder thread while ``run`` runs
        self._records: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._recorder: threading.Thread | None = None

    def _deliver_entries(self, entries: list[OutboxEntry], reads: ClaimReads,
                         records: list[Callable[[], None]] | None = None) -> DispatchResult:
        """Deliver claimed rows (the dispatcher's rules, see ``OutboxDispatcher``)."""
        raise NotImplementedError

    def prepare_claimed(self, entries: list[OutboxEntry], reads: ClaimReads
                        ) -> PreparedPost | None:
        """Before the commit of the transaction that claimed ``entries`` on insert (with
        ``reads``, its ``claim_reads``): their post is rendered and its request built on the
        post-ahead thread while the commit is in flight, its bytes held at a gate
        (``SendGate``). Pass the result to :meth:`deliver_claimed` after the commit, or
        :meth:`PreparedPost.abort` it. None: post after the commit as before; that is when the
        committing thread may not post (:meth:`_post_inline`), the notifier cannot hold a post
        at a gate, or a silence or an acknowledgement holds a row back (its record must wait
        for the commit)."""
        if not entries or not isinstance(self.notifier, GatesPosts) \
                or any(e.attempts > 1 for e in entries) \
                or (self.max_workers > 1 and len({e.fingerprint for e in entries}) > 1):
            return None
        now = self.clock()
        if (reads.silences or reads.acks) and not all(
                verdict(e.notification, reads.silences, reads.acks, now).send for e in entries):
            return None
        bound = self.inline.bound(self.notifier, healthy=self.notifier_error is None)
        if bound is None or not self._sending.acquire(blocking=False):
            return None
        handed = False
        try:
            with self._direct_lock:
                waiting = bool(self._direct)
            gate = SendGate()
            gated = self.notifier.gated(gate)
            if waiting or self._recorder is None or gated is None:
                return None
            if self._ahead is None:
                self._ahead = ThreadPoolExecutor(1, thread_name_prefix="outbox-post-ahead")
            prepared = PreparedPost(gate)
            self._ahead.submit(self._post_ahead, entries, reads, bound, gated, prepared)
            handed = True  # the post-ahead thread releases the delivering lock
            return prepared
        finally:
            if not handed:
                self._sending.release()

    def _post_ahead(self, entries: list[OutboxEntry], reads: ClaimReads,
                    bound: AbstractContextManager[None], gated: AbstractContextManager[None],
                    prepared: PreparedPost) -> None:
        """The post-ahead thread's delivery of a prepared post: as :meth:`_post_inline`, its
        request's bytes held at the gate until the commit (dropped if it fails)."""
        records: list[Callable[[], None]] = []
        self._ahead_gate.gate = prepared.gate
        try:
            with bound, gated:
                self._deliver_entries(entries, reads, records)
        except PostAborted:  # not committed: nothing was sent, nothing to record
            records = []
        except Exception as exc:  # the database is down: the rows' lease runs out, a
            error = map_exception(exc, source=SOURCE)  # claim round retries them
            record_error(error)
            log.error("outbox delivery failed", error_code=error.code, error=str(error))
        finally:
            self._ahead_gate.gate = None
            try:
                self._queue_records(records)
            finally:
                self._sending.release()
                prepared.done.set()

    def deliver_claimed(self, entries: list[OutboxEntry], reads: ClaimReads,
                        prepared: PreparedPost | None = None) -> None:
        """Rows another transaction of this process claimed on insert (``InsertClaim``),
        with its ``claim_reads``, delivered with no claim round. Call after that transaction
        committed, on its thread: a ``prepared`` post (:meth:`prepare_claimed`) is sent from
        here at once and its answer awaited; otherwise the rows are posted right there
        (:meth:`_post_inline`) or handed to the dispatcher's thread, which posts them next."""
        if prepared is not None:
            prepared.gate.open()
            prepared.done.wait()
            POSTED_AHEAD.inc()
            return
        if not entries:
            return
        if self._post_inline(entries, reads):
            POSTED_INLINE.inc()
            return
        with self._direct_lock:
            self._direct.append((entries, reads, time.perf_counter()))
        self._wake.set()
        HANDED_OFF.inc()

    def _post_inline(self, entries: list[OutboxEntry], reads: ClaimReads) -> bool:
        """Post on the calling (committing) thread, exactly as the dispatcher's thread would
        (a failed attempt is rescheduled with backoff, its retry adopts a post Slack accepted;
        the records go to the recorder thread), when the dispatcher runs, no thread is
        delivering and nothing handed over waits: per-series order holds. False: not
        posted, hand it over."""
        if self.max_workers > 1 and len({e.fingerprint for e in entries}) > 1:
            return False  # the pool's threads would post without this thread's cap
        bound = self.inline.bound(self.notifier, healthy=self.notifier_error is None)
        if bound is None or not self._sending.acquire(blocking=False):
            return False
        try:
            with self._direct_lock:
                waiting = bool(self._direct)
            if waiting or self._recorder is None:
                return False
            records: list[Callable[[], None]] = []
            try:
                with bound:
                    self._deliver_entries(entries, reads, records)
            except Exception as exc:  # the database is down: the rows' lease runs out, a
                error = map_exception(exc, source=SOURCE)  # claim round retries them
                record_error(error)
                log.error("outbox delivery failed", error_code=error.code, error=str(error))
            self._queue_records(records)
            return True
        finally:
            self._sending.release()

    def _queue_records(self, records: list[Callable[[], None]]) -> None:
        """To the recorder thread while :meth:`run` runs, else written here."""
        for record in records:
            if self._recorder is not None:
                self._records.put(record)
            else:
                _write(record)

    def _deliver_direct(self) -> DispatchResult:
        """:meth:`_deliver_handed_over`, holding the delivering thread's lock."""
        with self._sending:
            return self._deliver_handed_over()

    def _deliver_handed_over(self) -> DispatchResult:
        """Post every row handed over (also those handed over meanwhile), then write their
        delivery records (on the recorder thread while :meth:`run` runs): a record never holds
        back the post of the next alert. At most ``RECORDS_HELD_S`` of posts go out first,
        well inside the rows' lease."""
        result = DispatchResult()
        records: list[Callable[[], None]] = []
        first = time.monotonic()
        while time.monotonic() - first < RECORDS_HELD_S:
            with self._direct_lock:
                batches, self._direct = self._direct, []
            if not batches:
                break
            taken = time.perf_counter()
            for _, _, handed in batches:
                HANDOFF_STEP.observe(taken - handed)
            for entries, reads, _ in batches:
                done = self._deliver_entries(entries, reads, records)
                for name in ("sent", "retried", "failed", "deferred", "suppressed"):
                    setattr(result, name, getattr(result, name) + getattr(done, name))
        self._queue_records(records)
        return result

    def _start_recorder(self) -> None:
        """The recorder thread, for the dispatcher's ``run``: from now on records queue."""
        self._recorder = threading.Thread(target=self._record_until_stopped, daemon=True,
                                          name="outbox-recorder")
        self._recorder.start()

    def _stop_recorder(self) -> None:
        """End of ``run``: the queued records are written, then the threads stop."""
        with self._sending:  # a post on a committing thread queues its records first
            self._records.put(None)
            recorder, self._recorder = self._recorder, None
        if recorder is not None:
            recorder.join()
        if self._ahead is not None:
            self._ahead.shutdown(wait=False)
        self._ahead = None

    def _record_until_stopped(self) -> None:
        """The recorder thread: writes the delivery records :meth:`_deliver_direct` queued."""
        while (record := self._records.get()) is not None:
            _write(record)
            self._records.task_done()
        self._records.task_done()


def _write(record: Callable[[], None]) -> None:
    """Write one delivery record; a failure (database down) leaves the others to write."""
    try:
        record()
    except Exception as exc:
        error = map_exception(exc, source=SOURCE)
        record_error(error)
        log.error("delivery record not written", error_code=error.code, error=str(error))
