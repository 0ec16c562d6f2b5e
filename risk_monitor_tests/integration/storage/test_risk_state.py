"""Latest limit results, metric snapshots, sources, compliance, equity, limit versions, audit."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from risk_monitor.adapters.sql import EquityPoint, MetricValue, Storage
from risk_monitor.adapters.sql.audit_verify import verify
from risk_monitor.domain.model import LimitStatus, SourceKind, SourceStatus
from risk_monitor.platform.errors import DataValidationError
from risk_monitor_tests.fixtures.storage import FakeClock, make_result, open_intervals


def test_limit_results_only_move_forward(storage: Storage, clock: FakeClock) -> None:
    t0 = clock()
    newer = make_result("BREACH", t0 + timedelta(seconds=10))
    older = make_result("OK", t0)
    other = make_result("WARN", t0, scope="venue:okx")
    assert storage.risk_state.upsert_limit_results([newer, other]) == 2
    assert storage.risk_state.upsert_limit_results([older]) == 0  # a slow writer loses
    stored = {r.scope: r for r in storage.risk_state.limit_results()}
    assert stored["portfolio"] == newer
    assert stored["venue:okx"] == other


def test_a_full_evaluation_prunes_limits_no_longer_configured(storage: Storage,
                                                              clock: FakeClock) -> None:
    t0 = clock()
    storage.risk_state.upsert_limit_results([make_result("OK", t0),
                                             make_result("OK", t0, scope="venue:gone")])
    t1 = t0 + timedelta(minutes=1)
    storage.risk_state.upsert_limit_results([make_result("WARN", t1)], prune_before=t1)
    assert [r.scope for r in storage.risk_state.limit_results()] == ["portfolio"]


def test_results_keep_their_values_whatever_the_backend_s_encoding(storage: Storage,
                                                                  clock: FakeClock) -> None:
    """Every row of one call in one document on PostgreSQL: unknown figures stay unknown, a
    time in another zone is the same instant, a key given twice keeps its newest result, and
    the prune spares the document's rows only."""
    t0 = clock()
    storage.risk_state.upsert_limit_results([make_result("OK", t0, scope="venue:gone")])
    later = t0 + timedelta(seconds=30)
    plus2 = timezone(timedelta(hours=2))
    odd = dataclasses.replace(make_result("UNKNOWN", later), warn_level=float("nan"),
                              utilisation=float("inf"), value=None, reason='a "quoted" \\ ü',
                              source_event_time=later.astimezone(plus2))
    zero = dataclasses.replace(make_result("OK", later, scope="venue:okx"), value=-0.0,
                               utilisation=-0.0)
    older = make_result("BREACH", t0, scope="venue:okx")  # the same key, older: it loses
    assert storage.risk_state.upsert_limit_results([odd, zero, older], prune_before=later) == 2
    stored = {r.scope: r for r in storage.risk_state.limit_results()}
    assert set(stored) == {"portfolio", "venue:okx"}  # venue:gone pruned
    assert stored["portfolio"] == dataclasses.replace(odd, warn_level=None, utilisation=None)
    assert stored["portfolio"].source_event_time == later  # same instant, read back in UTC
    assert stored["venue:okx"] == zero
    with pytest.raises(DataValidationError, match="naive"):
        storage.risk_state.upsert_limit_results([make_result("OK", later.replace(tzinfo=None))])


def test_a_metrics_snapshot_replaces_the_previous_one(storage: Storage, clock: FakeClock) -> None:
    first = [MetricValue("exposure_usd", 100.0, {"venue": "binance", "asset": "BTC"}),
             MetricValue("exposure_usd", 50.0, {"venue": "okx", "asset": "ETH"}),
             MetricValue("pnl_usd", -5.0, {"scope": "portfolio"})]
    storage.risk_state.replace_metrics(first, clock())
    second = [MetricValue("exposure_usd", 120.0, {"venue": "binance", "asset": "BTC"})]
    storage.risk_state.replace_metrics(second, clock.advance(5), names=["exposure_usd"])
    stored = {(m.name, tuple(sorted(m.labels.items()))): m.value
              for m in storage.risk_state.metrics()}
    assert stored == {("exposure_usd", (("asset", "BTC"), ("venue", "binance"))): 120.0,
                      ("pnl_usd", (("scope", "portfolio"),)): -5.0}
    storage.risk_state.replace_metrics([MetricValue("equity_usd", float("nan"))], clock())
    (only,) = storage.risk_state.metrics()
    assert only.name == "equity_usd" and only.value is None  # unknown stays unknown


