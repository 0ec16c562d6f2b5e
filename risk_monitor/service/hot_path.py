"""The service's hot path: live quotes + polled positions → evaluation on every change → alerts.

DESIGN.md "Two data paths, one truth", the service half. The Dagster runs give lineage but answer
in seconds (sensor loop + run launch); this answers in milliseconds with the *same* use cases
(``risk_monitor.workflows``) and the same domain engine, writing to the same alert store:

* **quotes** arrive from the market stream's listener (or, with ``service.stream: false``, from
  the Redis quote streams the ``risk-monitor stream`` feeders write). Each tick is an O(1) dict
  update in :class:`QuoteBook` plus a "something changed" flag: nothing else runs on the tick;
* **positions and exchange balances** are polled every ``service.positions_poll_s``, custodian
  balances every ``service.custody_poll_s``, with the collection functions the Dagster assets
  use, in worker threads (ccxt's sync clients block). Their coverage (``Collected.sources``)
  travels with them, so a failed venue is UNKNOWN, never zero;
* **evaluation** runs off the loop in one worker thread, at most once per
  ``service.evaluate_min_interval_s`` while something changed (ticks are coalesced, never
  queued), and at least every ``2 * positions_poll_s`` even when nothing arrives, so a stuck
  poller still shows up as stale data. The report goes to the live state
  (``InMemoryRiskState``), so ``CheckOrder`` / ``GetRiskStatus`` / ``ListLimitStatus`` answer from
  it at once;
* **writes** go through a queue to one writer task (its own thread): on a status change
  ``workflows.raise_alerts`` (the store's lock makes the Dagster run and this path agree: one
  notification per transition) then ``dispatcher.wake()`` so Slack gets it at once, then the
  latest results, metrics and compliance timeline; without a change only every
  ``service.persist_interval_s``.

Start-up: evaluation waits (at most ``service.hot_path_warmup_s``) for the first poll of every
source and a quote for every configured instrument, so a restart does not page "UNKNOWN" while
data is still on its way; what is still missing after that is UNKNOWN, as it should be.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import pandas as pd
from prometheus_client import Counter, Gauge, Histogram

from risk_monitor import application as workflows
from risk_monitor.adapters.collection import (
    collect_custodian_balances,
    collect_exchange_balances,
    collect_positions,
)
from risk_monitor.adapters.errors import map_exception
from risk_monitor.adapters.market_data import quote_policy, symbols_by_venue
from risk_monitor.adapters.redis_quotes import QuoteListener, follow_quote_streams
from risk_monitor.adapters.sql import EquityPoint, EquityStore, Storage
from risk_monitor.domain.alerts import warmup_grace_s, with_limit_rules
from risk_monitor.domain.engine import RiskReport
from risk_monitor.domain.model import (
    BALANCE_COLUMNS,
    POSITION_COLUMNS,
    Collected,
    LimitStatus,
    SourceKind,
    SourceStatus,
    empty_frame,
)
from risk_monitor.domain.quotes import quotes_from_rows
from risk_monitor.lineage import HotPathLineage
from risk_monitor.platform.code_version import code_version
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.metrics import record_error
from risk_monitor.platform.settings import Settings
from risk_monitor.ports import Custodian, ExchangeAccount
from risk_monitor.service.state import InMemoryRiskState

log = get_logger(__name__)

EVALUATIONS = Counter("risk_monitor_hot_path_evaluations_total",
                      "Hot-path evaluations by outcome (ok, error, no_config).", ["outcome"])
EVALUATION_SECONDS = Histogram(
    "risk_monitor_hot_path_evaluation_seconds",
    "Duration of one hot-path evaluation: snapshot, domain engine, publish to the live state.",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
DETECTION_SECONDS = Histogram(
    "risk_monitor_hot_path_detection_latency_seconds",
    "Source event time (exchange time of a tick, start of a poll, time of a change) to the end "
    "of the evaluation that saw it.", ["trigger"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
QUEUE_DEPTH = Gauge("risk_monitor_hot_path_queue_depth",
                    "Hot-path work waiting: ticks not yet evaluated, writes not yet done.",
                    ["queue"])
LAST_EVALUATION = Gauge("risk_monitor_hot_path_last_evaluation_timestamp_seconds",
                        "Unix time of the last completed hot-path evaluation.")
TICKS = Counter("risk_monitor_hot_path_ticks_total", "Quotes received by the hot path.",
                ["venue"])
POLLS = Counter("risk_monitor_hot_path_polls_total",
                "Hot-path polls by kind and outcome (complete: every source delivered).",
                ["kind", "outcome"])
WRITE_SECONDS = Histogram("risk_monitor_hot_path_write_seconds",
                          "Duration of the hot path's database writes by step.", ["step"],
                          buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0))
WRITES_DROPPED = Counter("risk_monitor_hot_path_writes_dropped_total",
                         "Queued writes dropped for a newer one because the database lagged.")
NOTIFICATIONS = Counter("risk_monitor_hot_path_notifications_total",
                        "Notifications the hot path enqueued in the outbox, by kind.", ["kind"])

Clock = Callable[[], datetime]

#: how long cached start-of-day / peak equity figures are reused by evaluations
EQUITY_REFERENCE_TTL_S = 1.0
#: the longest the writer may take to drain at shutdown
WRITER_DRAIN_S = 10.0
#: writes kept while the database lags (each holds a report); older ones are dropped first
MAX_QUEUED_WRITES = 16
#: pause of the writer after a failed write (the database is probably down)
WRITE_RETRY_PAUSE_S = 1.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _epoch_s(value: Any) -> float | None:
    """Unix seconds of a timestamp-ish value (None when missing)."""
    if value is None:
        return None
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        return None
    if pd.isna(stamp):
        return None
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return float(stamp.value) / 1e9


# -- quotes ---------------------------------------------------------------------------------------
class QuoteBook:
    """Latest quote per (venue, instrument): one dict store per tick, read whole per evaluation."""

    def __init__(self, symbols: Mapping[str, Sequence[str]]) -> None:
        self.symbols = {venue: tuple(wanted) for venue, wanted in symbols.items()}
        self._rows: dict[tuple[str, str], Mapping[str, Any]] = {}
        self._lock = threading.Lock()

    def update(self, venue: str, rows: Sequence[Mapping[str, Any]]) -> None:
        with self._lock:
            for row in rows:
                self._rows[(venue, str(row["instrument"]))] = row

    def rows(self) -> list[Mapping[str, Any]]:
        with self._lock:
            return list(self._rows.values())

    def missing(self) -> list[str]:
        """Configured ``venue:instrument`` pairs without any quote yet (warm-up)."""
        with self._lock:
            have = set(self._rows)
            venues = {venue for venue, _ in have}
        out = []
        for venue, wanted in self.symbols.items():
            if not wanted:
                if venue not in venues:
                    out.append(f"{venue}:*")
                continue
            out += [f"{venue}:{s}" for s in wanted if (venue, s) not in have]
        return out


# -- equity references, cached --------------------------------------------------------------------
class _CachedEquity:
    """``storage.equity`` for evaluations: start-of-day and peak equity change slowly, so they
    are read at most every ``ttl_s``; when the database is unreachable the last known figures
    are used (an evaluation must not stop because a reference figure could not be refreshed)."""

    def __init__(self, inner: Any, ttl_s: float = EQUITY_REFERENCE_TTL_S) -> None:
        self.inner = inner
        self.ttl_s = ttl_s
        self._cache: dict[tuple[Any, ...], tuple[float, Any]] = {}
        self._failing = False  # log once per outage, not on every evaluation

    def _get(self, key: tuple[Any, ...], read: Callable[[], Any]) -> Any:
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        try:
            value = read()
        except Exception as exc:
            if cached is None:
                raise
            if not self._failing:
                error = map_exception(exc, source="database")
                log.warning("equity references not refreshed; using the last known ones",
                            error_code=error.code, error=error.message)
                self._failing = True
            return cached[1]
        if self._failing:
            log.info("equity references refreshed again")
            self._failing = False
        self._cache[key] = (now, value)
        return value

    def start_of_day(self, scope: str, day: date) -> EquityPoint | None:
        return self._get(("sod", scope, day), lambda: self.inner.start_of_day(scope, day))

    def peak(self, scope: str) -> EquityPoint | None:
        return self._get(("peak", scope), lambda: self.inner.peak(scope))


# -- the hot path ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _WriteJob:
    report: RiskReport
    changed: bool  # statuses differ from the last written ones: never skipped
    trigger: str
    triggers: tuple[str, ...]
    statuses: Mapping[str, LimitStatus]


def _blank(columns: tuple[str, ...]) -> Collected:
    return Collected(frame=empty_frame(columns), sources=())


class HotPath:
    """Keeps the latest inputs in memory and evaluates them as they change (module docstring).

    ``on_quotes`` is the market stream's listener, ``on_config`` the configuration state's;
    ``start``/``stop`` run and end the poll loops, the evaluator and the writer on the current
    event loop. ``accounts``/``custodians`` default to the adapters the settings describe.
    """

    def __init__(self, settings: Settings, live: InMemoryRiskState, storage: Storage, *,
                 instance_id: str, wake: Callable[[], None] | None = None,
                 accounts: Sequence[ExchangeAccount] | None = None,
                 custodians: Sequence[Custodian] | None = None,
                 clock: Clock = _utc_now) -> None:
        self.settings = settings
        self.service = settings.service
        self.live = live
        self.storage = storage
        self.instance_id = instance_id
        self.wake = wake
        self.clock = clock
        self.book = QuoteBook(symbols_by_venue(settings))
        self._overrides = {v.id: v.ws_endpoint_override or v.endpoint_override
                           for v in settings.venues}
        self._quote_policy = quote_policy(settings.market_data)
        self._accounts = accounts
        self._custodians = custodians
        # build_snapshot reads only ``storage.equity``'s two reference figures: cache them
        self._snapshot_storage = replace(
            storage, equity=cast(EquityStore, _CachedEquity(storage.equity)))
        self._policy = workflows.alert_policy(settings)
        self.lineage = HotPathLineage.from_settings(settings)  # lineage hook (issue 11)
        # latest inputs (swapped whole; read by the evaluation thread)
        self.positions: Collected | None = None
        self.exchange_balances: Collected | None = None
        self.custody: Collected | None = None
        # change tracking (event loop thread only)
        self._pending: dict[str, float] = {}  # trigger -> earliest event time (unix s)
        self._pending_ticks = 0
        self._changed = asyncio.Event()
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._writes: asyncio.Queue[_WriteJob | None] = asyncio.Queue()
        self._written: Mapping[str, LimitStatus] | None = None
        self._last_write = -math.inf
        self._force_write = False
        self._io = ThreadPoolExecutor(2, thread_name_prefix="hot-path-io")
        self._evaluator = ThreadPoolExecutor(1, thread_name_prefix="hot-path-eval")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="hot-path-write")
        # what readiness and tests read
        self.started_at: float | None = None
        self.evaluations = 0
        self.last_evaluated_at: float | None = None  # unix time
        self.last_report: RiskReport | None = None
        self.last_error: str | None = None

    # -- inputs ---------------------------------------------------------------------------------
    def on_quotes(self, venue: str, rows: list[dict[str, Any]]) -> None:
        """Stream listener: O(1) per quote; the evaluation happens elsewhere."""
        if not rows:
            return
        self.book.update(venue, rows)
        TICKS.labels(venue=venue).inc(len(rows))
        earliest = min((t for t in (_epoch_s(r.get("timestamp")) for r in rows)
                        if t is not None), default=time.time())
        self._pending_ticks += len(rows)
        QUEUE_DEPTH.labels(queue="ticks").set(self._pending_ticks)
        self._mark("tick", earliest)

    def on_config(self, _applied: Any) -> None:
        """A new limit configuration: evaluate (and alert) with it at once (any thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._mark, "config", time.time())

    def _mark(self, trigger: str, event_time: float) -> None:
        seen = self._pending.get(trigger)
        if seen is None or event_time < seen:
            self._pending[trigger] = event_time
        self._changed.set()

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.started_at = time.time()
        grace = self.settings.alerts.warmup_grace_s  # alerts hook: no UNKNOWN page at warm-up
        if grace is None:
            grace = warmup_grace_s([self.settings.service.positions_poll_s,
                                    self.settings.service.custody_poll_s],
                                   self.settings.market_data.max_age_s)
        self._policy = replace(self._policy,
                               unknown_grace_until=self.clock() + timedelta(seconds=grace))
        if self._accounts is None:
            from risk_monitor.adapters.ccxt_exchange import CcxtExchangeAccount

            self._accounts = [CcxtExchangeAccount.from_settings(self.settings, v)
                              for v in self.settings.venues]
        if self._custodians is None:
            from risk_monitor.adapters.fireblocks_custodian import FireblocksCustodian
            from risk_monitor.platform.resilience import guard_for

            self._custodians = [FireblocksCustodian(c, guard=guard_for(self.settings, c.id))
                                for c in self.settings.custodians]
        market = self.settings.market_data
        accounts, custodians = list(self._accounts), list(self._custodians)

        def poll_accounts() -> tuple[Collected, Collected]:
            return (collect_positions(accounts, market, self.clock),
                    collect_exchange_balances(accounts, market, self.clock))

        def poll_custody() -> Collected:
            return collect_custodian_balances(custodians, market, self.clock)

        self._tasks = [asyncio.create_task(self._run_evaluator(), name="hot-path-evaluate"),
                       asyncio.create_task(self._run_writer(), name="hot-path-write")]
        if accounts:
            self._tasks.append(asyncio.create_task(
                self._poll("positions", self.service.positions_poll_s, poll_accounts),
                name="hot-path-positions"))
        else:
            self.positions = _blank(POSITION_COLUMNS)
            self.exchange_balances = _blank(BALANCE_COLUMNS)
        if custodians:
            self._tasks.append(asyncio.create_task(
                self._poll("custody", self.service.custody_poll_s, poll_custody),
                name="hot-path-custody"))
        else:
            self.custody = _blank(BALANCE_COLUMNS)
        log.info("hot_path_started", venues=sorted(self.book.symbols),
                 accounts=len(accounts), custodians=len(custodians),
                 positions_poll_s=self.service.positions_poll_s,
                 custody_poll_s=self.service.custody_poll_s,
                 evaluate_min_interval_s=self.service.evaluate_min_interval_s)

    async def stop(self) -> None:
        """Stop polling and evaluating; let the writer finish what is queued (bounded)."""
        self._stop.set()
        self._changed.set()
        workers = [t for t in self._tasks if t.get_name() != "hot-path-write"]
        for task in workers:
            task.cancel()
        for task in workers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        writer = next((t for t in self._tasks if t.get_name() == "hot-path-write"), None)
        if writer is not None:
            self._writes.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.shield(writer), timeout=WRITER_DRAIN_S)
            except (TimeoutError, Exception):
                writer.cancel()
                log.warning("hot_path_writer_not_drained", pending=self._writes.qsize())
        self._tasks = []
        for pool in (self._io, self._evaluator, self._writer):
            pool.shutdown(wait=False, cancel_futures=True)
        log.info("hot_path_stopped", evaluations=self.evaluations)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=max(0.0, seconds))

    # -- polling --------------------------------------------------------------------------------
    async def _poll(self, kind: str, interval_s: float, fetch: Callable[[], Any]) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            started, begun = time.time(), loop.time()
            try:
                result = await loop.run_in_executor(self._io, fetch)
            except Exception as exc:  # collect() isolates sources: this one failed as a whole
                error = map_exception(exc, source="hot_path", endpoint=kind)
                record_error(error)
                log.error("hot_path_poll_failed", kind=kind, error_code=error.code,
                          error=error.message)
                result = self._failed_poll(kind, error.code, error.message)
                POLLS.labels(kind=kind, outcome="failed").inc()
            else:
                parts = result if isinstance(result, tuple) else (result,)
                complete = all(part.complete or not part.sources for part in parts)
                POLLS.labels(kind=kind, outcome="complete" if complete else "partial").inc()
            if kind == "positions":
                self.positions, self.exchange_balances = result
            else:
                self.custody = result
            self._mark(kind, started)
            await self._sleep(interval_s - (loop.time() - begun))

    def _failed_poll(self, kind: str, code: str, message: str) -> Any:
        """What a poll that failed as a whole leaves: every source it covers failed (UNKNOWN
        at once, rather than the previous figures ageing until they read as stale)."""
        at = self.clock()
        if kind == "positions":
            statuses = tuple(SourceStatus(kind=SourceKind.EXCHANGE, venue=a.venue,
                                          account=a.account, ok=False, as_of=at,
                                          error_code=code, error=message)
                             for a in self._accounts or ())
            return (Collected(empty_frame(POSITION_COLUMNS), statuses),
                    Collected(empty_frame(BALANCE_COLUMNS), statuses))
        statuses = tuple(SourceStatus(kind=SourceKind.CUSTODIAN, venue=c.venue, account="*",
                                      ok=False, as_of=at, error_code=code, error=message)
                         for c in self._custodians or ())
        return Collected(empty_frame(BALANCE_COLUMNS), statuses)

    def _missing_inputs(self) -> list[str]:
        missing = self.book.missing()
        if self.positions is None:
            missing.append("exchange positions and balances (first poll)")
        if self.custody is None:
            missing.append("custodian balances (first poll)")
        return missing

    async def _warm_up(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.service.hot_path_warmup_s
        while not self._stop.is_set():
            missing = self._missing_inputs()
            if not missing:
                return
            if loop.time() >= deadline:
                log.warning("hot_path_warmup_incomplete", waited_s=self.service.hot_path_warmup_s,
                            missing=missing[:20], note="missing inputs evaluate as UNKNOWN")
                return
            await self._sleep(0.05)

    # -- evaluation -----------------------------------------------------------------------------
    async def _run_evaluator(self) -> None:
        loop = asyncio.get_running_loop()
        await self._warm_up()
        heartbeat_s = max(2.0 * self.service.positions_poll_s, 1.0)
        min_interval = self.service.evaluate_min_interval_s
        last_start = -math.inf
        self._pending, self._pending_ticks = {}, 0  # what waited for warm-up is not latency
        self._mark("start", time.time())
        while not self._stop.is_set():
            if not self._changed.is_set():
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=heartbeat_s)
                except TimeoutError:
                    self._mark("heartbeat", time.time())
            if self._stop.is_set():
                return
            delay = last_start + min_interval - loop.time()
            if delay > 0:
                await self._sleep(delay)  # ticks arriving now join this evaluation
                if self._stop.is_set():
                    return
            last_start = loop.time()
            self._changed.clear()
            pending, self._pending = self._pending, {}
            self._pending_ticks = 0
            QUEUE_DEPTH.labels(queue="ticks").set(0)
            try:
                report = await loop.run_in_executor(self._evaluator, self._evaluate, pending)
            except Exception as exc:
                error = map_exception(exc, source="hot_path", endpoint="evaluate")
                record_error(error)
                EVALUATIONS.labels(outcome="error").inc()
                self.last_error = error.message
                log.error("hot_path_evaluation_failed", error_code=error.code,
                          error=error.message)
                continue
            if report is not None:
                self._schedule_write(report, pending)

    def _evaluate(self, pending: Mapping[str, float]) -> RiskReport | None:
        """One evaluation (evaluation thread): snapshot of the latest inputs → live state."""
        started = time.perf_counter()
        now = self.clock()
        prices = quotes_from_rows(self.book.rows(), self.book.symbols, now, self._quote_policy,
                                  self._overrides)
        balances = workflows.merge_collected(self.exchange_balances or _blank(BALANCE_COLUMNS),
                                             self.custody or _blank(BALANCE_COLUMNS))
        snapshot = workflows.build_snapshot(
            positions=self.positions or _blank(POSITION_COLUMNS), balances=balances,
            prices=prices, now=now, settings=self.settings, storage=self._snapshot_storage)
        report = self.live.evaluate(snapshot)
        if report is None:
            EVALUATIONS.labels(outcome="no_config").inc()
            return None
        done = time.time()
        EVALUATION_SECONDS.observe(time.perf_counter() - started)
        EVALUATIONS.labels(outcome="ok").inc()
        LAST_EVALUATION.set(done)
        for trigger, event_time in pending.items():
            DETECTION_SECONDS.labels(trigger=trigger).observe(max(0.0, done - event_time))
        self.evaluations += 1
        self.last_evaluated_at = done
        self.last_report = report
        self.last_error = None
        return report

    def _schedule_write(self, report: RiskReport, pending: Mapping[str, float]) -> None:
        statuses = {r.fingerprint: r.status for r in report.results}
        changed = statuses != self._written
        loop = asyncio.get_running_loop()
        due = loop.time() - self._last_write >= self.service.persist_interval_s
        if not (changed or due or self._force_write):
            return
        self._written = statuses
        self._last_write = loop.time()
        self._force_write = False
        ordered = sorted(pending, key=lambda k: pending[k])
        trigger = ordered[0] if ordered else "heartbeat"
        while self._writes.qsize() >= MAX_QUEUED_WRITES:  # the database lags: newest wins
            self._writes.get_nowait()
            WRITES_DROPPED.inc()
        self._writes.put_nowait(_WriteJob(report, changed, trigger, tuple(ordered), statuses))
        QUEUE_DEPTH.labels(queue="writer").set(self._writes.qsize())

    # -- writes ---------------------------------------------------------------------------------
    async def _run_writer(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job = await self._writes.get()
            QUEUE_DEPTH.labels(queue="writer").set(self._writes.qsize())
            if job is None:
                return
            if not job.changed and not self._writes.empty():
                continue  # a newer evaluation is queued and nothing changed: it supersedes
            try:
                await loop.run_in_executor(self._writer, self._write, job)
            except Exception as exc:
                error = map_exception(exc, source="hot_path", endpoint="write")
                record_error(error)
                log.error("hot_path_write_failed", error_code=error.code, error=error.message,
                          retry="with the next evaluation")
                self._written = None  # write again with the next evaluation
                self._force_write = True
                await self._sleep(WRITE_RETRY_PAUSE_S)

    def _context(self, job: _WriteJob) -> dict[str, Any]:
        report = job.report
        return {
            "source": "service",
            "service": self.service.service_name,
            "instance_id": self.instance_id,
            "trigger": job.trigger,
            "triggers": list(job.triggers),
            "evaluated_at": report.summary.as_of.isoformat(),
            "limit_config_version": report.config_version,
            "code_version": code_version(),
            "inputs": {s.key: {"ok": s.ok, "as_of": s.as_of.isoformat(), "rows": s.rows,
                               "error_code": s.error_code}
                       for s in report.state.sources},
            # lineage hook (issue 11): inputs' data versions, hashed only when statuses changed
            **(self.lineage.context(report) if job.changed else {}),
        }

    def _write(self, job: _WriteJob) -> None:
        """Writer thread: alerts first (latency), then the state other readers need."""
        report = job.report
        results = report.results
        as_of = report.summary.as_of
        started = time.perf_counter()
        context = self._context(job)
        policy = with_limit_rules(self._policy, self.live.config)  # per-limit alert rules
        raised = workflows.raise_alerts(self.storage, results, now=as_of, policy=policy,
                                        context=context)
        WRITE_SECONDS.labels(step="alerts").observe(time.perf_counter() - started)
        notes = raised.plan.notifications
        if notes:
            if self.wake is not None:
                self.wake()
            self.lineage.after_commit(context, notes)  # lineage hook (issue 11): Dagster event
            for note in notes:
                NOTIFICATIONS.labels(kind=note.kind.value).inc()
            log.info("hot_path_alerts_raised", trigger=job.trigger, enqueued=raised.enqueued,
                     notifications=[f"{n.kind.value}:{n.limit_id}:{n.scope}:{n.status.value}"
                                    for n in notes[:20]])
        planned = {s.fingerprint for s in raised.plan.states}
        if any(r.fingerprint not in planned for r in results):
            # another evaluator (a Dagster run) stored a later evaluation of these series:
            # ours was ignored for them, so plan again with the next evaluation
            self._force_write = True
        started = time.perf_counter()
        workflows.persist_evaluation(self.storage, state=report.state,
                                     exposures=report.exposures, results=results, as_of=as_of)
        WRITE_SECONDS.labels(step="persist").observe(time.perf_counter() - started)
        started = time.perf_counter()
        workflows.record_compliance(self.storage, results)
        WRITE_SECONDS.labels(step="compliance").observe(time.perf_counter() - started)

    # -- readiness ------------------------------------------------------------------------------
    def readiness(self) -> tuple[bool, str, dict[str, Any]]:
        """(ok, detail, data) for the service's ``hot_path`` check."""
        now = time.time()
        data: dict[str, Any] = {"evaluations": self.evaluations,
                                "writes_queued": self._writes.qsize()}
        if self.last_evaluated_at is None:
            since = now - (self.started_at or now)
            data["missing"] = self._missing_inputs()[:10]
            return False, f"no evaluation yet ({since:.1f}s since start)", data
        age = now - self.last_evaluated_at
        data["last_evaluation_age_s"] = round(age, 3)
        if age > self.service.hot_path_stale_s:
            return False, (f"last evaluation {age:.1f}s ago (> {self.service.hot_path_stale_s:g}s)"
                           + (f": {self.last_error}" if self.last_error else "")), data
        return True, f"evaluated {age:.1f}s ago", data


# -- the quote source -------------------------------------------------------------------------
async def run_quote_source(settings: Settings, stop: asyncio.Event,
                           listener: QuoteListener | None) -> None:
    """The service's quotes: its own websocket feed (``service.stream``), else the feeders'
    Redis streams; restarted with a backoff if it ever fails as a whole."""
    from risk_monitor.service.market_stream import run_market_stream

    if not settings.service.stream:
        if listener is None:
            return  # nothing here needs quotes: the feeders keep the Redis cache warm
        if not settings.redis_url:
            log.error("service.stream is false and redis_url is not set: the hot path gets no "
                      "quotes (limits needing them evaluate as UNKNOWN)")
            return
        redis_url = settings.redis_url
        source: Callable[[], Awaitable[Any]] = lambda: follow_quote_streams(  # noqa: E731
            redis_url, settings.market_data, list(symbols_by_venue(settings)),
            quote_policy(settings.market_data), stop, listener)
    else:
        source = lambda: run_market_stream(settings, stop, listener=listener)  # noqa: E731
    attempt = 0
    while not stop.is_set():
        try:
            await source()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = map_exception(exc, source="market_stream")
            record_error(error)
            log.error("quote source failed; restarting", error_code=error.code,
                      error=error.message)
        if stop.is_set():
            return
        attempt += 1
        delay = min(30.0, 0.5 * 2 ** min(attempt, 6))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
