"""Where the service's risk API gets its answers: the ``RiskViewProvider`` Protocol.

The gRPC and REST handlers depend on this Protocol only. Two implementations:

- :class:`LiveEvaluation`, fed by the process's own evaluation (the hot path publishes
  results and source coverage into it; it holds no alerts: those are the outbox's, read
  through ``DatabaseRiskView``; with a position snapshot it also answers
  ``check_order`` through the domain's pre-trade check);
- ``DatabaseRiskView`` (``risk_monitor.service.sql_state``) over the tables the Dagster runs and the
  alert store write (latest limit results, latest metrics, the outbox as the alert feed).

Nothing here ever reads missing data as "no risk": with no evaluation the status is UNKNOWN
(``evaluation_source = "no-evaluation-yet"``) and ``check_order`` denies (fail closed).
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from risk_monitor.domain.compliance import compliance_summary
from risk_monitor.domain.coverage import source_is_stale
from risk_monitor.domain.engine import RiskReport, RiskSnapshot, evaluate
from risk_monitor.domain.figures import finite
from risk_monitor.domain.limits import LimitConfig
from risk_monitor.domain.model import LimitResult, Notification, SourceKind, SourceStatus
from risk_monitor.domain.orders import OrderCheck, OrderRequest, check_order
from risk_monitor.domain.pending_orders import PendingExposure
from risk_monitor.domain.trading_state import (
    ACTIVE_VERDICT,
    ReasonCode,
    TradingState,
    TradingVerdict,
)

if TYPE_CHECKING:
    from risk_monitor.adapters.sql.risk_state import StoredSource

__all__ = ["OrderRequest"]  # the domain's order type is this API's too

NO_EVALUATION = "no-evaluation-yet"
IN_MEMORY = "in-memory"


@dataclass(frozen=True)
class ProjectedLimit:
    result: LimitResult  # the limit as it would be after the order
    current_utilisation: float | None = None


@dataclass(frozen=True)
class OrderDecision:
    allowed: bool
    reasons: tuple[str, ...]
    projected: tuple[ProjectedLimit, ...]
    as_of: datetime
    limit_config_version: str
    evaluation_source: str
    codes: tuple[str, ...] = ()  # ReasonCode values
    trading_state: str = "ACTIVE"  # the trading state in force on the order's venue


class TradingGate(Protocol):
    """The trading state in force for an order (``service/trading.py``'s TradingControl)."""

    def verdict(self, venue: str, results: Sequence[LimitResult] | None = None,
                sources: Sequence[SourceStatus] | None = None) -> TradingVerdict: ...

    def judge(self, order: OrderRequest, now: datetime, report: RiskReport,
              decide: Callable[[PendingExposure], OrderCheck]) -> OrderCheck:
        """``decide`` with the orders allowed earlier that ``report``'s positions do not show
        yet, booking the order if it is allowed (atomically)."""
        ...


@dataclass(frozen=True)
class SourceFreshness:
    key: str
    kind: str
    venue: str
    account: str
    ok: bool
    as_of: datetime
    age_s: float
    stale: bool
    error_code: str | None = None


@dataclass(frozen=True)
class RiskView:
    """The summary GetRiskStatus and /readyz show."""

    status: str  # COMPLIANT | WARNING | BREACH | UNKNOWN
    as_of: datetime | None
    equity: float | None
    gross_exposure: float | None
    net_exposure: float | None
    sources: tuple[SourceFreshness, ...]
    limit_config_version: str
    evaluation_source: str
    counts: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def unknown(cls, config_version: str,
                sources: tuple[SourceFreshness, ...] = ()) -> RiskView:
        """No evaluation yet: UNKNOWN, nothing read as "no risk"."""
        status, counts = compliance_of(())
        return cls(status=status, as_of=None, equity=None, gross_exposure=None,
                   net_exposure=None, sources=sources, limit_config_version=config_version,
                   evaluation_source=NO_EVALUATION, counts=counts)


@dataclass(frozen=True)
class AlertFeedItem:
    """One notification in the alert feed; ``seq`` increases strictly (the stream cursor)."""

    seq: int
    notification: Notification


@runtime_checkable
class RiskViewProvider(Protocol):
    """What the risk API needs. Sync methods may block briefly (the server runs them in a
    thread); ``wait_alerts`` is awaited on the server's loop."""

    def risk_view(self, now: datetime) -> RiskView: ...

    def limit_results(self) -> list[LimitResult]: ...

    def alert_head(self) -> int:
        """The cursor of the newest alert (0 when none): "only new alerts" starts here."""
        ...

    def alerts_after(self, cursor: int, limit: int) -> list[AlertFeedItem]: ...

    async def wait_alerts(self, cursor: int, timeout_s: float) -> None:
        """Return when an alert after ``cursor`` may exist, or after ``timeout_s``."""
        ...

    def check_order(self, order: OrderRequest, now: datetime) -> OrderDecision: ...


# -- helpers shared by the implementations ---------------------------------------------------------
def compliance_of(results: Sequence[LimitResult]) -> tuple[str, dict[str, int]]:
    """Overall status and counts per limit status (the domain's rule; none → UNKNOWN)."""
    summary = compliance_summary(results)
    return summary.status.value, dict(summary.counts)


def freshness_of(source: SourceStatus | StoredSource, now: datetime, max_age_s: float,
                 budgets: Mapping[SourceKind, float] | None = None) -> SourceFreshness:
    """How fresh one source is, by the domain's rule (``coverage.source_is_stale``): its age
    counts from its last success when the store knows it."""
    kind = source.kind.value if isinstance(source, SourceStatus) else source.kind
    since = source.as_of if isinstance(source, SourceStatus) else (source.last_ok_at
                                                                   or source.as_of)
    age = max(0.0, (now - since).total_seconds())
    return SourceFreshness(
        key=source.key, kind=kind, venue=source.venue, account=source.account, ok=source.ok,
        as_of=source.as_of, age_s=age,
        stale=source_is_stale(kind, source.ok, age, budgets, max_age_s),
        error_code=source.error_code)


def deny(reason: str, now: datetime, *, config_version: str = "",
         source: str = NO_EVALUATION, code: ReasonCode = ReasonCode.NO_EVALUATION,
         trading_state: str = "ACTIVE") -> OrderDecision:
    return OrderDecision(allowed=False, reasons=(reason,), projected=(), as_of=now,
                         limit_config_version=config_version, evaluation_source=source,
                         codes=(code.value,), trading_state=trading_state)


class TickResults(Protocol):
    """What the per-tick evaluator publishes (``domain.incremental.IncrementalEvaluator``)."""

    @property
    def as_of(self) -> datetime: ...

    def results(self) -> Sequence[LimitResult]: ...


@dataclass(frozen=True)
class _Evaluation:
    results: tuple[LimitResult, ...]
    as_of: datetime
    equity: float | None
    gross_exposure: float | None
    net_exposure: float | None
    sources: tuple[SourceStatus, ...]
    limit_config_version: str
    status: str | None = None  # the domain's compliance status, when it computed one


class LiveEvaluation:
    """Risk state fed by this process's own evaluation (thread-safe, swaps whole snapshots).

    Feed it either way:
    - ``evaluate(snapshot)``: run the domain engine with the limit configuration in force
      (``set_limit_config``, wired to the configuration service) and publish the report; a new
      configuration re-evaluates the last snapshot at once, so the new limits show without
      waiting for fresh data;
    - ``publish_report(report)`` / ``publish_tick_results(source)`` from an evaluator
      that runs elsewhere in the process.
    ``check_order`` projects orders on the latest report with the domain's pre-trade check.
    """

    def __init__(self, *, max_age_s: float = 60.0,
                 budgets: Mapping[SourceKind, float] | None = None) -> None:
        self.max_age_s = max_age_s
        self.budgets = dict(budgets or {})
        self._evaluation: _Evaluation | None = None
        self._report: RiskReport | None = None
        self._snapshot: RiskSnapshot | None = None
        self._config: LimitConfig | None = None
        #: serialises evaluations (a new configuration re-evaluates the last snapshot); held
        #: for a whole evaluation, so the tick loop never takes it
        self._evaluating = threading.RLock()
        #: the swap of the published evaluation only: held for microseconds, the tick loop's
        #: ``publish_tick_results`` takes it on every tick (it once waited here for whole
        #: evaluations, tens of ms)
        self._lock = threading.Lock()
        #: per-tick results not yet brought into ``_evaluation`` (``publish_tick_results``)
        self._tick_source: TickResults | None = None
        self._tick_seq = 0  # ticks published (the tick loop counts)
        self._seen_seq = 0  # ticks brought in (readers, under ``_lock``)
        #: the trading-state gate CheckOrder asks first (None: always ACTIVE)
        self.trading: TradingGate | None = None

    # -- feeding --------------------------------------------------------------------------------
    @property
    def config(self) -> LimitConfig | None:
        return self._config

    @property
    def evaluated(self) -> bool:
        """True once an evaluation (report or results) was published."""
        return self._evaluation is not None  # ticks only ever update a published one

    def set_limit_config(self, config: LimitConfig, version: str | None = None) -> None:
        """Use ``config`` from now on and re-evaluate the last snapshot with it."""
        with self._evaluating:
            self._config = config
            if self._snapshot is not None:
                self.evaluate(self._snapshot)

    def evaluate(self, snapshot: RiskSnapshot) -> RiskReport | None:
        """Evaluate with the configuration in force; None until a configuration is set."""
        with self._evaluating:
            self._snapshot = snapshot
            config = self._config
            if config is None:
                return None
            report = evaluate(snapshot, config)
            self.publish_report(report)
            return report

    def publish_report(self, report: RiskReport) -> None:
        summary = report.summary
        evaluation = _Evaluation(
            results=tuple(report.results), as_of=summary.as_of,
            equity=summary.equity_usd, gross_exposure=summary.gross_usd,
            net_exposure=summary.net_usd, sources=tuple(report.state.sources),
            limit_config_version=report.config_version,
            status=summary.compliance.status.value)
        with self._lock:
            self._report, self._evaluation = report, evaluation
            self._tick_source, self._seen_seq = None, self._tick_seq  # ticks start over on it

    def publish_tick_results(self, source: TickResults) -> None:
        """Per-tick results on top of the last report (its exposures and the pre-trade check
        stay those of the last full evaluation until the next one).

        Called on every tick by the tick loop, so it only notes that ``source`` moved: the
        results are copied when a reader asks (:meth:`_current`), not per tick (copying and
        re-wrapping every result per tick was ~5 % of the tick loop)."""
        self._tick_source = source
        self._tick_seq += 1

    def _current(self) -> _Evaluation | None:
        """The published evaluation, with the per-tick results published since brought in."""
        seq = self._tick_seq
        if seq == self._seen_seq:
            return self._evaluation
        with self._lock:
            source = self._tick_source
            if self._evaluation is not None and source is not None and seq != self._seen_seq:
                # read after ``seq``: the results are at least as new as the tick it counted
                self._evaluation = replace(self._evaluation, results=tuple(source.results()),
                                           as_of=source.as_of, status=None)
            self._seen_seq = max(self._seen_seq, seq)
            return self._evaluation

    # -- RiskViewProvider ----------------------------------------------------------------------
    def risk_view(self, now: datetime) -> RiskView:
        evaluation = self._current()
        config_version = self._config.version if self._config else ""
        if evaluation is None:
            return RiskView.unknown(config_version)
        status, counts = compliance_of(evaluation.results)
        return RiskView(
            # NaN never travels as a number
            status=evaluation.status or status, as_of=evaluation.as_of,
            equity=finite(evaluation.equity), gross_exposure=finite(evaluation.gross_exposure),
            net_exposure=finite(evaluation.net_exposure),
            sources=tuple(freshness_of(s, now, self.max_age_s, self.budgets)
                          for s in evaluation.sources),
            limit_config_version=evaluation.limit_config_version,
            evaluation_source=IN_MEMORY, counts=counts)

    def limit_results(self) -> list[LimitResult]:
        evaluation = self._current()
        return list(evaluation.results) if evaluation else []

    # no alert feed in memory: the service's alerts are the outbox's (``DatabaseRiskView``)
    def alert_head(self) -> int:
        return 0

    def alerts_after(self, cursor: int, limit: int) -> list[AlertFeedItem]:
        return []

    async def wait_alerts(self, cursor: int, timeout_s: float) -> None:
        await asyncio.sleep(max(0.0, min(timeout_s, 1.0)) if math.isfinite(timeout_s) else 1.0)

    def latest_inputs(self) -> tuple[tuple[LimitResult, ...], tuple[SourceStatus, ...]]:
        """The latest evaluation's results and sources (the same objects until the next one,
        so a consumer can cache what it derives from them)."""
        evaluation = self._current()
        if evaluation is None:
            return (), ()
        return evaluation.results, evaluation.sources

    def check_order_now(self, order: OrderRequest, now: datetime) -> OrderDecision | None:
        """The decision when it is in-memory work only (dict reads and arithmetic on the last
        report, no I/O, no lock held by an evaluation); None when the limit configuration is
        newer than the report, which needs a re-preparation: call ``check_order`` off the loop."""
        report, config = self._report, self._config
        if report is not None and config is not None and report.config_version != config.version:
            return None
        return self.check_order(order, now)

    def check_order(self, order: OrderRequest, now: datetime) -> OrderDecision:
        # no lock: each attribute is swapped whole, and an evaluation holds the lock for its
        # whole run (CheckOrder's p99 waited for it); a config newer than the report is judged
        # by the domain on the report's snapshot, never on stale limits
        report, config, evaluation = self._report, self._config, self._current()
        version = config.version if config else ""
        problem = valid_order(order)
        trading = ACTIVE_VERDICT
        if self.trading is not None:
            trading = self.trading.verdict(
                order.venue, evaluation.results if evaluation else (),
                evaluation.sources if evaluation else ())
        if problem is not None:
            return deny(f"invalid order: {problem}", now, config_version=version,
                        source=IN_MEMORY, code=ReasonCode.INVALID_ORDER,
                        trading_state=trading.state.value)
        if report is None or config is None:
            if trading.state is TradingState.HALTED:  # the operator's word comes first
                return deny(f"DENY {trading.describe}", now, config_version=version,
                            code=ReasonCode.TRADING_HALTED, trading_state=trading.state.value)
            return deny("no risk evaluation yet: positions or limits unknown (fail closed)",
                        now, config_version=version, trading_state=trading.state.value)
        def decide(pending: PendingExposure | None = None) -> OrderCheck:
            return check_order(report, config, order, now, trading, pending or ())

        gate = self.trading
        checked = decide() if gate is None else gate.judge(order, now, report, decide)
        return decision_of(checked, report, config, now)


def valid_order(order: OrderRequest) -> str | None:
    """Why an order request is malformed, or None (also before any evaluation exists)."""
    if not order.venue or not order.instrument:
        return "venue and instrument are required"
    if str(order.side) not in ("buy", "sell"):
        return "side must be buy or sell"
    if not (order.quantity > 0 and math.isfinite(order.quantity)):
        return "quantity must be a positive number"
    if order.price is not None and not (order.price > 0 and math.isfinite(order.price)):
        return "price must be a positive number when given"
    if order.position_side not in (None, "long", "short"):
        return "position_side must be long, short or empty"
    return None


def decision_of(check: OrderCheck, report: RiskReport, config: LimitConfig,
                now: datetime) -> OrderDecision:
    """The API's decision from the domain's verdict, with the current utilisation beside each
    projected limit."""
    cached = report.state.cache.get("current_utilisation")
    if cached is not None and cached[0] is report.results:
        current = cached[1]
    else:  # once per report, not per order
        current = {(r.limit_id, r.scope): r.utilisation for r in report.results}
        report.state.cache["current_utilisation"] = (report.results, current)
    projected = tuple(ProjectedLimit(r, current.get((r.limit_id, r.scope)))
                      for r in check.projected)
    return OrderDecision(allowed=check.allowed, reasons=tuple(check.reasons),
                         projected=projected, as_of=now, limit_config_version=config.version,
                         evaluation_source=IN_MEMORY, codes=check.codes,
                         trading_state=check.trading_state.value)
