"""The dashboard's trading panel: ``GET /v1/dashboard/trading`` (the page polls it).

What a head of trading watches while the desk trades: the trading state per scope, positions,
the latest orders with their CheckOrder decisions, fills and realised P&L, equity / exposure /
P&L over the last hour, time in breach per limit over the last hour, and reconciliation breaks
(desk book vs exchanges vs custodian, computed by the same ``trading_flow`` use case as the
Dagster asset). Missing inputs are said, never shown as zero. The service's reconciliation
also raises the ``reconciliation`` alerts, through the same use case and alert store as the
asset, so a break pages within seconds whichever path sees it first (the other stays quiet).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from risk_monitor.adapters.errors import map_exception
from risk_monitor.adapters.sql.codec import to_jsonable
from risk_monitor.application import trading_flow
from risk_monitor.application.trading_flow import Reconciliation
from risk_monitor.domain.figures import finite
from risk_monitor.domain.model import Collected
from risk_monitor.domain.reconciliation import DeskBook
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.metrics import record_error
from risk_monitor.platform.settings import Settings
from risk_monitor.ports import RiskStore
from risk_monitor.service.controls_api import fills_document
from risk_monitor.service.state import RiskViewProvider
from risk_monitor.service.trading import TradingControl, verdict_as_dict

log = get_logger(__name__)

HISTORY_S = 3600.0
SAMPLE_EVERY_S = 5.0
RECONCILE_EVERY_S = 5.0
_JSON_HEADERS = {"Cache-Control": "no-store"}

Inputs = Callable[[], tuple[Collected | None, Collected | None, Collected | None]]
#: raises the alerts of one reconciliation (the number enqueued)
RaiseBreaks = Callable[[Reconciliation, datetime], int]


class TradingDashboard:
    """Samples the desk's figures for the charts and answers the panel's JSON."""

    def __init__(self, settings: Settings, control: TradingControl,
                 provider: RiskViewProvider, *, inputs: Inputs = lambda: (None, None, None),
                 desk_book: Callable[[], DeskBook | None] = lambda: None,
                 compliance: Callable[[datetime, datetime], list[Any]] | None = None,
                 raise_breaks: RaiseBreaks | None = None) -> None:
        self.settings = settings
        self.raise_breaks = raise_breaks
        self.control = control
        self.provider = provider
        self.inputs = inputs
        self.desk_book = desk_book
        self.compliance = compliance
        self._lock = threading.Lock()
        self._history: deque[dict[str, Any]] = deque(maxlen=int(HISTORY_S / SAMPLE_EVERY_S) + 2)
        self._last_sample = -math.inf
        self._breaks: dict[str, Any] = {"computed": False, "reason": "not computed yet"}
        self._last_reconcile = -math.inf

    # -- sampling (the trading loop calls it; cheap, rate-limited) --------------------------
    def sample(self, now: datetime) -> None:
        if time.monotonic() - self._last_sample >= SAMPLE_EVERY_S:
            self._last_sample = time.monotonic()
            view = self.provider.risk_view(now)
            realised = sum(b.net for b in self.control.fills.snapshot()) \
                if self.control.fills is not None else None
            with self._lock:
                self._history.append({"at": now.isoformat(), "equity": view.equity,
                                      "gross": view.gross_exposure, "net": view.net_exposure,
                                      "realised": realised})
        if time.monotonic() - self._last_reconcile >= RECONCILE_EVERY_S:
            self._last_reconcile = time.monotonic()
            self._reconcile(now)

    def _reconcile(self, now: datetime) -> None:
        positions, balances, custody = self.inputs()
        if positions is None or balances is None or custody is None:
            result: dict[str, Any] = {"computed": False, "reason": "positions not collected yet"}
        else:
            try:
                desk = self.desk_book()
            except Exception as exc:  # Redis down: say so, never "no break"
                desk, reason = None, f"desk book unreadable: {type(exc).__name__}"
            else:
                reason = "no desk book published"
            outcome = trading_flow.reconcile_books(self.settings, desk, positions, balances,
                                                   custody)
            result = {"computed": outcome.desk_published, "as_of": now.isoformat(),
                      "reason": "" if outcome.desk_published else reason,
                      "breaks": [b.as_dict() for b in outcome.breaks
                                 if b.status.value != "OK"],
                      "compared": len(outcome.breaks), "pending": len(outcome.pending)}
            result["alerts"] = self._alert(outcome, now)
        with self._lock:
            self._breaks = result

    def _alert(self, outcome: Reconciliation, now: datetime) -> str:
        """Raise the breaks' alerts; a store that fails is said (the panel still shows them)."""
        if self.raise_breaks is None or not outcome.desk_published:
            return "not raised"
        try:
            enqueued = self.raise_breaks(outcome, now)
        except Exception as exc:
            error = map_exception(exc, source="reconciliation")
            record_error(error)
            log.warning("reconciliation_alerts_failed", error=str(error))
            return f"not raised: {error.code}"
        return f"raised ({enqueued} enqueued)"

    # -- the answer ---------------------------------------------------------------------------
    def document(self, now: datetime) -> dict[str, Any]:
        since = now - timedelta(seconds=HISTORY_S)
        with self._lock:
            history = [h for h in self._history if h["at"] >= since.isoformat()]
            breaks = dict(self._breaks)
        positions, _, _ = self.inputs()
        return to_jsonable({
            "as_of": now.isoformat(),
            "states": [verdict_as_dict(s, v) for s, v in self.control.states().items()],
            "orders": [c.as_dict() for c in self.control.recent_checks(50)],
            "pending_orders": [{"venue": p.venue, "instrument": p.instrument,
                                "client_order_id": p.client_order_id,
                                "quantity": p.signed_quantity, "unshown": p.signed_remaining,
                                "allowed_at": p.allowed_at.isoformat()}
                               for p in self.control.pending()[-50:]],
            **fills_document(self.control, 50),
            "positions": _positions(positions),
            "history": history,
            "time_in_breach": self._time_in_breach(since, now),
            "reconciliation": breaks,
        })

    def _time_in_breach(self, since: datetime, now: datetime) -> list[dict[str, Any]]:
        if self.compliance is None:
            return []
        try:
            intervals = self.compliance(since, now)
        except Exception as exc:
            log.warning("time_in_breach_unavailable", error=type(exc).__name__)
            return []
        spent: dict[tuple[str, str], float] = {}
        for interval in intervals:
            if str(getattr(interval, "status", "")) not in ("BREACH", "LimitStatus.BREACH"):
                continue
            start = max(interval.since, since)
            end = min(interval.until or now, now)
            if end > start:
                key = (interval.limit_id, interval.scope)
                spent[key] = spent.get(key, 0.0) + (end - start).total_seconds()
        return [{"limit_id": k[0], "scope": k[1], "seconds": round(v, 1)}
                for k, v in sorted(spent.items(), key=lambda kv: -kv[1])]


