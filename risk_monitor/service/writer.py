"""The hot path's writer: a status change is committed at once, and only the changed series.

Two threads, each with its own database connections (the tick loop never waits on either):

* **changes** (:meth:`AlertWriter.submit`, the ``hot-path-writer`` thread): the series whose
  status moved. One transaction
  locks just those series (alert and compliance), plans their transitions
  (``domain.alerts.plan_alerts``), writes the states and their outbox rows (claimed on insert
  for this process's dispatcher, with the reads its delivery needs: ``outbox.InsertClaim``),
  records the compliance timeline, and seals every audit entry (with the lineage context)
  from the rows in memory; right after the commit the claimed rows go to the dispatcher's
  thread (no claim transaction on the alert's way). On PostgreSQL that is two round trips of
  prepared statements, however many series (``adapters/sql/alert_change.py``: the locks and
  every read in one, every write and the COMMIT in the other); elsewhere (SQLite) the same transaction statement
  by statement. While a write runs, new changes *merge*: the
  latest status per series is the one alerted on, and every status in between is still recorded
  in the compliance timeline (one round per intermediate status). Nothing is ever dropped: a
  failed write keeps its changes pending, merged with newer ones, and is retried;
* **the periodic write** (:meth:`AlertWriter.submit_state`, the ``hot-path-periodic``
  thread), every ``persist_interval_s``: latest results, metrics and coverage
  (``persist_evaluation``, ~20 ms of CPU for 200 results, no series lock), then the compliance sighting of every
  series and the time-driven alert transitions (pending ``for``, repeat interval,
  keep-firing) of the series that are not quietly OK, in transactions of ``PERIODIC_CHUNK``
  series. The two threads own series in memory (``_series``): a chunk leaves out the series
  with a change pending or being written (that change records them, newer), and reads its
  results once it holds its series; a change of a held series waits for that one chunk,
  every other change goes on beside it. So a change never queues behind the periodic write,
  and the periodic write never writes a status older than a change already written. After a
  new limit document, every stored series is planned once, in one transaction holding every
  series (``resolve_missing``, so a removed limit resolves), and the removed limits'
  compliance intervals end (``ComplianceStore.end_removed_limits``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.engine import Connection

from risk_monitor import application
from risk_monitor.adapters.errors import map_exception
from risk_monitor.adapters.sql import OutboxDispatcher, Storage
from risk_monitor.adapters.sql.alert_store import ApplyResult
from risk_monitor.adapters.sql.audit_hooks import compliance_seal
from risk_monitor.adapters.sql.claimed_delivery import PreparedPost
from risk_monitor.adapters.sql.compliance_store import lock_names_of as compliance_lock_names
from risk_monitor.adapters.sql.compliance_store import write_step as compliance_step
from risk_monitor.adapters.sql.dispatch_policy import ClaimReads
from risk_monitor.adapters.sql.engine import is_postgres
from risk_monitor.adapters.sql.outbox import OutboxEntry
from risk_monitor.domain.alerts import AlertPlan, AlertPolicy, plan_alerts
from risk_monitor.domain.engine import RiskReport
from risk_monitor.domain.model import LimitResult, LimitStatus, Notification
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.metrics import record_error

log = get_logger(__name__)

COMMIT_SECONDS = Histogram(
    "risk_monitor_hot_path_commit_seconds",
    "Stage 'commit': decision of a status change to its alert transaction committed.",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0))
QUEUED_SECONDS = Histogram(
    "risk_monitor_hot_path_commit_queued_seconds",
    "Part of stage 'commit': decision of a status change to its transaction's start (the "
    "writer busy with earlier changes or a periodic chunk).",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))
WRITE_SECONDS = Histogram("risk_monitor_hot_path_write_seconds",
                          "Duration of the hot path's database writes by step.", ["step"],
                          buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0))
#: the change transaction's steps (means matter: the buckets are WRITE_SECONDS'); its wait
#: before them is QUEUED_SECONDS
_READ = WRITE_SECONDS.labels(step="change_read")  # BEGIN, locks, reads: the first round trip
_PLAN = WRITE_SECONDS.labels(step="change_plan")  # transitions, outbox rows, timeline
_SEAL = WRITE_SECONDS.labels(step="change_seal")  # audit entries, hashes, parameters
_WRITE = WRITE_SECONDS.labels(step="change_write")  # every write and the commit: round trip 2
WRITES_MERGED = Counter(
    "risk_monitor_hot_path_writes_merged_total",
    "Status changes superseded by a newer status of the same series before they were written "
    "(alerted on the newer one; both recorded in the compliance timeline).")
PENDING = Gauge("risk_monitor_hot_path_writer_pending_series",
                "Series with a status change waiting for the writer.")
NOTIFICATIONS = Counter("risk_monitor_hot_path_notifications_total",
                        "Notifications the hot path enqueued in the outbox, by kind.", ["kind"])

#: what a change's transaction committed: the plan, what it wrote, the rows claimed on insert
#: for this process's dispatcher, the reads their delivery needs and their post if it was
#: prepared while the commit was in flight
_Committed = tuple[AlertPlan, ApplyResult, list[OutboxEntry], ClaimReads | None,
                   PreparedPost | None]

#: pause of the writer after a failed write (the database is probably down)
WRITE_RETRY_PAUSE_S = 1.0
#: series per transaction of the periodic write's series steps (compliance sightings,
#: time-driven alerts): a change waits for one such chunk at most (a few ms), not for the
#: whole desk's (50-100 ms at 200 series under load)
PERIODIC_CHUNK = 25


@dataclass(frozen=True)
class Change:
    """One status change of one series, as decided."""

    result: LimitResult
    trigger: str  # tick, heartbeat, positions, custody, config, start
    decided_at: float  # perf_counter() when decided (commit-stage metric)
    detail: Mapping[str, Any]  # what moved it (the tick), for the alert context


@dataclass(frozen=True)
class LiveState:
    """What the periodic write persists: the last full evaluation and the current results."""

    report: RiskReport
    results: Callable[[], Sequence[LimitResult]]  # current: the per-tick evaluator's
    context: Mapping[str, Any]  # the evaluation's alert context (lineage included)


@dataclass
class WriterStats:
    transactions: int = 0
    merged: int = 0
    failures: int = 0


class AlertWriter:
    """Changed-only alert transactions plus a periodic full write (module docstring)."""

    def __init__(self, storage: Storage, *, policy: Callable[[], AlertPolicy],
                 persist_interval_s: float, wake: Callable[[], None] | None = None,
                 after_commit: Callable[[Mapping[str, Any], Sequence[Notification]], object]
                 | None = None, delivery: OutboxDispatcher | None = None,
                 durable: bool = True) -> None:
        self.storage = storage
        self._delivery = delivery  # this process's dispatcher: claim-on-insert hand-off
        self.durable = durable  # service.durable_alert_commit
        self._conn: Connection | None = None  # the change transactions' own connection
        self._policy = policy
        self.persist_interval_s = persist_interval_s
        self._wake = wake
        self._after_commit = after_commit
        self._pending: dict[str, list[Change]] = {}
        self._contexts: dict[str, Mapping[str, Any]] = {}  # fingerprint -> evaluation context
        self._state: LiveState | None = None
        self._resolve_missing = True  # first periodic write: plan every stored series
        self._cond = threading.Condition()
        self._stop = False
        self._busy = False
        self._thread: threading.Thread | None = None
        self._periodic_thread: threading.Thread | None = None
        # series ownership between the two threads (under ``_cond``): the change transaction's
        # series, and the periodic chunk's (or all of them, for a new document's write)
        self._writing: set[str] = set()
        self._claimed: set[str] = set()
        self._claim_all = False
        self.stats = WriterStats()

    # -- feeding (any thread) -------------------------------------------------------------------
    def submit(self, changes: Sequence[Change], context: Mapping[str, Any]) -> None:
        """Status changes to commit at once; merges with what is still pending."""
        if not changes:
            return
        with self._cond:
            for change in changes:
                fingerprint = change.result.fingerprint
                self._pending.setdefault(fingerprint, []).append(change)
                self._contexts[fingerprint] = context
            PENDING.set(len(self._pending))
            self._cond.notify_all()  # the writer, among the periodic thread and stop()

    def submit_state(self, state: LiveState, *, new_config: bool = False) -> None:
        """The latest evaluation for the periodic write (not written now)."""
        with self._cond:
            self._state = state
            self._resolve_missing = self._resolve_missing or new_config

    def pending(self) -> int:
        with self._cond:
            return len(self._pending) + (1 if self._busy else 0)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hot-path-writer", daemon=True)
        self._thread.start()
        self._periodic_thread = threading.Thread(target=self._periodic_run,
                                                 name="hot-path-periodic", daemon=True)
        self._periodic_thread.start()

    def stop(self, drain_s: float) -> None:
        """Write what is pending (bounded by ``drain_s``), then end the thread."""
        deadline = time.monotonic() + drain_s
        with self._cond:
            while (self._pending or self._busy) and time.monotonic() < deadline:
                self._cond.wait(timeout=0.05)
            self._stop = True
            self._cond.notify_all()
        for thread in (self._thread, self._periodic_thread):
            if thread is not None:
                thread.join(timeout=max(0.0, deadline - time.monotonic()) + 1.0)
        if self._pending:
            log.warning("hot_path_writer_not_drained", pending=len(self._pending))

    # -- the thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        """The change transactions (module docstring)."""
        while True:
            with self._cond:
                while not self._stop and not self._takeable():
                    self._cond.wait()
                if self._stop:
                    self._drop_connection()
                    return
                batch, contexts = self._take_pending()
                self._busy = True
            try:
                self._write_changes(batch, contexts)
            except Exception as exc:
                error = map_exception(exc, source="hot_path", endpoint="write")
                record_error(error)
                self._drop_connection()  # perhaps dead (database restarted): a fresh one next
                self.stats.failures += 1
                log.error("hot_path_write_failed", error_code=error.code, error=error.message,
                          retry_in_s=WRITE_RETRY_PAUSE_S)
                with self._cond:
                    for fingerprint, changes in batch.items():  # keep them, oldest first
                        self._pending[fingerprint] = changes + self._pending.get(fingerprint, [])
                    self._writing = set()
                    resume = time.monotonic() + WRITE_RETRY_PAUSE_S  # other wake-ups go on
                    while not self._stop and (left := resume - time.monotonic()) > 0:
                        self._cond.wait(timeout=left)
            finally:
                with self._cond:
                    self._busy = False
                    self._writing = set()
                    self._cond.notify_all()

    def _periodic_run(self) -> None:
        """The periodic write, every ``persist_interval_s``, beside the change transactions."""
        last = time.monotonic()
        while True:
            with self._cond:
                while not self._stop and (self._state is None or time.monotonic() - last
                                          < self.persist_interval_s):
                    wait = self.persist_interval_s - (time.monotonic() - last)
                    self._cond.wait(timeout=max(0.01, wait))
                if self._stop:
                    return
                state = self._state
            assert state is not None
            last = time.monotonic()
            try:
                self._write_periodic(state)
            except Exception as exc:  # the next interval writes a newer state
                error = map_exception(exc, source="hot_path", endpoint="periodic")
                record_error(error)
                self.stats.failures += 1
                log.error("hot_path_periodic_write_failed", error_code=error.code,
                          error=error.message, retry_in_s=self.persist_interval_s)

    def _takeable(self) -> bool:
        """A pending change whose series no periodic chunk holds (under ``_cond``)."""
        return not self._claim_all and any(f not in self._claimed for f in self._pending)

    def _take_pending(self) -> tuple[dict[str, list[Change]], dict[str, Mapping[str, Any]]]:
        """The pending changes of series no periodic chunk holds, and their contexts, for a
        write (under ``_cond``): their series are the writer's until it is done."""
        batch = {f: c for f, c in self._pending.items() if f not in self._claimed}
        for fingerprint in batch:
            del self._pending[fingerprint]
        self._writing = set(batch)
        PENDING.set(len(self._pending))
        now = time.perf_counter()
        for changes in batch.values():
            QUEUED_SECONDS.observe(now - changes[-1].decided_at)
        return batch, {f: self._contexts[f] for f in batch}

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _write_changes(self, batch: Mapping[str, list[Change]],
                       contexts: Mapping[str, Mapping[str, Any]]) -> None:
        started = time.perf_counter()
        latest = [changes[-1] for changes in batch.values()]
        merged = sum(len(changes) - 1 for changes in batch.values())
        if merged:
            WRITES_MERGED.inc(merged)
            self.stats.merged += merged
        results = [c.result for c in latest]
        now = max(r.as_of for r in results)
        first = latest[0]
        context = {**contexts[first.result.fingerprint], "trigger": first.trigger,
                   "triggers": sorted({c.trigger for c in latest}),
                   "evaluated_at": now.isoformat(), **first.detail}
        rounds = max(len(changes) for changes in batch.values())
        policy = replace(self._policy(), resolve_missing=False)  # a partial update
        steps = [[changes[i].result for changes in batch.values() if i < len(changes)]
                 for i in range(rounds)]  # every intermediate status joins the timeline
        if self._conn is None:  # held by this thread: no pool checkout + ping per change
            self._conn = self.storage.engine.connect()
        commit = self._commit_pg if is_postgres(self._conn) else self._commit_generic
        plan, applied, claimed, reads, prepared = commit(list(batch), results, steps, policy,
                                                         context, now)
        done = time.perf_counter()
        delivery = self._delivery
        if claimed and delivery is not None and reads is not None:
            delivery.deliver_claimed(claimed, reads, prepared)  # first thing after the commit
        for change in latest:
            COMMIT_SECONDS.observe(done - change.decided_at)
        WRITE_SECONDS.labels(step="changes").observe(done - started)
        self.stats.transactions += 1
        notes = plan.notifications
        if notes:
            if self._wake is not None and applied.enqueued > len(claimed):
                self._wake()  # rows behind an unfinished one of their series: a claim round
            if self._after_commit is not None:
                self._after_commit(context, notes)
            for note in notes:
                NOTIFICATIONS.labels(kind=note.kind.value).inc()
            log.info("hot_path_alerts_raised", trigger=first.trigger, enqueued=applied.enqueued,
                     notifications=[f"{n.kind.value}:{n.limit_id}:{n.scope}:{n.status.value}"
                                    for n in notes[:20]])

    def _commit_pg(self, fingerprints: list[str], results: list[LimitResult],
                   steps: list[list[LimitResult]], policy: AlertPolicy,
                   context: dict[str, Any], now: datetime) -> _Committed:
        """The change in two round trips (``adapters/sql/alert_change.py``): the locks and
        every read in one, every write, the audit seals and the commit in the other. While
        the second is in flight, the post of the rows it claims is prepared (rendered, its
        request built: ``OutboxDispatcher.prepare_claimed``); it goes out only once the
        commit succeeded, and is dropped if it failed."""
        delivery = self._delivery
        assert self._conn is not None
        claimed: list[OutboxEntry] = []
        reads: ClaimReads | None = None
        prepared: PreparedPost | None = None

        def prepare() -> None:  # right before the write is sent: its wait is the post's CPU
            nonlocal prepared
            if claimed and reads is not None and delivery is not None:
                prepared = delivery.prepare_claimed(claimed, reads)

        opened = time.perf_counter()
        try:
            with self.storage.alerts.change(
                    fingerprints, results=[r for step in steps for r in step],
                    new_intervals=sum(len(step) for step in steps),
                    new_notifications=len(fingerprints),  # plan_alerts: one at most per series
                    connection=self._conn,
                    durable=self.durable,
                    reads_at=delivery.clock() if delivery is not None else None) as tx:
                read = time.perf_counter()
                before = dict(tx.states)
                plan = plan_alerts(tx.states, results, now, policy, context=context)
                claim = delivery.claim_on_insert({n.fingerprint for n in plan.notifications},
                                                 busy=tx.reads.busy) \
                    if delivery is not None and plan.notifications else None
                applied = tx.apply(plan.states, plan.notifications, claim=claim)
                intervals = tx.compliance(steps)  # planned in memory, written by the seal
                claimed = claim.entries(tx.enqueued_rows) if claim is not None else []
                series = {e.fingerprint for e in claimed}
                reads = ClaimReads(silences=tx.reads.silences,
                                   acks=[a for a in tx.reads.acks if a.fingerprint in series],
                                   roots=tx.reads.roots) if claimed else None
                planned = time.perf_counter()
                tx.seal(before=before, states=plan.states, notifications=plan.notifications,
                        context=context, at=now,
                        extra=[compliance_seal(row) for row in intervals], before_write=prepare)
                sealed = time.perf_counter()
        except BaseException:
            if prepared is not None:  # not committed: the prepared post must not go out
                prepared.abort()
            raise
        _READ.observe(read - opened)
        _PLAN.observe(planned - read)
        _SEAL.observe(sealed - planned - tx.write_seconds)
        _WRITE.observe(tx.write_seconds)
        return plan, applied, claimed, reads, prepared

    def _commit_generic(self, fingerprints: list[str], results: list[LimitResult],
                        steps: list[list[LimitResult]], policy: AlertPolicy,
                        context: dict[str, Any], now: datetime) -> _Committed:
        """The change on other backends (SQLite): the same transaction, statement by
        statement. The compliance series are locked with the alert series, in one ordered
        call; the chain lock is taken last, by the seal."""
        delivery = self._delivery
        claimed: list[OutboxEntry] = []
        reads: ClaimReads | None = None
        with self.storage.alerts.locked(fingerprints, also_lock=compliance_lock_names(results),
                                        durable=self.durable, connection=self._conn) as tx:
            before = dict(tx.states)
            plan = plan_alerts(tx.states, results, now, policy, context=context)
            claim = delivery.insert_claim(tx.connection, {n.fingerprint for n in
                                                          plan.notifications}) \
                if delivery is not None and plan.notifications else None
            applied = tx.apply(plan.states, plan.notifications, claim=claim)
            intervals: list[dict[str, Any]] = []
            for step in steps:
                intervals += compliance_step(tx.connection, step)[1]
            if claim is not None and delivery is not None:
                claimed = claim.entries(tx.enqueued_rows)
                reads = delivery.claim_reads(tx.connection, claimed) if claimed else None
            tx.seal(before=before, states=plan.states, notifications=plan.notifications,
                    context=context, at=now,
                    extra=[compliance_seal(row) for row in intervals])
        return plan, applied, claimed, reads, None

    @contextlib.contextmanager
    def _series(self, fingerprints: Sequence[str] | None) -> Iterator[list[str]]:
        """Hold series for one periodic transaction: those of ``fingerprints`` with no change
        pending or being written (their change records them, newer), or every series
        (``None``: a new document's write, after the change in flight). A change of a held
        series waits for this one transaction (its results are read after the hold: never
        older than a change already written)."""
        with self._cond:
            if fingerprints is None:
                while self._writing and not self._stop:
                    self._cond.wait()
                self._claim_all = True
                held: list[str] = []
            else:
                held = [f for f in fingerprints
                        if f not in self._pending and f not in self._writing]
                self._claimed = set(held)
        try:
            yield held
        finally:
            with self._cond:
                self._claimed = set()
                self._claim_all = False
                self._cond.notify_all()

    def _write_periodic(self, state: LiveState) -> None:
        """Results, metrics and coverage (no series lock), then compliance sightings and
        time-driven transitions in chunks of ``PERIODIC_CHUNK`` series."""
        report, results = state.report, list(state.results())
        as_of = max((r.as_of for r in results), default=report.summary.as_of)
        started = time.perf_counter()
        application.persist_evaluation(self.storage, state=report.state,
                                     exposures=report.exposures, results=results, as_of=as_of)
        WRITE_SECONDS.labels(step="persist").observe(time.perf_counter() - started)
        fingerprints = [r.fingerprint for r in results]
        for start in range(0, len(fingerprints), PERIODIC_CHUNK):
            with self._series(fingerprints[start:start + PERIODIC_CHUNK]) as held:
                chunk = self._current(state, held)
                if chunk:
                    started = time.perf_counter()
                    application.record_compliance(self.storage, chunk)
                    WRITE_SECONDS.labels(step="compliance").observe(
                        time.perf_counter() - started)
        with self._cond:  # a newer state (document) arrived meanwhile: its own write resolves
            resolve_missing = self._resolve_missing and self._state is state
            self._resolve_missing = self._resolve_missing and not resolve_missing
        if resolve_missing:  # a new document: every stored series planned at once
            with self._series(None):
                results = list(state.results())
                as_of = max((r.as_of for r in results), default=as_of)
                # the limits it dropped end their intervals, and their series resolve
                self.storage.compliance.end_removed_limits(
                    results, at=as_of, config_version=report.config_version)
                self._raise_periodic(state, results, as_of, resolve_missing=True)
            return
        stored = {s.fingerprint: s for s in self.storage.alerts.all_states()}
        due = [r.fingerprint for r in state.results() if r.status is not LimitStatus.OK or (
            (s := stored.get(r.fingerprint)) is not None
            and (s.status is not LimitStatus.OK or s.clearing_since is not None
                 or s.started_at is not None))]  # only series that can move with time alone
        for start in range(0, len(due), PERIODIC_CHUNK):
            with self._series(due[start:start + PERIODIC_CHUNK]) as held:
                chunk = self._current(state, held)
                if chunk:
                    self._raise_periodic(state, chunk, as_of, resolve_missing=False)

    @staticmethod
    def _current(state: LiveState, fingerprints: Sequence[str]) -> list[LimitResult]:
        """The current results of ``fingerprints`` (read once the series are held)."""
        wanted = set(fingerprints)
        return [r for r in state.results() if r.fingerprint in wanted]

    def _raise_periodic(self, state: LiveState, results: list[LimitResult], as_of: datetime,
                        *, resolve_missing: bool) -> None:
        """One transaction of time-driven transitions (``application.raise_alerts``)."""
        started = time.perf_counter()
        as_of = max([as_of, *(r.as_of for r in results)])
        context = {**state.context, "trigger": "periodic", "triggers": ["periodic"],
                   "evaluated_at": as_of.isoformat()}
        raised = application.raise_alerts(
            self.storage, results, now=as_of,
            policy=replace(self._policy(), resolve_missing=resolve_missing), context=context)
        WRITE_SECONDS.labels(step="alerts").observe(time.perf_counter() - started)
        if raised.plan.notifications:
            if self._wake is not None:
                self._wake()
            if self._after_commit is not None:
                self._after_commit(context, raised.plan.notifications)
            for note in raised.plan.notifications:
                NOTIFICATIONS.labels(kind=note.kind.value).inc()
