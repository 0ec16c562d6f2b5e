"""The DB-backed collector: parses as Prometheus text and reports what the store holds."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from risk_monitor.adapters.file_sink import FileSink
from risk_monitor.adapters.prometheus import StoredMetricsCollector
from risk_monitor.adapters.sql import MetricValue, OutboxDispatcher, Storage, create_engine
from risk_monitor.domain.model import SourceKind, SourceStatus
from risk_monitor_tests.fixtures.storage import FakeClock, evaluate, make_result


def _scrape(storage_engine: object, clock: FakeClock) -> dict[str, list[Sample]]:
    registry = CollectorRegistry()
    registry.register(StoredMetricsCollector(storage_engine, clock=clock))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def _value(samples: list[Sample], name: str | None = None, **labels: str) -> float:
    found = [s.value for s in samples
             if s.labels == labels and (name is None or s.name == name)]
    assert len(found) == 1, (labels, samples)
    return found[0]


def test_collector_reports_the_stored_risk_picture(storage: Storage, clock: FakeClock,
                                                   tmp_path: object) -> None:
    t0 = clock()
    breach = make_result("BREACH", t0, value=1234.0, source_lag_s=1.5)
    unknown = make_result("UNKNOWN", t0, scope="venue:okx")
    storage.risk_state.upsert_limit_results([breach, unknown])
    storage.compliance.record([breach, unknown])
    storage.risk_state.replace_metrics(
        [MetricValue("exposure_usd", 1234.0, {"venue": "binance", "asset": "BTC"}),
         MetricValue("pnl_usd", -12.5, {"scope": "portfolio"})], t0)
    storage.risk_state.record_sources(
        [SourceStatus(SourceKind.EXCHANGE, "binance", "main", ok=True, as_of=t0, rows=2)])
    evaluate(storage, breach)
    evaluate(storage, unknown)
    clock.advance(2)
    sink = FileSink(tmp_path / "alerts.jsonl", clock=clock)  # type: ignore[operator]
    # deliver only the portfolio alert: the other one stays pending
    dispatcher = OutboxDispatcher(storage.engine, sink, clock=clock)
    entries = dispatcher.repository.claim(10, clock(), 60)
    portfolio = next(e for e in entries if e.notification.scope == "portfolio")
    dispatcher.repository.mark_sent(portfolio, "file:x:0", clock(), thread_root=True)
    dispatcher.repository.release([e for e in entries if e is not portfolio], None)
    clock.advance(8)

    m = _scrape(storage.engine, clock)
    labels = {"limit_id": "max_notional", "limit_kind": "max_notional", "scope": "portfolio"}
    assert _value(m["risk_monitor_limit_utilisation"], **labels) == 1.234
    assert math.isnan(_value(m["risk_monitor_limit_utilisation"],
                             **{**labels, "scope": "venue:okx"}))
    status = m["risk_monitor_limit_status"]
    assert _value(status, limit_id="max_notional", scope="portfolio", status="BREACH") == 1
    assert _value(status, limit_id="max_notional", scope="portfolio", status="OK") == 0
    assert _value(m["risk_monitor_compliance_status"], status="BREACH") == 1
    assert _value(m["risk_monitor_limits_in_status"], status="UNKNOWN") == 1
    assert _value(m["risk_monitor_exposure_usd"], venue="binance", asset="BTC") == 1234.0
    assert _value(m["risk_monitor_pnl_usd"], scope="portfolio") == -12.5
    assert _value(m["risk_monitor_source_last_fetch_ok"], kind="exchange", venue="binance",
                  account="main") == 1
    assert _value(m["risk_monitor_data_age_seconds"], kind="exchange", venue="binance",
                  account="main") == 10

    alerts = m["risk_monitor_alerts"]
    assert _value(alerts, "risk_monitor_alerts_total", severity="critical",
                  outcome="raised") == 2
    assert _value(alerts, "risk_monitor_alerts_total", severity="critical",
                  outcome="notified") == 1
    assert _value(alerts, "risk_monitor_alerts_total", severity="warning", outcome="raised") == 0
    assert _value(m["risk_monitor_outbox_pending"]) == 1
    assert _value(m["risk_monitor_outbox_oldest_pending_age_seconds"]) == 10

    latency = m["risk_monitor_alert_latency_seconds"]
    hist = "risk_monitor_alert_latency_seconds"
    assert _value(latency, f"{hist}_count", stage="detect") == 2
    # 1.5 s and 0.5 s lags (SQLite's julianday arithmetic is exact to ~0.1 ms)
    assert _value(latency, f"{hist}_sum", stage="detect") == pytest.approx(2.0, abs=1e-3)
    assert _value(latency, f"{hist}_bucket", stage="detect", le="0.25") == 0
    assert _value(latency, f"{hist}_bucket", stage="detect", le="1.0") == 1
    assert _value(latency, f"{hist}_bucket", stage="detect", le="2.5") == 2
    assert _value(latency, f"{hist}_count", stage="notify") == 1
    assert _value(latency, f"{hist}_sum", stage="notify") == pytest.approx(2.0, abs=1e-3)
    assert _value(latency, f"{hist}_sum", stage="end_to_end") == pytest.approx(3.5, abs=1e-3)
    assert _value(latency, f"{hist}_bucket", stage="end_to_end", le="+Inf") == 1
    assert _value(m["risk_monitor_state_store_up"]) == 1
    assert clock() - t0 == timedelta(seconds=10)


def test_an_unreachable_store_is_reported_not_raised(clock: FakeClock) -> None:
    engine = create_engine("postgresql+psycopg2://postgres@127.0.0.1:1/nothing")
    try:
        m = _scrape(engine, clock)
    finally:
        engine.dispose()
    assert _value(m["risk_monitor_state_store_up"]) == 0
    assert "risk_monitor_limit_utilisation" not in m
