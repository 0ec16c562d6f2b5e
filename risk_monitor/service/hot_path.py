"""The service's hot path: live quotes + polled positions → a decision on every tick → alerts.

DESIGN.md "Two data paths, one truth", the service half: milliseconds, with the same domain
rules and alert store as the Dagster runs. Three parts (docs/architecture.md, "The hot path"):
**quote intake** (``quote_intake.py``: each tick into the :class:`QuoteBook`, its floats to the
evaluator, on the event loop); **evaluator** (``evaluator.py``: each tick decided in
O(affected limits) on the last full evaluation, which runs in its own thread at start, on the
heartbeat, on polls, on new limits and when a tick cannot be decided alone); **writer**
(``writer.py``: a status change committed at once, changed series only, its outbox rows
claimed on insert for the dispatcher; everything else written periodically, off the tick).

Positions and exchange balances are polled every ``service.positions_poll_s``, custodian
balances every ``service.custody_poll_s``, in worker threads (ccxt's sync clients block); their
coverage travels with them, so a failed venue is UNKNOWN, never zero. Start-up waits (at most
``service.hot_path_warmup_s``) for the first poll of every source and a quote per instrument.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from risk_monitor import application
from risk_monitor.adapters.collection import (
    collect_custodian_balances,
    collect_exchange_balances,
    collect_positions,
)
from risk_monitor.adapters.errors import map_exception
from risk_monitor.adapters.market_data import quote_policy, symbols_by_venue
from risk_monitor.adapters.sql import OutboxDispatcher, Storage
from risk_monitor.domain.alerts import AlertPolicy, WarmUp, warmup_grace_s, with_limit_rules
from risk_monitor.domain.model import (
    BALANCE_COLUMNS,
    POSITION_COLUMNS,
    Collected,
    LimitResult,
)
from risk_monitor.lineage import HotPathLineage
from risk_monitor.platform.clock import Clock, utc_now
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.metrics import record_error
from risk_monitor.platform.settings import Settings
from risk_monitor.ports import Custodian, ExchangeAccount
from risk_monitor.service.evaluator import (
    Baseline,
    CachedEquity,
    LiveEvaluator,
    blank,
    failed_poll,
    poll_content,
    tick_detail,
)
from risk_monitor.service.quote_intake import (
    RECEIVE_SECONDS,
    TICKS,
    QuoteBook,
    QuoteRow,
    epoch_ns,
    run_quote_source,
    tick_of,
)
from risk_monitor.service.state import LiveEvaluation
from risk_monitor.service.writer import AlertWriter, Change, LiveState

__all__ = ["CachedEquity", "HotPath", "QuoteBook", "run_quote_source"]

log = get_logger(__name__)

EVALUATIONS = Counter("risk_monitor_hot_path_evaluations_total",
                      "Hot-path full evaluations by outcome (ok, error, no_config).", ["outcome"])
EVALUATION_SECONDS = Histogram(
    "risk_monitor_hot_path_evaluation_seconds",
    "Duration of one full hot-path evaluation: snapshot, domain engine, publish.",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
DETECTION_SECONDS = Histogram(
    "risk_monitor_hot_path_detection_latency_seconds",
    "Source event time (exchange time of a tick, start of a poll, time of a change) to the "
    "decision that saw it.", ["trigger"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
QUEUE_DEPTH = Gauge("risk_monitor_hot_path_queue_depth",
                    "Hot-path work waiting: full-evaluation triggers, series not yet written.",
                    ["queue"])
LAST_EVALUATION = Gauge("risk_monitor_hot_path_last_evaluation_timestamp_seconds",
                        "Unix time of the last completed full hot-path evaluation.")
RESTAMPS = Counter("risk_monitor_hot_path_poll_restamps_total",
                   "Polls that only re-stamped the last poll's data: stored without a full "
                   "evaluation of their own.", ["kind"])
POLLS = Counter("risk_monitor_hot_path_polls_total",
                "Hot-path polls by kind and outcome (complete: every source delivered).",
                ["kind", "outcome"])

#: what a poll returns: (positions, exchange balances) or custodian balances
PollResult = tuple[Collected, Collected] | Collected

#: which trigger names a full evaluation that several caused (positions move most statuses)
TRIGGER_RANK = {t: i for i, t in enumerate(("positions", "config", "custody", "tick", "start",
                                            "heartbeat"))}
#: triggers evaluated at once, never held by ``service.evaluate_min_interval_s``: a position
#: change (a fill on a private stream) or a new limit document moves statuses by itself, and the
#: evaluation thread already merges what arrives while one runs (issue 13: fill -> alert < 1 s)
URGENT_TRIGGERS = frozenset({"positions", "config"})
#: longest an unchanged poll result waits for the next full evaluation (``HotPath._restamp_s``)
RESTAMP_MAX_S = 5.0
#: the longest the writer may take to drain at shutdown
WRITER_DRAIN_S = 10.0


class HotPath:
    """Quote intake → per-tick evaluator → writer, plus the polls (module docstring).

    ``on_quotes`` is the market stream's listener, ``on_config`` the configuration state's;
    ``start``/``stop`` run and end the polls, the full evaluations and the writer on the
    current event loop. ``accounts``/``custodians`` default to the adapters the settings name.
    """

    def __init__(self, settings: Settings, live: LiveEvaluation, storage: Storage, *,
                 instance_id: str, wake: Callable[[], None] | None = None,
                 delivery: OutboxDispatcher | None = None,
                 accounts: Sequence[ExchangeAccount] | None = None,
                 custodians: Sequence[Custodian] | None = None,
                 clock: Clock = utc_now) -> None:
        self.settings = settings
        self.service = settings.service
        self.live = live
        self.storage = storage
        self.instance_id = instance_id
        self.clock = clock
        self.book = QuoteBook(symbols_by_venue(settings))
        self._accounts = accounts
        self._custodians = custodians
        self._policy = application.alert_policy(settings)
        self.lineage = HotPathLineage.from_settings(settings)  # lineage hook (issue 11)
        self.evaluator = LiveEvaluator(settings, live, storage, self.book,
                                       quote_policy(settings.market_data), clock=clock,
                                       lineage=self.lineage, instance_id=instance_id)
        self.writer = AlertWriter(storage, policy=self._alert_policy,
                                  persist_interval_s=self.service.persist_interval_s, wake=wake,
                                  after_commit=self.lineage.after_commit, delivery=delivery,
                                  durable=self.service.durable_alert_commit)
        # full-evaluation triggers (event loop thread only)
        self._pending: dict[str, float] = {}  # trigger -> earliest event time (unix s)
        self._changed = asyncio.Event()
        self._stop = asyncio.Event()
        self._urgent = asyncio.Event()  # an URGENT_TRIGGERS mark: ends the min-interval wait
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._config_version: str | None = None
        self._ticks: dict[str, Any] = {}  # venue -> its TICKS child
        self._contents: dict[str, bytes] = {}  # poll kind -> content of its last result
        market = settings.market_data
        #: longest an unchanged poll waits for an evaluation (re-stamped inputs never age
        #: into stale: a quarter of the tightest freshness budget at most)
        self._restamp_s = min(RESTAMP_MAX_S, market.exchange_max_age_s / 4,
                              market.custody_max_age_s / 4, market.max_age_s / 4)
        self._io = ThreadPoolExecutor(2, thread_name_prefix="hot-path-io")
        self._full = ThreadPoolExecutor(1, thread_name_prefix="hot-path-eval")
        # what readiness and tests read
        self.started_at: float | None = None
        self.evaluations = 0  # full evaluations
        self.last_evaluated_at: float | None = None  # unix time of the last full evaluation
        self.last_error: str | None = None

    # -- inputs the polls swap (the evaluator reads them) ----------------------------------------
    @property
    def positions(self) -> Collected | None:
        return self.evaluator.positions

    @positions.setter
    def positions(self, value: Collected | None) -> None:
        self.evaluator.positions = value

    @property
    def exchange_balances(self) -> Collected | None:
        return self.evaluator.exchange_balances

    @exchange_balances.setter
    def exchange_balances(self, value: Collected | None) -> None:
        self.evaluator.exchange_balances = value

    @property
    def custody(self) -> Collected | None:
        return self.evaluator.custody

    @custody.setter
    def custody(self, value: Collected | None) -> None:
        self.evaluator.custody = value

    def _alert_policy(self) -> AlertPolicy:
        return with_limit_rules(self._policy, self.live.config)  # per-limit alert rules

    # -- inputs ---------------------------------------------------------------------------------
    def on_quotes(self, venue: str, rows: Sequence[QuoteRow]) -> None:
        """Stream listener: store each tick and decide it at once (O(affected limits))."""
        if not rows:
            return
        received = time.time()
        self.book.update(venue, rows)
        counter = self._ticks.get(venue)
        if counter is None:  # a labels() lookup per tick costs about a microsecond
            counter = self._ticks[venue] = TICKS.labels(venue=venue)
        counter.inc(len(rows))
        for row in rows:
            tick = tick_of(venue, row)  # once per tick: its floats and its time in ns
            t_ns = tick.t_ns if tick is not None else epoch_ns(row.get("timestamp"))
            if t_ns is not None:
                RECEIVE_SECONDS.observe(max(0.0, received - t_ns / 1e9))
            decision = self.evaluator.decide(tick)
            if decision.full_reason:
                self._mark("tick", received if t_ns is None else t_ns / 1e9)
            elif decision.changes:
                done = time.perf_counter()
                detail = tick_detail(tick) if tick is not None else {}
                self.writer.submit([Change(r, "tick", done, detail) for r in decision.changes],
                                   self.evaluator.context)
                if t_ns is not None:
                    DETECTION_SECONDS.labels(trigger="tick").observe(
                        max(0.0, time.time() - t_ns / 1e9))

    def on_config(self, _applied: object) -> None:
        """A new limit configuration: evaluate (and alert) with it at once (any thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._mark, "config", time.time())

    def _mark(self, trigger: str, event_time: float) -> None:
        seen = self._pending.get(trigger)
        if seen is None or event_time < seen:
            self._pending[trigger] = event_time
        QUEUE_DEPTH.labels(queue="full").set(len(self._pending))
        self._changed.set()
        if trigger in URGENT_TRIGGERS:
            self._urgent.set()

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        # The writer and the dispatcher are I/O-bound threads sharing the interpreter lock with
        # the CPU-bound tick loop: at the default 5 ms switch interval each of their database
        # round trips waits up to 5 ms for the lock (a convoy: a 200-statement write took
        # seconds). 0.5 ms (the default) bounds that wait; the loop loses ~1 % to switching.
        sys.setswitchinterval(self.service.switch_interval_ms / 1000.0)
        self._loop = asyncio.get_running_loop()
        self.started_at = time.time()
        grace = self.settings.alerts.warmup_grace_s  # alerts hook: no UNKNOWN page at warm-up
        if grace is None:
            grace = warmup_grace_s([self.settings.service.positions_poll_s,
                                    self.settings.service.custody_poll_s],
                                   self.settings.market_data.max_age_s)
        self._policy = replace(self._policy,
                               warm_up=WarmUp(until=self.clock() + timedelta(seconds=grace)))
        self.writer.start()
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

        self._tasks = [asyncio.create_task(self._run_evaluator(), name="hot-path-evaluate")]
        if accounts:
            self._tasks.append(asyncio.create_task(
                self._poll("positions", self.service.positions_poll_s, poll_accounts),
                name="hot-path-positions"))
        else:
            self.positions = blank(POSITION_COLUMNS)
            self.exchange_balances = blank(BALANCE_COLUMNS)
        if custodians:
            self._tasks.append(asyncio.create_task(
                self._poll("custody", self.service.custody_poll_s, poll_custody),
                name="hot-path-custody"))
        else:
            self.custody = blank(BALANCE_COLUMNS)
        log.info("hot_path_started", venues=sorted(self.book.symbols),
                 accounts=len(accounts), custodians=len(custodians),
                 positions_poll_s=self.service.positions_poll_s,
                 custody_poll_s=self.service.custody_poll_s,
                 full_min_interval_s=self.service.evaluate_min_interval_s)

    async def stop(self) -> None:
        """Stop polling and evaluating; let the writer finish what is pending (bounded)."""
        self._stop.set()
        self._changed.set()
        self._urgent.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        await asyncio.to_thread(self.writer.stop, WRITER_DRAIN_S)
        for pool in (self._io, self._full):
            pool.shutdown(wait=False, cancel_futures=True)
        log.info("hot_path_stopped", evaluations=self.evaluations,
                 tick_decisions=self.evaluator.decided, writer=vars(self.writer.stats))

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=max(0.0, seconds))

    # -- polling --------------------------------------------------------------------------------
    async def _poll(self, kind: str, interval_s: float, fetch: Callable[[], PollResult]) -> None:
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
                result = failed_poll(kind, self._accounts or (), self._custodians or (),
                                     self.clock(), error.code, error.message)
                POLLS.labels(kind=kind, outcome="failed").inc()
            else:
                parts = result if isinstance(result, tuple) else (result,)
                complete = all(part.complete or not part.sources for part in parts)
                POLLS.labels(kind=kind, outcome="complete" if complete else "partial").inc()
            if isinstance(result, tuple):
                self.positions, self.exchange_balances = result
            else:
                self.custody = result
            content = await loop.run_in_executor(self._io, poll_content, result)
            if self._restamp_only(kind, content):
                RESTAMPS.labels(kind=kind).inc()  # stored; the next evaluation reads it
            else:
                self._mark(kind, started)
            await self._sleep(interval_s - (loop.time() - begun))

    def _restamp_only(self, kind: str, content: bytes) -> bool:
        """True when a poll only re-stamped what the last one delivered (same rows and source
        outcomes, newer times) and the last full evaluation is younger than ``_restamp_s``.
        A quiet private stream answers every second; evaluating the whole desk for a new
        receive time alone cost a full evaluation per second (issue 10)."""
        same = self._contents.get(kind) == content
        self._contents[kind] = content
        last = self.last_evaluated_at
        return same and last is not None and time.time() - last < self._restamp_s

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

    # -- full evaluations -----------------------------------------------------------------------
    async def _run_evaluator(self) -> None:
        loop = asyncio.get_running_loop()
        await self._warm_up()
        heartbeat_s = max(2.0 * self.service.positions_poll_s, 1.0, self._restamp_s)
        min_interval = self.service.evaluate_min_interval_s
        last_start = -math.inf
        self._pending = {}  # what waited for warm-up is not latency
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
            if delay > 0 and not URGENT_TRIGGERS.intersection(self._pending):
                # full evaluations for ticks, custody polls and the heartbeat only: a tick never
                # waits for this, and a position change arriving meanwhile ends the wait
                self._urgent.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), timeout=delay)
                if self._stop.is_set():
                    return
            last_start = loop.time()
            self._changed.clear()
            pending, self._pending = self._pending, {}
            QUEUE_DEPTH.labels(queue="full").set(0)
            try:
                done = await loop.run_in_executor(self._full, self._full_evaluation, pending)
            except Exception as exc:
                error = map_exception(exc, source="hot_path", endpoint="evaluate")
                record_error(error)
                EVALUATIONS.labels(outcome="error").inc()
                self.last_error = error.message
                log.error("hot_path_evaluation_failed", error_code=error.code,
                          error=error.message)
                continue
            if done is not None:
                self._rebase(done, pending)

    def _full_evaluation(self, pending: Mapping[str, float]) -> Baseline | None:
        """One full evaluation (evaluation thread): latest inputs → live state."""
        started = time.perf_counter()
        done = self.evaluator.full()
        if done is None:
            EVALUATIONS.labels(outcome="no_config").inc()
            return None
        finished = time.time()
        EVALUATION_SECONDS.observe(time.perf_counter() - started)
        EVALUATIONS.labels(outcome="ok").inc()
        LAST_EVALUATION.set(finished)
        for trigger, event_time in pending.items():
            DETECTION_SECONDS.labels(trigger=trigger).observe(max(0.0, finished - event_time))
        self.evaluations += 1
        self.last_evaluated_at = finished
        self.last_error = None
        return done

    def _rebase(self, baseline: Baseline, pending: Mapping[str, float]) -> None:
        """Loop thread: the evaluation becomes the per-tick baseline; its changes are written."""
        report, context = baseline.report, baseline.context
        pending = {**{name: time.time() for name in self.evaluator.new_inputs}, **pending}
        ordered = sorted(pending, key=lambda k: pending[k])
        # the input most likely to have moved a status names the evaluation
        trigger = min(pending, key=lambda k: (TRIGGER_RANK.get(k, len(TRIGGER_RANK)),
                                              pending[k]), default="heartbeat")
        warm_up = self._policy.warm_up  # alerts hook: which sources answered since the start
        if warm_up is not None:
            self._policy = replace(self._policy, warm_up=warm_up.seen(report.state.sources,
                                                                      report.state.problems))
        changed, replayed = self.evaluator.rebase(baseline)
        now = time.perf_counter()
        changes = [Change(r, trigger, now, {"triggers": ordered}) for r in changed]
        changes += [Change(r, "tick", now, {}) for d in replayed for r in d.changes]
        self.writer.submit(changes, context)
        new_config = report.config_version != self._config_version
        self._config_version = report.config_version
        self.writer.submit_state(LiveState(report, self.evaluator.results, context),
                                 new_config=new_config)
        if any(d.full_reason for d in replayed):
            self._mark("tick", time.time())
        QUEUE_DEPTH.labels(queue="writer").set(self.writer.pending())

    def results(self) -> list[LimitResult]:
        """Current results (the per-tick evaluator's, on the last full evaluation)."""
        return list(self.evaluator.results())

    # -- readiness ------------------------------------------------------------------------------
    def readiness(self) -> tuple[bool, str, dict[str, Any]]:
        """(ok, detail, data) for the service's ``hot_path`` check."""
        now = time.time()
        data: dict[str, Any] = {"evaluations": self.evaluations,
                                "tick_decisions": self.evaluator.decided,
                                "writes_queued": self.writer.pending()}
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