def _positions(collected: Collected | None) -> list[dict[str, Any]]:
    if collected is None or not len(collected.frame):
        return []
    frame: pd.DataFrame = collected.frame
    numbers = ("quantity", "entry_price", "mark_price", "notional", "unrealized_pnl")
    records: list[dict[Any, Any]] = frame[["venue", "account", "instrument", "position_side",
                                           *numbers]].to_dict("records")
    return [{"venue": r["venue"], "account": r["account"], "instrument": r["instrument"],
             "side": r["position_side"], **{n: finite(r[n]) for n in numbers}} for r in records]


def trading_dashboard_routes(dashboard: TradingDashboard) -> list[Route]:
    async def trading(_: Request) -> JSONResponse:
        answer = await asyncio.to_thread(dashboard.document, datetime.now(UTC))
        return JSONResponse(answer, headers=_JSON_HEADERS)

    return [Route("/v1/dashboard/trading", trading, methods=["GET"])]


def build_trading_dashboard(settings: Settings, control: TradingControl,
                            provider: RiskViewProvider, *, engine: Any = None,
                            hot_path: Any = None, redis_client: Any = None,
                            storage: RiskStore | None = None) -> TradingDashboard:
    """The panel on the service's parts: the hot path's latest collections, the desk book in
    Redis, the compliance timeline in the database; sampled on every trading refresh. With
    ``storage`` its reconciliation raises the ``reconciliation`` alerts."""
    def inputs() -> tuple[Collected | None, Collected | None, Collected | None]:
        if hot_path is None:
            return None, None, None
        return hot_path.positions, hot_path.exchange_balances, hot_path.custody

    def desk_book() -> DeskBook | None:
        if redis_client is None:
            return None
        from risk_monitor.adapters.redis_desk_book import read_desk_book

        return read_desk_book(redis_client, settings.trading.desk_book_key)

    compliance = None
    if engine is not None:
        from risk_monitor.adapters.sql.compliance_store import ComplianceStore

        compliance = ComplianceStore(engine).intervals
    raise_breaks = None
    if storage is not None:
        context = {"source": "service", "service": settings.service.service_name,
                   "instance_id": settings.instance_id, "use_case": "reconciliation"}

        def raise_breaks(outcome: Reconciliation, now: datetime) -> int:
            return trading_flow.raise_reconciliation_alerts(storage, settings, outcome,
                                                            now=now, context=context)

    dashboard = TradingDashboard(settings, control, provider, inputs=inputs,
                                 desk_book=desk_book, compliance=compliance,
                                 raise_breaks=raise_breaks)
    control.on_refresh.append(dashboard.sample)
    return dashboard
