"""The use cases against in-memory fakes of the ports (no server: the rules of the cycle).

The same functions run against PostgreSQL and SQLite in integration/; here they show what they
ask of a store: one lock for every series, a notification enqueued once, the audit sealed in
the same transaction, the evaluation and its sources kept for the API.
"""

from __future__ import annotations

from datetime import timedelta

from risk_monitor import application
from risk_monitor.domain.alerts import AlertPolicy
from risk_monitor.domain.engine import evaluate
from risk_monitor.domain.figures import EQUITY_METRIC, EquityPoint, MetricValue
from risk_monitor.domain.model import LimitStatus, NotificationKind, SourceKind, SourceStatus
from risk_monitor.platform.settings import load_settings
from risk_monitor.ports import RiskStore
from risk_monitor_tests.fakes import FakeEquityHistory, FakeRiskStore
from risk_monitor_tests.fixtures.storage import START, make_result
from risk_monitor_tests.unit.domain.builders import NOW, desk
from risk_monitor_tests.unit.domain.test_engine import DEFAULT

POLICY = AlertPolicy(resolve_missing=True)


def test_a_breach_notifies_once_and_is_sealed_in_its_transaction() -> None:
    store = FakeRiskStore()
    port: RiskStore = store  # the fake is the port (mypy checks it)
    breach = make_result("BREACH", START)

    first = application.raise_alerts(port, [breach], now=START, policy=POLICY,
                                     context={"run_id": "r1"})
    again = application.raise_alerts(port, [make_result("BREACH", START + timedelta(seconds=5))],
                                     now=START + timedelta(seconds=5), policy=POLICY,
                                     context={"run_id": "r2"})

    assert first.enqueued == 1 and again.enqueued == 0
    assert [n.kind for n in store.alerts.outbox] == [NotificationKind.FIRING]
    assert store.alerts.audit[0] == f"alert.firing:{store.alerts.outbox[0].idempotency_key}"
    assert store.alerts.states[breach.fingerprint].status is LimitStatus.BREACH


def test_a_series_no_longer_evaluated_is_locked_and_resolved() -> None:
    store = FakeRiskStore()
    gone = make_result("BREACH", START, limit_id="removed")
    application.raise_alerts(store, [gone], now=START, policy=POLICY, context={})
    later = START + timedelta(seconds=10)

    raised = application.raise_alerts(store, [make_result("OK", later)], now=later,
                                      policy=POLICY, context={})

    assert gone.fingerprint in store.alerts.locks[-1]  # the missing series is locked too
    assert [n.kind for n in raised.plan.notifications] == [NotificationKind.RESOLVED]


def test_an_evaluation_is_persisted_with_its_figures_sources_and_equity() -> None:
    store = FakeRiskStore()
    store.risk_state.metrics = [MetricValue("outbox_backlog", 3.0)]  # another writer's figure
    report = evaluate(desk(start_of_day_equity=2_481_000, peak_equity=2_481_000), DEFAULT)

    application.persist_evaluation(store, state=report.state, exposures=report.exposures,
                                   results=report.results, as_of=NOW)
    application.record_compliance(store, report.results)

    assert set(store.risk_state.results) == {r.fingerprint for r in report.results}
    figures = {m.name: m.value for m in store.risk_state.metrics if not m.labels}
    assert figures["outbox_backlog"] == 3.0  # not an evaluation figure: left alone
    assert figures[EQUITY_METRIC] == 2_481_000.0  # docs/risk-math.md worked example
    assert set(store.risk_state.sources) == {s.key for s in report.state.sources}
    assert [p.equity for p in store.equity.points] == [2_481_000.0]
    assert store.compliance.recorded == [list(report.results)]


def test_start_of_day_and_peak_equity_come_from_the_history() -> None:
    history = FakeEquityHistory([
        EquityPoint("portfolio", START.replace(hour=0, minute=5), 100.0),
        EquityPoint("portfolio", START - timedelta(days=3), 250.0),
        EquityPoint("portfolio", START.replace(hour=8), 120.0)])
    store = FakeRiskStore(equity=history)
    desk_now = desk(now=START)
    snapshot = application.build_snapshot(
        positions=desk_now.positions, balances=desk_now.balances, prices=desk_now.prices,
        now=START, settings=load_settings(), storage=store)

    assert (snapshot.start_of_day_equity, snapshot.peak_equity) == (100.0, 250.0)


def test_source_budgets_follow_each_kind() -> None:
    md = load_settings().market_data
    budgets = application.source_budgets(load_settings())
    assert budgets == {SourceKind.MARKET: md.max_age_s, SourceKind.EXCHANGE: md.exchange_max_age_s,
                       SourceKind.CUSTODIAN: md.custody_max_age_s}
    assert SourceStatus(SourceKind.MARKET, "v", "*", True, START).key == "market:v:*"
