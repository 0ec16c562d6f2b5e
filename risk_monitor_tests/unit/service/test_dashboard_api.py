"""The dashboard's JSON endpoints and the rules behind them (fail closed, worst first, escaping
is the page's job but the data must arrive verbatim). No servers: the in-memory provider, and
the storage layer on a SQLite file for the database-backed sections."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from risk_monitor.adapters.sql import ComplianceInterval, Storage, create_engine
from risk_monitor.adapters.sql.codec import to_jsonable
from risk_monitor.domain.engine import evaluate
from risk_monitor.domain.figures import EXPOSURE_GROSS_METRIC
from risk_monitor.domain.model import (
    LimitResult,
    LimitStatus,
    SourceKind,
    SourceStatus,
)
from risk_monitor.service.dashboard import Dashboard, dashboard_routes
from risk_monitor.service.dashboard_views import (
    UNAVAILABLE,
    DashboardState,
    TimelineView,
    display_status,
    timeline_series,
)
from risk_monitor.service.health import Readiness
from risk_monitor.service.rest import build_app
from risk_monitor.service.sql_state import DatabaseRiskView
from risk_monitor.service.state import NO_EVALUATION, LiveEvaluation
from risk_monitor_tests.fixtures.dashboard import (
    HOSTILE_ID,
    HOSTILE_SCOPE,
    dashboard_config,
    desk_snapshot,
    report_metrics,
    write_desk_state,
)
from risk_monitor_tests.fixtures.service import publish_evaluation

NOW = datetime(2025, 10, 20, 12, 0, tzinfo=UTC)


def result(limit_id: str, status: LimitStatus, value: float | None, *, at: datetime = NOW,
           scope: str = "portfolio", reason: str = "") -> LimitResult:
    return LimitResult(limit_id=limit_id, limit_kind="max_notional", scope=scope, status=status,
                       value=value, warn_level=80.0, breach_level=100.0,
                       utilisation=None if value is None else value / 100.0, as_of=at,
                       config_version="cfg-1", reason=reason)


def fresh_sources(at: datetime = NOW) -> list[SourceStatus]:
    return [SourceStatus(SourceKind.EXCHANGE, "binance", "main", True, at),
            SourceStatus(SourceKind.MARKET, "binance", "", True, at)]


def in_memory(results: list[LimitResult], *, at: datetime = NOW,
              sources: list[SourceStatus] | None = None) -> LiveEvaluation:
    state = LiveEvaluation(max_age_s=60.0)
    publish_evaluation(state, results, as_of=at, sources=sources or fresh_sources(at),
                       equity=1000.0, gross_exposure=2500.0, net_exposure=-100.0)
    return state


def dashboard(provider: Any, **kwargs: Any) -> Dashboard:
    return Dashboard.for_provider(provider, **kwargs)


# -- the header and fail-closed rules ---------------------------------------------------------------
def test_no_evaluation_is_unknown_and_stale() -> None:
    state = dashboard(LiveEvaluation()).state(NOW)
    assert state.header.status == "UNKNOWN" and state.header.display_status == "UNKNOWN"
    assert state.header.evaluation_source == NO_EVALUATION
    assert state.stale.stale and "no risk evaluation yet" in state.stale.reasons[0]
    assert state.limits == [] and state.header.as_of is None


def test_fresh_compliant_evaluation_shows_green_without_a_banner() -> None:
    provider = in_memory([result("a", LimitStatus.OK, 10.0), result("b", LimitStatus.OK, 50.0)])
    state = dashboard(provider).state(NOW + timedelta(seconds=5))
    assert (state.header.status, state.header.display_status) == ("COMPLIANT", "COMPLIANT")
    assert not state.stale.stale and state.stale.reasons == []
    assert state.header.data_age_s == 5.0
    assert state.header.evaluation_source == "in-memory"
    assert state.freshness_budget_s == 60.0
    assert state.exposures.equity_usd == 1000.0 and state.exposures.net_usd == -100.0


def test_old_evaluation_never_shows_green() -> None:
    provider = in_memory([result("a", LimitStatus.OK, 10.0)])
    state = dashboard(provider).state(NOW + timedelta(seconds=100))
    assert state.header.status == "COMPLIANT"
    assert state.header.display_status == "UNKNOWN"
    assert state.stale.stale
    assert state.stale.reasons[0] == "last evaluation is 100 s old (freshness budget 60 s)"


@pytest.mark.parametrize(("status", "stale", "shown"), [
    ("COMPLIANT", True, "UNKNOWN"), ("WARNING", True, "UNKNOWN"), ("BREACH", True, "BREACH"),
    ("UNKNOWN", True, "UNKNOWN"), ("COMPLIANT", False, "COMPLIANT"), ("WARNING", False, "WARNING"),
])
def test_display_status_fails_closed(status: str, stale: bool, shown: str) -> None:
    assert display_status(status, stale) == shown


def test_missing_and_stale_sources_are_reasons() -> None:
    sources = [SourceStatus(SourceKind.EXCHANGE, "binance", "main", True, NOW),
               SourceStatus(SourceKind.EXCHANGE, "okx", "main", False, NOW, error_code="RM201"),
               SourceStatus(SourceKind.CUSTODIAN, "fireblocks", "v1", True,
                            NOW - timedelta(minutes=5))]
    provider = in_memory([result("a", LimitStatus.OK, 10.0)], sources=sources)
    state = dashboard(provider).state(NOW)
    assert state.stale.reasons == ["source exchange:okx:main is missing (RM201)",
                                   "source custodian:fireblocks:v1 data is 5 min old"]
    assert state.header.display_status == "UNKNOWN"
    by_key = {s.key: s for s in state.sources}
    assert not by_key["exchange:okx:main"].ok and by_key["custodian:fireblocks:v1"].stale


def test_limits_come_worst_first_with_unknown_reasons() -> None:
    provider = in_memory([
        result("ok-high", LimitStatus.OK, 70.0), result("warn", LimitStatus.WARN, 85.0),
        result("ok-low", LimitStatus.OK, 5.0),
        result("blind", LimitStatus.UNKNOWN, None, reason="okx: source failed"),
        result("breach", LimitStatus.BREACH, 130.0),
    ])
    rows = dashboard(provider).state(NOW).limits
    assert [r.limit_id for r in rows] == ["breach", "blind", "warn", "ok-high", "ok-low"]
    blind = rows[1]
    assert blind.value is None and blind.utilisation is None
    assert blind.reason == "okx: source failed"
    assert rows[0].utilisation == pytest.approx(1.3) and rows[0].unit == "USD"


def test_unreadable_store_fails_closed_and_says_only_the_code(tmp_path: Path) -> None:
    """A database without our tables (never migrated) stands in for a broken store."""
    engine = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        state = dashboard(DatabaseRiskView(engine)).state(NOW)
        timeline = dashboard(DatabaseRiskView(engine)).timeline(NOW)
    finally:
        engine.dispose()
    assert state.header.evaluation_source == UNAVAILABLE
    assert state.header.display_status == "UNKNOWN"
    assert state.stale.stale
    assert re.fullmatch(r"cannot read risk state from the risk store \(RM\d{3}\)",
                        state.stale.reasons[0])
    assert not any("no such table" in r for r in state.stale.reasons)  # no raw driver text
    assert not state.alerts.available and not state.exposures.available
    assert not timeline.available and timeline.error


def test_an_in_memory_provider_shows_no_alerts_and_is_not_stale_for_it() -> None:
    state = Dashboard(LiveEvaluation()).state(NOW)
    assert not state.alerts.available and state.alerts.items == []
    assert not any("alerts" in r for r in state.stale.reasons)


# -- figures and the database-backed sections -------------------------------------------------------
def test_report_metrics_keep_unknown_figures_unknown() -> None:
    blind = {m.name + str(sorted(m.labels.items())): m.value
             for m in report_metrics(evaluate(desk_snapshot(NOW, failed=["okx"]),
                                              dashboard_config()))}
    assert blind["portfolio_equity_usd[]"] is None
    assert blind["portfolio_unrealized_pnl_usd[]"] is None  # okx positions are missing
    assert blind["exposure_gross_usd[('level', 'venue'), ('venue', 'okx')]"] is None
    assert blind["exposure_gross_usd[('level', 'venue'), ('venue', 'binance')]"] == 755_000.0
    full = {m.name: m.value for m in report_metrics(evaluate(desk_snapshot(NOW),
                                                             dashboard_config()))
            if not m.labels}
    assert full["portfolio_equity_usd"] == pytest.approx(2_481_000.0)
    assert full["portfolio_daily_pnl_usd"] == pytest.approx(2_481_000.0 - 2_600_000.0)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Storage]:
    storage = Storage.open(f"sqlite:///{tmp_path / 'dash.db'}", clock=lambda: NOW)
    yield storage
    storage.close()


def test_database_sections(sqlite_store: Storage, tmp_path: Path) -> None:
    written = write_desk_state(sqlite_store, NOW, clock=lambda: NOW + timedelta(seconds=1.5),
                               sink=tmp_path / "alerts.jsonl")
    dash = dashboard(DatabaseRiskView(sqlite_store.engine))
    state = dash.state(NOW + timedelta(seconds=2))

    assert state.header.status == "BREACH" and state.header.display_status == "BREACH"
    assert state.header.evaluation_source == "database"
    assert state.header.limit_config_version == written.report.config_version
    assert state.stale.reasons == ["source exchange:okx:main is missing (RM201)",
                                   "source market:okx: is missing (RM201)"]

    first, second = state.limits[0], state.limits[1]
    assert (first.limit_id, first.status, first.utilisation) == (
        "btc-binance-notional", "BREACH", pytest.approx(1.22))
    assert second.status == "UNKNOWN" and "okx" in second.reason
    hostile = next(r for r in state.limits if r.limit_id == HOSTILE_ID)
    assert hostile.scope == HOSTILE_SCOPE  # verbatim: escaping is the page's job

    venues = {r.key: r for r in state.exposures.venues}
    assert venues["binance"].gross_usd == 755_000.0 and venues["binance"].net_usd == 465_000.0
    assert venues["okx"].gross_usd is None  # blind venue: unknown, never 0
    assert [r.key for r in state.exposures.venues] == ["okx", "binance", "fireblocks"]
    assert state.exposures.equity_usd is None  # okx is missing: equity unknown
    assert {r.key for r in state.exposures.assets} == {"BTC", "ETH"}

    alerts = state.alerts
    assert written.notified == 3 and written.pending == 1
    assert alerts.available and alerts.pending == 1 and alerts.failed == 0
    assert alerts.items[0].limit_id == HOSTILE_ID and alerts.items[0].delivery == "pending"
    sent = [a for a in alerts.items if a.delivery == "sent"]
    assert {a.limit_id for a in sent} == {"btc-binance-notional", "venue-notional",
                                          "portfolio-gross"}
    assert all(a.notify_latency_s == pytest.approx(1.5) for a in sent)
    assert all(a.end_to_end_latency_s is not None and a.end_to_end_latency_s >= 1.5
               for a in sent)

    timeline = dash.timeline(NOW + timedelta(seconds=2))
    assert timeline.available
    btc = next(s for s in timeline.series if s.limit_id == "btc-binance-notional")
    assert [(s.status, s.open) for s in btc.segments] == [("OK", False), ("WARN", False),
                                                          ("BREACH", True)]
    assert btc.segments[0].start == NOW - timedelta(hours=20)
    assert btc.segments[1].end == NOW  # closed when BREACH opened


def test_an_unreadable_alert_feed_is_reported_without_blinding_the_status(
        sqlite_store: Storage) -> None:
    with sqlite_store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE outbox")
    provider = in_memory([result("a", LimitStatus.OK, 10.0)])
    state = Dashboard(provider, engine=sqlite_store.engine).state(NOW)
    assert state.header.display_status == "COMPLIANT"  # the limits are known and fresh
    assert state.stale.stale and not state.alerts.available
    assert re.fullmatch(r"cannot read alerts from the risk store \(RM\d{3}\)",
                        state.stale.reasons[0])


def test_exposures_ignore_malformed_labels(sqlite_store: Storage) -> None:
    from risk_monitor.domain.figures import MetricValue

    sqlite_store.risk_state.replace_metrics([
        MetricValue(EXPOSURE_GROSS_METRIC, 5.0, {"level": "venue"}),  # no venue label
        MetricValue(EXPOSURE_GROSS_METRIC, 7.0, {"level": "desk", "desk": "x"}),
        MetricValue(EXPOSURE_GROSS_METRIC, 9.0, {"level": "asset", "asset": "SOL"}),
    ], NOW)
    state = dashboard(DatabaseRiskView(sqlite_store.engine)).state(NOW)
    assert state.exposures.venues == []
    assert [(r.key, r.gross_usd, r.net_usd) for r in state.exposures.assets] == [
        ("SOL", 9.0, None)]


def test_timeline_clamps_to_the_window_and_open_ends_at_last_sighting() -> None:
    start, end = NOW - timedelta(hours=24), NOW

    def interval(status: LimitStatus, since_h: float, until_h: float | None,
                 seen_h: float) -> ComplianceInterval:
        return ComplianceInterval(
            limit_id="l", scope="portfolio", status=status,
            since=NOW - timedelta(hours=since_h),
            until=None if until_h is None else NOW - timedelta(hours=until_h),
            last_seen_at=NOW - timedelta(hours=seen_h), worst_utilisation=None,
            config_version="v")

    (series,) = timeline_series([interval(LimitStatus.OK, 30, 10, 10),
                                 interval(LimitStatus.BREACH, 10, None, 1)], start, end)
    assert [(s.status, s.start, s.end, s.open) for s in series.segments] == [
        ("OK", start, NOW - timedelta(hours=10), False),
        ("BREACH", NOW - timedelta(hours=10), NOW - timedelta(hours=1), True)]


# -- HTTP: routes, headers and the JSON shapes ------------------------------------------------------
def shape_of(cls: Any) -> Any:
    """The JSON keys a dataclass serialises to, recursively (lists: their item's shape)."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        out[f.name] = _shape_of_type(hints[f.name])
    return out


def _shape_of_type(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return shape_of(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        return [_shape_of_type(item)]
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _shape_of_type(inner[0]) if len(inner) == 1 else None
    return None


def keys_match(value: Any, shape: Any) -> None:
    if isinstance(shape, dict):
        assert isinstance(value, dict) and set(value) == set(shape), (value, shape)
        for key, sub in shape.items():
            keys_match(value[key], sub)
    elif isinstance(shape, list):
        assert isinstance(value, list)
        for item in value:
            keys_match(item, shape[0])


@pytest.fixture
def app(sqlite_store: Storage, tmp_path: Path) -> Starlette:
    write_desk_state(sqlite_store, NOW, clock=lambda: NOW + timedelta(seconds=1),
                     sink=tmp_path / "alerts.jsonl")
    dash = dashboard(DatabaseRiskView(sqlite_store.engine))
    return Starlette(routes=dashboard_routes(dash, clock=lambda: NOW + timedelta(seconds=3)))


async def get(app: Starlette, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as client:
        return await client.get(path)


async def test_state_and_timeline_json_have_the_documented_shapes(app: Starlette) -> None:
    state = await get(app, "/v1/dashboard/state")
    assert state.status_code == 200 and state.headers["cache-control"] == "no-store"
    body = state.json()
    keys_match(body, shape_of(DashboardState))
    assert body["header"]["display_status"] == "BREACH"
    assert body["generated_at"] == (NOW + timedelta(seconds=3)).isoformat()
    assert body["exposures"]["equity_usd"] is None  # unknown travels as null, not NaN
    timeline = await get(app, "/v1/dashboard/timeline?hours=24")
    assert timeline.status_code == 200
    keys_match(timeline.json(), shape_of(TimelineView))
    assert timeline.json()["series"]


@pytest.mark.parametrize("hours", ["abc", "0", "-1", "nan", "1000"])
async def test_timeline_rejects_a_bad_window(app: Starlette, hours: str) -> None:
    response = await get(app, f"/v1/dashboard/timeline?hours={hours}")
    assert response.status_code == 400 and "hours" in response.json()["error"]


async def test_page_and_assets_are_served_with_a_strict_policy(app: Starlette) -> None:
    for path in ("/", "/dashboard"):
        page = await get(app, path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        assert 'id="overall-status"' in page.text
        # air-gapped: nothing is loaded from another origin
        assert not re.search(r"(src|href)=\"(https?:)?//", page.text)
    script = await get(app, "/static/dashboard.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "innerHTML" not in script.text  # every value goes in as text
    css = await get(app, "/static/dashboard.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert (await get(app, "/static/../dashboard.py")).status_code == 404


async def test_build_app_mounts_the_dashboard() -> None:
    now = datetime.now(UTC)
    provider = in_memory([result("a", LimitStatus.OK, 10.0, at=now)], at=now)
    rest = build_app(Readiness({}), provider, identity={"service": "t", "instance_id": "i"},
                     config_status=lambda: {"version": "doc-7", "source": "file",
                                            "limits_version": "cfg-1"})
    page = await get(rest, "/")
    assert page.status_code == 200
    body = (await get(rest, "/v1/dashboard/state")).json()
    assert body["header"]["display_status"] == "COMPLIANT"
    assert body["header"]["config_document_version"] == "doc-7"
    assert body["header"]["config_source"] == "file"
    assert body["header"]["limits_version_in_force"] == "cfg-1"
    timeline = (await get(rest, "/v1/dashboard/timeline")).json()
    assert timeline["available"] is False  # no database store behind an in-memory provider


def test_as_json_turns_nan_into_null() -> None:
    assert to_jsonable({"x": float("nan"), "t": NOW}) == {"x": None, "t": NOW.isoformat()}
