"""The hot path's evaluator: per-tick decisions between full evaluations.

* :meth:`LiveEvaluator.full` (the evaluation thread) is the batch path: quote book → admission →
  snapshot → domain engine, published to the live state. It runs at start, on the heartbeat, on
  every position / custody poll and on a new limit document, never per tick;
* :meth:`LiveEvaluator.rebase` (the loop thread) makes that report the baseline of a
  ``domain.incremental.IncrementalEvaluator``, which the evaluation thread built and brought up
  to date with the ticks that arrived while the full evaluation ran; the loop replays only the
  few that arrived after that;
* :meth:`LiveEvaluator.on_tick` (the loop thread) decides one tick in O(affected limits). What
  a tick cannot decide alone (a quote the batch did not admit, an absurd or stale tick, a tick
  pricing a held asset) asks for a full evaluation instead.

Both return the status changes against what was last decided, which go to the writer at once.
The lineage of an evaluation (the content versions of its inputs) is hashed here, once per full
evaluation and off the alert path; unchanged inputs (positions between polls) are not re-hashed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any, cast

import pandas as pd

from risk_monitor import application
from risk_monitor.adapters.errors import map_exception
from risk_monitor.adapters.sql import EquityPoint, EquityStore, Storage
from risk_monitor.domain.engine import RiskReport
from risk_monitor.domain.incremental import IncrementalEvaluator, Tick, TickDecision
from risk_monitor.domain.lineage import adopt_versions
from risk_monitor.domain.model import (
    BALANCE_COLUMNS,
    POSITION_COLUMNS,
    Collected,
    LimitResult,
    SourceKind,
    SourceStatus,
)
from risk_monitor.domain.model import empty_frame as _empty_frame
from risk_monitor.domain.quotes import QuotePolicy, quotes_from_rows
from risk_monitor.lineage import HotPathLineage
from risk_monitor.platform.code_version import code_version
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.settings import Settings
from risk_monitor.ports import Custodian, ExchangeAccount
from risk_monitor.service.loop_metrics import LoopCounter, LoopHistogram
from risk_monitor.service.quote_intake import QuoteBook, QuoteRow, tick_of
from risk_monitor.service.state import LiveEvaluation

log = get_logger(__name__)

#: updated per tick by the event loop (module loop_metrics)
DECIDE_SECONDS = LoopHistogram(
    "risk_monitor_hot_path_decide_seconds",
    "Stage 'decide': a tick's arrival in the hot path to its per-tick decision.",
    buckets=(0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05))
DECISIONS = LoopCounter("risk_monitor_hot_path_tick_decisions_total",
                        "Ticks by how they were decided (tick: per tick; full: needed a full "
                        "evaluation; none: no evaluator yet).", ["outcome"])

#: how long cached start-of-day / peak equity figures are reused by evaluations
EQUITY_REFERENCE_TTL_S = 1.0
#: columns of polled rows that only say when (``poll_content`` leaves them out)
TIME_COLUMNS = ("timestamp", "received_at", "source_time")


def blank(columns: tuple[str, ...]) -> Collected:
    return Collected(frame=_empty_frame(columns), sources=())


class CachedEquity:
    """``storage.equity`` for evaluations: start-of-day and peak equity change slowly, so they
    are read at most every ``ttl_s``; when the database is unreachable the last known figures
    are used (an evaluation must not stop because a reference figure could not be refreshed)."""

    def __init__(self, inner: EquityStore, ttl_s: float = EQUITY_REFERENCE_TTL_S, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.ttl_s = ttl_s
        self._monotonic = monotonic  # injectable: the TTL is tested without sleeping
        self._cache: dict[tuple[str, ...], tuple[float, EquityPoint | None]] = {}
        self._failing = False  # log once per outage, not on every evaluation

    def _get(self, key: tuple[str, ...],
             read: Callable[[], EquityPoint | None]) -> EquityPoint | None:
        now = self._monotonic()
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
        return self._get(("sod", scope, day.isoformat()),
                         lambda: self.inner.start_of_day(scope, day))

    def peak(self, scope: str) -> EquityPoint | None:
        return self._get(("peak", scope), lambda: self.inner.peak(scope))


@dataclass(frozen=True)
class Baseline:
    """A full evaluation and the per-tick evaluator built on it (evaluation thread → loop)."""

    report: RiskReport
    #: the quote book's sequence the per-tick evaluator has seen: what the evaluation read,
    #: plus the ticks ``caught_up`` in the evaluation thread
    sequence: int
    context: Mapping[str, Any]  # its alert context (lineage included)
    incremental: IncrementalEvaluator | None  # None without a limit document
    #: the ticks that arrived while the evaluation ran, applied to ``incremental`` in the
    #: evaluation thread (oldest first; ``LiveEvaluator.rebase`` diffs them in order)
    caught_up: tuple[TickDecision, ...] = ()


@dataclass(frozen=True)
class Decision:
    """Status changes to write, and whether a full evaluation is wanted instead."""

    changes: tuple[LimitResult, ...] = ()
    full_reason: str = ""


#: a tick that changed no status (shared: a Decision is immutable)
_NO_CHANGE = Decision()


class LiveEvaluator:
    """Full evaluations, the per-tick evaluator between them, and what changed (module doc)."""

    def __init__(self, settings: Settings, live: LiveEvaluation, storage: Storage,
                 book: QuoteBook, policy: QuotePolicy, *,
                 clock: Callable[[], datetime], lineage: HotPathLineage,
                 instance_id: str) -> None:
        self.settings = settings
        self.live = live
        self.book = book
        self.policy = policy
        self.clock = clock
        self.lineage = lineage
        self.instance_id = instance_id
        self._overrides = {v.id: v.ws_endpoint_override or v.endpoint_override
                           for v in settings.venues}
        # build_snapshot reads only ``storage.equity``'s two reference figures: cache them
        self._snapshot_storage = replace(
            storage, equity=cast(EquityStore, CachedEquity(storage.equity)))
        # latest inputs (swapped whole by the polls; read by the evaluation thread)
        self.positions: Collected | None = None
        self.exchange_balances: Collected | None = None
        self.custody: Collected | None = None
        self._merged: tuple[object, object, Collected] | None = None
        self._seen: tuple[Collected | None, Collected | None] = (None, None)
        self.new_inputs: tuple[str, ...] = ()  # polled inputs the last full evaluation saw first
        self._incremental: IncrementalEvaluator | None = None
        self._report: RiskReport | None = None
        self._context: Mapping[str, Any] = {}
        self._statuses: dict[str, str] = {}  # fingerprint -> last decided status
        self.decided = 0
        # per-tick metric children, looked up once
        self._decided_tick = DECISIONS.labels(outcome="tick")
        self._decided_full = DECISIONS.labels(outcome="full")
        self._decided_none = DECISIONS.labels(outcome="none")

    # -- the full evaluation (evaluation thread) -------------------------------------------------
    def _balances(self) -> Collected:
        exchange = self.exchange_balances or blank(BALANCE_COLUMNS)
        custody = self.custody or blank(BALANCE_COLUMNS)
        merged = self._merged
        if merged is None or merged[0] is not exchange or merged[1] is not custody:
            merged = (exchange, custody, application.merge_collected(exchange, custody))
            self._merged = merged  # same object while neither changes: lineage hashes it once
        return merged[2]

    def full(self) -> Baseline | None:
        """One batch evaluation of the latest inputs → live state, and the per-tick evaluator
        built on it (here, in the evaluation thread: building it costs milliseconds the tick
        loop would otherwise stall for); None without a limit document."""
        now = self.clock()
        # the polled inputs this evaluation is the first to see name it (a poll may land while
        # a heartbeat evaluation starts: that one then evaluated the poll's data)
        # read once: a poll landing mid-evaluation must not make the snapshot's positions
        # differ from the ones ``new_inputs`` names (it is evaluated by the next one, at once)
        seen = (self.positions, self.custody)
        self.new_inputs = tuple(name for name, now_in, before in (
            ("positions", seen[0], self._seen[0]), ("custody", seen[1], self._seen[1]))
            if now_in is not before and now_in is not None)
        self._seen = seen
        sequence, rows, hashed = self.book.snapshot()
        prices = quotes_from_rows(rows, self.book.symbols, now, self.policy, self._overrides)
        versions = hashed.versions(prices)  # lineage: composed from the ticks' row hashes
        if versions is not None:
            adopt_versions(prices, versions)
        snapshot = application.build_snapshot(
            positions=seen[0] or blank(POSITION_COLUMNS), balances=self._balances(),
            prices=prices, now=now, settings=self.settings, storage=self._snapshot_storage)
        report = self.live.evaluate(snapshot)
        if report is None:
            return None
        config = self.live.config
        if config is None:
            return Baseline(report, sequence, self._context_of(report), None)
        incremental = IncrementalEvaluator(report, config, self.policy)
        sequence, caught_up = self._catch_up(incremental, sequence)
        return Baseline(report, sequence, self._context_of(report), incremental, caught_up)

    def _catch_up(self, incremental: IncrementalEvaluator,
                  sequence: int) -> tuple[int, tuple[TickDecision, ...]]:
        """The ticks stored while the evaluation ran, applied here in the evaluation thread
        (tens of them: replaying them all on the loop stalled it 3-4 ms per evaluation); the
        loop replays only what arrives after this. Statuses are compared on the loop."""
        sequence, rows = self.book.since(sequence)
        decisions = []
        for venue, row in rows:
            tick = tick_of(venue, row)
            if tick is not None:
                decisions.append(incremental.on_tick(tick, self.clock()))
        return sequence, tuple(decisions)

    def _context_of(self, report: RiskReport) -> dict[str, Any]:
        return {
            "source": "service",
            "service": self.settings.service.service_name,
            "instance_id": self.instance_id,
            "baseline_evaluated_at": report.summary.as_of.isoformat(),
            "limit_config_version": report.config_version,
            "code_version": code_version(),
            "inputs": {s.key: {"ok": s.ok, "as_of": s.as_of.isoformat(), "rows": s.rows,
                               "error_code": s.error_code}
                       for s in report.state.sources},
            **self.lineage.context(report),  # lineage (issue 11): input data versions
        }

    # -- per tick and rebase (loop thread) -------------------------------------------------------
    def rebase(self, baseline: Baseline) -> tuple[list[LimitResult], list[Decision]]:
        """Make ``baseline`` current; returns its status changes and those of the ticks
        replayed on it (stored after its book sequence)."""
        report = baseline.report
        self._report, self._context = report, baseline.context
        self._incremental = baseline.incremental
        changed = self._diff(report.results)
        replayed = [self._decided(decision) for decision in baseline.caught_up]
        _, newer = self.book.since(baseline.sequence)
        replayed += [self.on_tick(venue, row, publish=False) for venue, row in newer]
        if replayed and self._incremental is not None:
            self._publish()
        return changed, replayed

    def on_tick(self, venue: str, row: QuoteRow, *, publish: bool = True) -> Decision:
        return self.decide(tick_of(venue, row), publish=publish)

    def decide(self, tick: Tick | None, *, publish: bool = True) -> Decision:
        """One tick (its floats, ``quote_intake.tick_of``) decided on the current baseline."""
        started = time.perf_counter()
        incremental = self._incremental
        if incremental is None or tick is None:
            self._decided_none.inc()
            return _NO_CHANGE
        decision = incremental.on_tick(tick, self.clock())
        if publish and decision.updated and not decision.full_reason:
            self._publish()
        done = self._decided(decision)
        if not decision.full_reason:
            DECIDE_SECONDS.observe(time.perf_counter() - started)
        return done

    def _decided(self, decision: TickDecision) -> Decision:
        """One tick's decision counted and its statuses compared with the last decided ones."""
        if decision.full_reason:
            self._decided_full.inc()
            return Decision(full_reason=decision.full_reason)
        self.decided += 1
        self._decided_tick.inc()
        if not decision.changed:
            return _NO_CHANGE  # most ticks: no instance built
        return Decision(changes=tuple(self._diff(decision.changed)))

    def _publish(self) -> None:
        if self._incremental is not None:
            self.live.publish_tick_results(self._incremental)

    def _diff(self, results: Sequence[LimitResult]) -> list[LimitResult]:
        changed = []
        for result in results:
            fingerprint = result.fingerprint
            if self._statuses.get(fingerprint) != result.status.value:
                self._statuses[fingerprint] = result.status.value
                changed.append(result)
        return changed

    # -- reading ---------------------------------------------------------------------------------
    @property
    def context(self) -> Mapping[str, Any]:
        return self._context

    @property
    def report(self) -> RiskReport | None:
        return self._report

    def results(self) -> tuple[LimitResult, ...]:
        if self._incremental is not None:
            return tuple(self._incremental.results())
        return tuple(self._report.results) if self._report is not None else ()