def test_metric_names_must_be_prometheus_names() -> None:
    with pytest.raises(ValueError):
        MetricValue("exposure-usd", 1.0)
    with pytest.raises(ValueError):
        MetricValue("exposure_usd", 1.0, {"__name__": "x"})


def test_sources_keep_the_time_of_their_last_success(storage: Storage, clock: FakeClock) -> None:
    t0 = clock()
    ok = SourceStatus(SourceKind.EXCHANGE, "binance", "main", ok=True, as_of=t0, rows=3)
    failed = dataclasses.replace(ok, ok=False, as_of=t0 + timedelta(seconds=30), rows=0,
                                 error_code="RM201", error="timeout")
    storage.risk_state.record_sources([ok])
    storage.risk_state.record_sources([failed])
    (source,) = storage.risk_state.sources()
    assert (source.ok, source.last_ok_at, source.as_of, source.error_code) == (
        False, t0, t0 + timedelta(seconds=30), "RM201")


def test_compliance_intervals_follow_status_changes(storage: Storage, clock: FakeClock) -> None:
    t0 = clock()
    timeline = [("OK", 0), ("OK", 600), ("WARN", 3600), ("BREACH", 5400), ("BREACH", 6000),
                ("OK", 7200)]
    for status, offset in timeline:
        storage.compliance.record([make_result(status, t0 + timedelta(seconds=offset))])
    storage.compliance.record([make_result("BREACH", t0 + timedelta(seconds=100))])  # stale
    storage.compliance.record([make_result("WARN", t0 + timedelta(seconds=60),
                                           scope="venue:okx")])

    window_end = t0 + timedelta(seconds=9000)
    spent = storage.compliance.time_in_status(t0 - timedelta(hours=1), window_end)
    assert spent[("max_notional", "portfolio")] == {
        LimitStatus.OK: 3600 + 1800, LimitStatus.WARN: 1800, LimitStatus.BREACH: 1800,
        LimitStatus.UNKNOWN: 0}
    assert spent[("max_notional", "venue:okx")][LimitStatus.WARN] == 9000 - 60

    assert sorted(i.status.value for i in open_intervals(storage)) == ["OK", "WARN"]
    breach = [i for i in storage.compliance.intervals(t0, window_end)
              if i.status is LimitStatus.BREACH]
    assert len(breach) == 1 and breach[0].worst_utilisation == pytest.approx(1.2)
    assert breach[0].until == t0 + timedelta(seconds=7200)
    assert len(open_intervals(storage)) == 2


def test_one_step_updates_every_series_it_sees(storage: Storage, clock: FakeClock) -> None:
    """Several open intervals updated in one step (one statement on PostgreSQL): each keeps
    its own last sighting, worst utilisation, and closes on its own change."""
    t0 = clock()
    scopes = ["portfolio", "venue:okx", "venue:binance"]
    storage.compliance.record([make_result("WARN", t0, scope=s) for s in scopes])
    storage.compliance.record([
        make_result("WARN", t0 + timedelta(seconds=5), scope="portfolio", value=900.0),
        make_result("WARN", t0 + timedelta(seconds=6), scope="venue:okx", value=820.0),
        make_result("BREACH", t0 + timedelta(seconds=7), scope="venue:binance")])
    found = {(i.scope, i.status.value): i for i in storage.compliance.intervals(
        t0, t0 + timedelta(seconds=60))}
    assert found[("portfolio", "WARN")].last_seen_at == t0 + timedelta(seconds=5)
    assert found[("portfolio", "WARN")].worst_utilisation == pytest.approx(0.9)
    assert found[("venue:okx", "WARN")].last_seen_at == t0 + timedelta(seconds=6)
    assert found[("venue:okx", "WARN")].worst_utilisation == pytest.approx(0.85)
    assert found[("venue:okx", "WARN")].until is None
    assert found[("venue:binance", "WARN")].until == t0 + timedelta(seconds=7)
    assert found[("venue:binance", "BREACH")].until is None
    assert sorted((i.scope, i.status.value) for i in open_intervals(storage)) == [
        ("portfolio", "WARN"), ("venue:binance", "BREACH"), ("venue:okx", "WARN")]
    assert verify(storage.engine).ok  # the closed interval's seal matches what was written


