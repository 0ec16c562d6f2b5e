"""The service's trading state: the gate ``CheckOrder`` asks first, and its bookkeeping.

``TradingControl`` holds the manual states (the ``trading_states`` table, which the CLI, REST,
gRPC and other instances write) and derives the automatic ones from the latest evaluation with
the domain's rules (``domain/trading_state.py``). ``verdict`` answers in microseconds from
memory: the automatic states are recomputed only when a new evaluation was published. A loop
(``run``) re-reads the manual states every ``trading.refresh_s``, audits every change of the
state in force (``trading_state.changed``) and publishes it to Prometheus. Recent checked orders
are kept for the dashboard.

It also holds the ledger of pending orders (``domain/pending_orders.py``): ``judge`` settles
it against the evaluated positions, lets the domain check the order with what is still pending,
and books the order if allowed, all under one lock (CheckOrder runs on the loop and on gRPC
threads: two concurrent checks never both miss each other). Fills followed on the private
streams release an order by its client order id; an order never shown expires after
``trading.pending_order_ttl_s`` (logged and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy.engine import Engine

from risk_monitor.adapters.errors import map_exception
from risk_monitor.adapters.sql.trading_states import SqlTradingStates
from risk_monitor.domain.engine import RiskReport
from risk_monitor.domain.model import Collected, LimitResult, LimitStatus, SourceStatus
from risk_monitor.domain.orders import OrderCheck, OrderRequest, evaluated_position
from risk_monitor.domain.pending_orders import (
    Key,
    PendingExposure,
    PendingOrder,
    PendingOrders,
    Release,
    Released,
    pending_of,
    positions_as_of,
)
from risk_monitor.domain.realised import Fill
from risk_monitor.domain.trading_state import (
    AutomaticState,
    ManualState,
    TradingRule,
    TradingState,
    TradingVerdict,
    automatic_states,
    effective_states,
    verdict_for,
)
from risk_monitor.platform.errors import TradingControlError
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.metrics import record_error
from risk_monitor.platform.settings import Settings, TradingSettings
from risk_monitor.service.private_stream import FillLedger
from risk_monitor.service.state import LiveEvaluation, RiskViewProvider

log = get_logger(__name__)

TRADING_STATE = Gauge(
    "risk_monitor_trading_state",
    "Trading state in force per scope (global, venue:<id>): 0 ACTIVE, 1 REDUCING, 2 HALTED.",
    ["scope"],
)
ORDER_CHECKS = Counter(
    "risk_monitor_order_checks_total",
    "Pre-trade checks by venue, decision and first reason code.",
    ["venue", "decision", "code"],
)
PENDING_RELEASED = Counter(
    "risk_monitor_pending_orders_released_total",
    "Allowed orders no longer counted as pending exposure, by venue and why: shown (the "
    "evaluated positions show them) or expired (trading.pending_order_ttl_s).",
    ["venue", "why"],
)
PENDING_ORDERS = Gauge(
    "risk_monitor_pending_orders",
    "Allowed orders whose fills the evaluated positions do not show yet (counted as exposure).",
)

#: expired pending orders are logged at most this often (with their count since the last line)
EXPIRED_LOG_EVERY_S = 1.0

Inputs = Callable[[], tuple[Sequence[LimitResult], Sequence[SourceStatus]]]


def rules_of(settings: TradingSettings) -> tuple[TradingRule, ...]:
    return tuple(TradingRule(r.match, LimitStatus(r.status), TradingState(r.state), r.per_venue)
                 for r in settings.rules)


@dataclass(frozen=True)
class CheckedOrder:
    """One pre-trade check as the dashboard shows it."""

    at: datetime
    venue: str
    account: str
    instrument: str
    side: str
    quantity: float
    price: float | None
    allowed: bool
    codes: tuple[str, ...]
    reasons: tuple[str, ...]
    trading_state: str
    client_order_id: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "at": self.at.isoformat(), "codes": list(self.codes),
                "reasons": list(self.reasons)}


class TradingControl:
    """Thread-safe: ``verdict`` runs in gRPC worker threads, ``refresh`` in the loop's."""

    def __init__(self, settings: TradingSettings, store: SqlTradingStates | None, *,
                 inputs: Inputs, venues: Iterable[str] = (), instance_id: str = "",
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings = settings
        self.rules = rules_of(settings)
        self.store = store
        self.inputs = inputs
        self.venues = tuple(venues)
        self.instance_id = instance_id
        self.clock = clock
        self._lock = threading.Lock()
        self._manual: dict[str, ManualState] = {}
        self._auto: dict[str, AutomaticState] = {}
        self._auto_of: tuple[object, object] = (None, None)
        self._in_force: dict[str, TradingVerdict] = {}
        self._recent: deque[CheckedOrder] = deque(maxlen=settings.recent_orders)
        #: fills seen on the private streams (service/private_stream.py), when they run
        self.fills: FillLedger | None = None
        self._pending = PendingOrders(match_fills=False)
        self._pending_lock = threading.Lock()
        self._as_of: tuple[object, dict[str, datetime]] = (None, {})
        self._expired_unlogged = 0
        self._expired_logged_at = -math.inf
        #: called after every refresh with the time (the dashboard samples its charts)
        self.on_refresh: list[Callable[[datetime], None]] = []

    # -- the gate -----------------------------------------------------------------------------
    def verdict(self, venue: str, results: Sequence[LimitResult] | None = None,
                sources: Sequence[SourceStatus] | None = None) -> TradingVerdict:
        """The state in force on ``venue``; with ``results``/``sources`` (the evaluation the
        order is judged on) the automatic part follows exactly that evaluation."""
        with self._lock:
            if results is not None:
                self._observe(results, sources or ())
            return verdict_for(venue, self._manual, self._auto)

    def _observe(self, results: Sequence[LimitResult], sources: Sequence[SourceStatus]) -> None:
        if self._auto_of[0] is results and self._auto_of[1] is sources:
            return
        self._auto = automatic_states(
            results, sources, self.rules,
            halt_on_source_failure=self.settings.halt_venue_on_source_failure)
        self._auto_of = (results, sources)

    # -- pending orders ----------------------------------------------------------------------
    def follow_fills(self, fills: FillLedger) -> None:
        """Release pending orders by their fills (client order id) seen on the streams."""
        self.fills = fills
        with self._pending_lock:
            self._pending.match_fills = True
        fills.listeners.append(self._filled)

    def _filled(self, fill: Fill, seen_at: datetime, position: float) -> None:
        with self._pending_lock:
            self._pending.fill(fill.key, fill.client_order_id, fill.quantity, seen_at,
                               position)

    def judge(self, order: OrderRequest, now: datetime, report: RiskReport,
              decide: Callable[[PendingExposure], OrderCheck]) -> OrderCheck:
        """Settle the pending orders against ``report``'s positions (the evaluation the order
        is judged on), ``decide`` with those still pending, book the order if allowed."""
        def position_of(key: Key) -> float:
            return evaluated_position(report, *key)

        with self._pending_lock:
            released = self._pending.settle(self._positions_as_of(report.snapshot.positions),
                                            now, position_of)
            check = decide(self._pending.exposure())
            if check.allowed:
                self._pending.add(pending_of(order, check, now,
                                             self.settings.pending_order_ttl_s))
            count = len(self._pending)
        PENDING_ORDERS.set(count)
        if released:
            self._released(released)
        return check

    def _released(self, released: Sequence[Released]) -> None:
        """Count releases; log the expired ones at most once a second with how many (a desk
        that checks orders it never sends must not cost a log line per order)."""
        expired = [r.order for r in released if r.why is Release.EXPIRED]
        for done in released:
            PENDING_RELEASED.labels(venue=done.order.venue, why=done.why.value).inc()
        if not expired:
            return
        with self._pending_lock:
            self._expired_unlogged += len(expired)
            if time.monotonic() - self._expired_logged_at < EXPIRED_LOG_EVERY_S:
                return
            count, self._expired_unlogged = self._expired_unlogged, 0
            self._expired_logged_at = time.monotonic()
        log.warning("pending_orders_expired", count=count,
                    latest=[(o.venue, o.instrument, o.client_order_id, o.signed_remaining)
                            for o in expired[:5]],
                    ttl_s=self.settings.pending_order_ttl_s)

    def _positions_as_of(self, positions: Collected) -> dict[str, datetime]:
        if self._as_of[0] is not positions:  # once per evaluation, not per order
            self._as_of = (positions, positions_as_of(positions))
        return self._as_of[1]

    def pending(self) -> tuple[PendingOrder, ...]:
        with self._pending_lock:
            return self._pending.view()

    def record_check(self, order: OrderRequest, *, allowed: bool, codes: Sequence[str],
                     reasons: Sequence[str], trading_state: str, at: datetime,
                     client_order_id: str = "") -> None:
        self._recent.append(CheckedOrder(
            at=at, venue=order.venue, account=order.account, instrument=order.instrument,
            side=str(order.side), quantity=float(order.quantity), price=order.price,
            allowed=allowed, codes=tuple(codes), reasons=tuple(reasons),
            trading_state=trading_state, client_order_id=client_order_id))
        ORDER_CHECKS.labels(venue=order.venue, decision="allow" if allowed else "deny",
                            code=codes[0] if codes else "OK").inc()

    def recent_checks(self, limit: int = 100) -> list[CheckedOrder]:
        items = list(self._recent)
        return items[-limit:][::-1]

    # -- reading and changing ----------------------------------------------------------------
    def states(self) -> dict[str, TradingVerdict]:
        with self._lock:
            return effective_states(self._manual, self._auto, self.venues)

    def manual(self) -> dict[str, ManualState]:
        with self._lock:
            return dict(self._manual)

    def set_state(self, scope: str, state: TradingState | str, *, by: str,
                  reason: str = "") -> dict[str, TradingVerdict]:
        """Store a manual state (audited), apply it at once, return the states in force."""
        if self.store is None:
            raise TradingControlError("trading-state changes need the database store",
                                      source="trading")
        done = self.store.set(scope, state, by=by, reason=reason)
        with self._lock:
            if done.state is TradingState.ACTIVE:
                self._manual.pop(scope.strip(), None)
            else:
                self._manual[scope.strip()] = done
        log.warning("trading_state_set", scope=scope, state=done.state.value, actor=by,
                    reason=reason)
        self.refresh(reload=False)
        return self.states()

    def refresh(self, *, reload: bool = True) -> dict[str, tuple[TradingVerdict, TradingVerdict]]:
        """Re-read manual states, recompute automatic ones, audit and publish what changed."""
        if reload and self.store is not None:
            manual = self.store.manual()
            with self._lock:
                self._manual = manual
        results, sources = self.inputs()
        with self._lock:
            self._observe(results, sources)
            now_in_force = effective_states(self._manual, self._auto, self.venues)
            before = self._in_force
            changes: dict[str, tuple[TradingVerdict, TradingVerdict]] = {}
            for scope in [*now_in_force, *(s for s in before if s not in now_in_force)]:
                # a scope absent on either side is ACTIVE there (one that disappeared is again)
                old = before.get(scope) or TradingVerdict(TradingState.ACTIVE, scope)
                new = now_in_force.get(scope) or TradingVerdict(TradingState.ACTIVE, scope)
                if old.state is not new.state:
                    changes[scope] = (old, new)
            self._in_force = now_in_force
        for scope, verdict in now_in_force.items():
            TRADING_STATE.labels(scope=scope).set(verdict.state.rank)
        for scope, (_, after) in changes.items():
            if scope not in now_in_force:
                TRADING_STATE.labels(scope=scope).set(after.state.rank)
        if changes:
            for scope, (old, new) in changes.items():
                log.warning("trading_state_changed", scope=scope, before=old.state.value,
                            after=new.state.value, origin=new.origin, cause=new.cause)
            if self.store is not None:
                self.store.record_automatic(changes, at=self.clock(),
                                            instance_id=self.instance_id)
        for listener in self.on_refresh:
            try:
                listener(self.clock())
            except Exception as exc:  # a chart sample never stops the trading state
                log.warning("trading_refresh_listener_failed", error=type(exc).__name__)
        return changes

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh until ``stop``; a failing store is logged and retried, never fatal."""
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.refresh)
            except Exception as exc:
                error = map_exception(exc, source="trading")
                record_error(error)
                log.warning("trading_refresh_failed", error=str(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.refresh_s)


def verdict_as_dict(scope: str, verdict: TradingVerdict) -> dict[str, str]:
    return {"scope": scope, "state": verdict.state.value, "set_by_scope": verdict.scope,
            "origin": verdict.origin, "cause": verdict.cause}


def build_trading(settings: Settings, engine: Engine, provider: RiskViewProvider,
                  live: LiveEvaluation | None, instance_id: str,
                  fills: FillLedger | None = None) -> TradingControl:
    """The service's TradingControl, attached to the live state as its CheckOrder gate."""
    def inputs() -> tuple[Sequence[LimitResult], Sequence[SourceStatus]]:
        if live is not None and live.evaluated:
            return live.latest_inputs()
        return provider.limit_results(), ()

    control = TradingControl(settings.trading, SqlTradingStates(engine), inputs=inputs,
                             venues=[v.id for v in settings.venues], instance_id=instance_id)
    if fills is not None:
        control.follow_fills(fills)
    if live is not None:
        live.trading = control
    return control
