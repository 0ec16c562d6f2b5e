"""The risk dashboard: one static page at ``/`` and ``/dashboard``, fed by JSON under
``/v1/dashboard/``.

The page is plain HTML/CSS/JS shipped in ``service/static`` (no CDN: desks run air-gapped) and
polls ``GET /v1/dashboard/state`` every few seconds and ``GET /v1/dashboard/timeline`` less
often, so it refreshes without reloading. Everything it shows comes from the
``RiskViewProvider`` the REST and gRPC APIs use (header, limits, sources) plus, when the
provider sits on the shared database, the storage layer's tables (exposure and P&L figures in
``risk_metrics_latest``, the outbox as the alert feed with delivery state and latency, the
compliance intervals for the 24 h timeline).

Fail closed: with no evaluation, an evaluation older than the freshness budget, a stale or
missing source, or a store that cannot be read, the answer carries ``stale.stale = true`` with
the reasons, and the status the page shows (``header.display_status``) is never COMPLIANT or
WARNING, only UNKNOWN (or BREACH, which stays visible: a breach we last saw is still a breach
until an evaluation says otherwise).
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from risk_monitor.adapters.errors import map_exception
from risk_monitor.adapters.sql.codec import to_jsonable
from risk_monitor.adapters.sql.compliance_store import ComplianceStore
from risk_monitor.adapters.sql.outbox import OutboxRepository
from risk_monitor.adapters.sql.risk_state import LatestEvaluationStore, StoredMetric
from risk_monitor.domain.model import LimitResult
from risk_monitor.platform.errors import RiskMonitorError
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.metrics import record_error
from risk_monitor.service.dashboard_views import (
    UNAVAILABLE,
    AlertsView,
    DashboardState,
    HeaderView,
    StaleView,
    TimelineView,
    age_text,
    alert_row_from_outbox,
    display_status,
    exposures_view,
    limit_rows,
    timeline_series,
)
from risk_monitor.service.sql_state import DatabaseRiskView
from risk_monitor.service.state import (
    NO_EVALUATION,
    LiveEvaluation,
    RiskView,
    RiskViewProvider,
)

log = get_logger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
PAGE = STATIC_DIR / "index.html"

#: how often the page polls the state endpoint (the timeline: every 30 s, dashboard.js)
REFRESH_INTERVAL_S = 3.0
DEFAULT_MAX_AGE_S = 60.0
ALERT_LIMIT = 50
TIMELINE_HOURS = 24.0
MAX_TIMELINE_HOURS = 24.0 * 7

_PAGE_HEADERS = {
    # the page loads only its own script and style and talks only to this origin
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_JSON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


@dataclass
class _Failures:
    """Which sections failed on the last poll, so an outage is logged once, not every poll."""

    failing: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def failed(self, section: str, error: RiskMonitorError) -> None:
        with self.lock:
            first = section not in self.failing
            self.failing.add(section)
        if first:
            record_error(error)
            log.warning("dashboard_section_unavailable", section=section,
                        error_code=error.code, error=str(error))

    def ok(self, section: str) -> None:
        with self.lock:
            if section not in self.failing:
                return
            self.failing.discard(section)
        log.info("dashboard_section_recovered", section=section)


class Dashboard:
    """Builds the dashboard's answers; every method takes ``now`` (the routes pass the clock).
    With ``engine`` (the shared database) it also reads the stored figures, the outbox and the
    compliance intervals."""

    def __init__(self, provider: RiskViewProvider, *, engine: Engine | None = None,
                 config_status: Callable[[], Mapping[str, Any] | None] = lambda: None,
                 max_age_s: float = DEFAULT_MAX_AGE_S) -> None:
        self.provider = provider
        self.metrics = LatestEvaluationStore(engine).metrics if engine is not None else None
        self.outbox = OutboxRepository(engine) if engine is not None else None
        self.compliance = ComplianceStore(engine) if engine is not None else None
        self.config_status = config_status
        self.max_age_s = max_age_s
        self._failures = _Failures()

    @classmethod
    def for_provider(cls, provider: RiskViewProvider, *,
                     config_status: Callable[[], Mapping[str, Any] | None] = lambda: None,
                     ) -> Dashboard:
        """The database when the provider reads the shared database; the provider's own
        freshness budget (``market_data.max_age_s``)."""
        engine = provider.engine if isinstance(provider, DatabaseRiskView) else None
        max_age_s = (provider.max_age_s if isinstance(provider, DatabaseRiskView | LiveEvaluation)
                     else DEFAULT_MAX_AGE_S)
        return cls(provider, engine=engine, config_status=config_status, max_age_s=max_age_s)

    def _attempt(self, section: str, fn: Callable[[], Any], reasons: list[str]) -> Any:
        """Run one read; on failure note why (the code, never the raw message) and go on."""
        try:
            value = fn()
        except Exception as exc:  # one unreadable section must not blank the others
            error = map_exception(exc, source=f"dashboard.{section}")
            self._failures.failed(section, error)
            reasons.append(f"cannot read {section} from the risk store ({error.code})")
            return None
        self._failures.ok(section)
        return value

    def state(self, now: datetime) -> DashboardState:
        reasons: list[str] = []
        view: RiskView | None = self._attempt("risk state",
                                              lambda: self.provider.risk_view(now), reasons)
        results: list[LimitResult] | None = None
        age: float | None = None
        if view is not None:
            results = self._attempt("limit results", self.provider.limit_results, reasons)
            age = max(0.0, (now - view.as_of).total_seconds()) if view.as_of else None
            if view.evaluation_source == NO_EVALUATION:
                reasons.insert(0, "no risk evaluation yet: nothing is known about the limits")
            elif age is None or age > self.max_age_s:
                shown = "unknown" if age is None else age_text(age)
                reasons.insert(0, f"last evaluation is {shown} old "
                                  f"(freshness budget {self.max_age_s:g} s)")
            for s in view.sources:
                if not s.ok:
                    code = f" ({s.error_code})" if s.error_code else ""
                    reasons.append(f"source {s.key} is missing{code}")
                elif s.stale:
                    reasons.append(f"source {s.key} data is {age_text(s.age_s)} old")
        config = self._config()
        status = view.status if view is not None else "UNKNOWN"
        # the risk picture is blind (status shown UNKNOWN) for every reason so far; a figure
        # or alert section that cannot be read only adds to the banner
        header = HeaderView(
            status=status, display_status=display_status(status, bool(reasons)),
            as_of=view.as_of if view else None, data_age_s=age,
            limit_config_version=(view.limit_config_version if view else "")
            or str(config.get("limits_version") or ""),
            limits_version_in_force=_opt_str(config.get("limits_version")),
            config_document_version=_opt_str(config.get("version")),
            config_source=_opt_str(config.get("source")),
            evaluation_source=view.evaluation_source if view else UNAVAILABLE,
            counts=dict(view.counts) if view else {})
        metrics: list[StoredMetric] = []
        if self.metrics is not None:
            metrics = self._attempt("exposures", self.metrics, reasons) or []
        alerts = self._alerts(reasons)
        return DashboardState(
            generated_at=now, freshness_budget_s=self.max_age_s,
            refresh_interval_s=REFRESH_INTERVAL_S, header=header,
            stale=StaleView(bool(reasons), reasons), limits=limit_rows(results or []),
            exposures=exposures_view(metrics, view), alerts=alerts,
            sources=list(view.sources) if view else [])

    def _alerts(self, reasons: list[str]) -> AlertsView:
        outbox = self.outbox
        found = None if outbox is None else self._attempt(
            "alerts", lambda: outbox.recent(ALERT_LIMIT), reasons)
        if found is None:  # no database (an in-memory provider holds no alerts) or unreadable
            return AlertsView(False, 0, 0, [])
        items = [alert_row_from_outbox(row, n) for row, n in found]
        pending = sum(1 for i in items if i.delivery in ("pending", "sending"))
        failed = sum(1 for i in items if i.delivery == "failed")
        suppressed = sum(1 for i in items if i.delivery == "suppressed")
        return AlertsView(True, pending, failed, items, suppressed)

    def timeline(self, now: datetime, hours: float = TIMELINE_HOURS) -> TimelineView:
        start = now - timedelta(hours=hours)
        store = self.compliance
        if store is None:
            return TimelineView(False, start, now, [],
                                error="the compliance timeline needs the database store")
        reasons: list[str] = []
        found = self._attempt("compliance timeline", lambda: store.intervals(start, now),
                              reasons)
        if found is None:
            return TimelineView(False, start, now, [], error=reasons[0])
        return TimelineView(True, start, now, timeline_series(found, start, now))

    def _config(self) -> Mapping[str, Any]:
        try:
            return self.config_status() or {}
        except Exception:  # configuration status is decoration here, never a reason to fail
            return {}


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


# -- routes -------------------------------------------------------------------------------------------
def dashboard_routes(dashboard: Dashboard, *,
                     clock: Callable[[], datetime] = lambda: datetime.now(UTC)
                     ) -> list[BaseRoute]:
    """``/``, ``/dashboard``, ``/static/*`` and the JSON endpoints, for ``rest.build_app``."""

    async def page(_: Request) -> Response:
        return FileResponse(PAGE, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    async def state(_: Request) -> JSONResponse:
        answer = await asyncio.to_thread(dashboard.state, clock())
        return JSONResponse(to_jsonable(answer), headers=_JSON_HEADERS)

    async def timeline(request: Request) -> JSONResponse:
        raw = request.query_params.get("hours", str(TIMELINE_HOURS))
        try:
            hours = float(raw)
        except ValueError:
            hours = math.nan
        if not (0 < hours <= MAX_TIMELINE_HOURS):
            return JSONResponse({"error": f"hours must be in (0, {MAX_TIMELINE_HOURS:g}]"},
                                status_code=400, headers=_JSON_HEADERS)
        answer = await asyncio.to_thread(dashboard.timeline, clock(), hours)
        return JSONResponse(to_jsonable(answer), headers=_JSON_HEADERS)

    return [
        Route("/", page, methods=["GET", "HEAD"]),
        Route("/dashboard", page, methods=["GET", "HEAD"]),
        Route("/v1/dashboard/state", state),
        Route("/v1/dashboard/timeline", timeline),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