def poll_content(result: tuple[Collected, Collected] | Collected) -> bytes:
    """What a poll delivered, without its times: every row (a hash per row) and each source's
    outcome. Two polls with the same content differ only in when they were taken."""
    parts = result if isinstance(result, tuple) else (result,)
    out = []
    for part in parts:
        frame = part.frame.drop(columns=[c for c in TIME_COLUMNS if c in part.frame.columns])
        rows = pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()
        sources = repr([(s.key, s.ok, s.rows, s.error_code) for s in part.sources])
        out.append(rows + sources.encode())
    return b"|".join(out)


def failed_poll(kind: str, accounts: Sequence[ExchangeAccount],
                custodians: Sequence[Custodian], at: datetime, code: str,
                message: str) -> tuple[Collected, Collected] | Collected:
    """What a poll that failed as a whole leaves: every source it covers failed (UNKNOWN at
    once, rather than the previous figures ageing until they read as stale)."""
    if kind == "positions":
        statuses = tuple(SourceStatus(kind=SourceKind.EXCHANGE, venue=a.venue,
                                      account=a.account, ok=False, as_of=at,
                                      error_code=code, error=message) for a in accounts)
        return (Collected(_empty_frame(POSITION_COLUMNS), statuses),
                Collected(_empty_frame(BALANCE_COLUMNS), statuses))
    statuses = tuple(SourceStatus(kind=SourceKind.CUSTODIAN, venue=c.venue, account="*",
                                  ok=False, as_of=at, error_code=code, error=message)
                     for c in custodians)
    return Collected(_empty_frame(BALANCE_COLUMNS), statuses)


def tick_detail(tick: Tick) -> dict[str, Any]:
    return {"tick": {"venue": tick.venue, "instrument": tick.instrument, "last": tick.last,
                     "event_time_ns": tick.t_ns}}