def test_a_step_of_some_series_leaves_the_others_of_their_limit_alone(
        storage: Storage, clock: FakeClock) -> None:
    """A periodic chunk reads and writes the open intervals of its own series only."""
    t0 = clock()
    scopes = [f"venue:v{i}" for i in range(6)]
    storage.compliance.record([make_result("OK", t0, scope=s) for s in scopes])
    later = t0 + timedelta(seconds=5)
    storage.compliance.record([make_result("OK", later, scope=s) for s in scopes[:2]])
    seen = {i.scope: i.last_seen_at for i in open_intervals(storage)}
    assert seen == {s: later if s in scopes[:2] else t0 for s in scopes}


def test_no_evaluation_yet_has_no_timeline(storage: Storage) -> None:
    assert open_intervals(storage) == []  # desk_status([]) is UNKNOWN


def test_equity_start_of_day_and_peak(storage: Storage) -> None:
    day = date(2026, 3, 2)
    midnight = datetime(2026, 3, 2, tzinfo=UTC)
    points = [EquityPoint("portfolio", midnight - timedelta(minutes=1), 1000.0),
              EquityPoint("portfolio", midnight + timedelta(hours=1), 1100.0),
              EquityPoint("portfolio", midnight + timedelta(hours=2), 1050.0),
              EquityPoint("venue:okx", midnight + timedelta(hours=3), 10.0)]
    storage.equity.record(points)
    sod = storage.equity.start_of_day("portfolio", day)
    assert sod is not None and sod.equity == 1000.0
    late_start = storage.equity.start_of_day("venue:okx", day)
    assert late_start is not None and late_start.equity == 10.0  # first sighting that day
    assert storage.equity.start_of_day("venue:okx", date(2026, 3, 1)) is None
    peak = storage.equity.peak("portfolio")
    assert peak is not None and peak.equity == 1100.0


def test_limit_versions_keep_their_document_and_their_last_application(
        storage: Storage, clock: FakeClock) -> None:
    document = {"limits": [{"id": "max_notional", "breach": 1000}]}
    assert storage.config_versions.record("v1", document, source="file", applied_at=clock())
    storage.config_versions.record("v2", {"limits": []}, source="service",
                                   applied_at=clock.advance(60))
    assert [v.version for v in storage.config_versions.history()] == ["v2", "v1"]
    # the service publishes the file's document: same version, now the newest, from the service
    assert not storage.config_versions.record("v1", {"limits": ["ignored"]}, source="service",
                                              applied_at=clock.advance(60))
    stored = storage.config_versions.get("v1")
    assert stored is not None and stored.source == "service" and stored.document == document
    assert [v.version for v in storage.config_versions.history()] == ["v1", "v2"]


def test_the_audit_log_links_an_alert_to_its_run_and_redacts(storage: Storage,
                                                             clock: FakeClock) -> None:
    storage.audit.record("alert.raised", clock(), "corr-1", {
        "run_id": "run-42", "config_version": "v1",
        "data_versions": {"market_prices": "abc"}, "api_key": "should-not-be-stored"})
    storage.audit.record("alert.notified", clock.advance(1), "corr-1", {"ref": "C1:1"},
                         run_id="run-42")
    records = storage.audit.by_correlation("corr-1")
    assert [r.event for r in records] == ["alert.raised", "alert.notified"]
    assert records[0].run_id == "run-42"
    assert records[0].payload["data_versions"] == {"market_prices": "abc"}
    assert records[0].payload["api_key"] == "***"
    assert records[0].payload["code_version"]
    assert [r.event for r in storage.audit.by_run("run-42")] == ["alert.raised",
                                                                 "alert.notified"]
    assert storage.audit.recent(1)[0].event == "alert.notified"
