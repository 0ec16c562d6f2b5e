"""The service's hot path end to end: simulators (scenario ``limit_breach``, manual clock) →
ccxt / ccxt.pro / Fireblocks → the running service → PostgreSQL outbox → the Slack simulator.

No Dagster run is involved except in the test that runs one on purpose (both paths, one truth).
Each test starts settled: BTC on binance at ~60 % of its 1M notional limit, Slack empty.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from risk_monitor.service.proto import risk_monitor_pb2 as pb
from risk_monitor_tests.fixtures.hot_path import BTC, BTC_LIMIT, HotPathRig
from risk_monitor_tests.fixtures.service import wait_until

pytestmark = pytest.mark.integration

#: how long a test waits for the hot path to react; speed itself is measured in
#: bench/bench_hot_path_latency.py, tests assert order and delivery only
NOTICE_TIMEOUT_S = 60.0


def step_expecting(desk: HotPathRig, status: str) -> float:
    """Apply the scenario's next step, check it is the one expected to produce ``status`` for
    the BTC limit; return the wall time of the step."""
    at = time.time()
    record = desk.stack.player.step()
    assert record is not None
    assert record["expect"][BTC_LIMIT]["status"] == status, record["label"]
    return at


def next_notice(desk: HotPathRig, seen: int, *, after: float,
                timeout: float = NOTICE_TIMEOUT_S) -> dict[str, Any]:
    """The next Slack notice for the BTC limit (waits for it); with its delay since ``after``."""
    notices = wait_until(lambda: (found := desk.notices()) and len(found) > seen and found,
                         timeout=timeout, message=f"Slack notice #{seen + 1} for {BTC_LIMIT}")
    notice = dict(notices[seen])
    notice["delay_s"] = notice["received_at"] - after
    return notice


def evaluated_through(desk: HotPathRig, moment: float) -> None:
    """Wait (no fixed sleep) until the hot path completed two evaluations that started after
    ``moment`` (unix s): anything those would send is in the outbox then."""
    wait_until(lambda: time.time() > moment and desk.hot_path.evaluations, timeout=NOTICE_TIMEOUT_S,
               message=f"the clock past {moment}")
    start = desk.hot_path.evaluations
    wait_until(lambda: desk.hot_path.evaluations >= start + 2, timeout=NOTICE_TIMEOUT_S,
               message="two hot-path evaluations")


def order(quantity: float, side: pb.Side = pb.SIDE_BUY) -> pb.CheckOrderRequest:
    return pb.CheckOrderRequest(venue="binance", account="main", instrument=BTC, side=side,
                                quantity=quantity, client_order_id="hot-path-test")


def test_a_breach_is_posted_within_seconds_and_each_notice_once(desk: HotPathRig) -> None:
    step_expecting(desk, "OK")  # baseline, ~60 %
    warn_at = step_expecting(desk, "WARN")  # ~85 %
    warn = next_notice(desk, 0, after=warn_at)
    assert (warn["kind"], warn["status"]) == ("firing", "WARN")

    breach_at = step_expecting(desk, "BREACH")  # ~110 %
    breach = next_notice(desk, 1, after=breach_at)
    assert (breach["kind"], breach["status"]) == ("escalated", "BREACH")
    assert breach["correlation_id"] == warn["correlation_id"]  # one episode

    persists_at = step_expecting(desk, "BREACH")  # the breach persists: re-evaluated, silent
    evaluated_through(desk, persists_at + desk.settings.service.persist_interval_s)
    wait_until(desk.outbox_idle, timeout=NOTICE_TIMEOUT_S, message="outbox drained")
    assert len(desk.notices()) == 2  # periodic writes re-planned, nothing was sent

    resolve_at = step_expecting(desk, "OK")  # cut back to ~50 %
    resolved = next_notice(desk, 2, after=resolve_at)
    assert (resolved["kind"], resolved["status"]) == ("resolved", "OK")

    evaluated_through(desk, resolved["received_at"])  # a stray notice would be queued by now
    wait_until(desk.outbox_idle, timeout=NOTICE_TIMEOUT_S, message="outbox drained")
    assert [(n["kind"], n["status"]) for n in desk.notices()] == [
        ("firing", "WARN"), ("escalated", "BREACH"), ("resolved", "OK")]
    rows = desk.outbox(after_id=desk.baseline)
    assert [(row.kind, row.alert_status, row.status) for row, _ in rows] == [
        ("firing", "WARN", "sent"), ("escalated", "BREACH", "sent"), ("resolved", "OK", "sent")]
    for _row, note in rows:  # the hot path raised them: no Dagster run is involved
        assert note.context["source"] == "service"
        assert note.context["instance_id"] == desk.settings.instance_id
        # the scenario moves the position; a resolve held by keep_firing_for_s is raised
        # when the hold ends, by the periodic write
        # (the position may reach the evaluator through its poll or its private stream, in which
        # case the next tick on the moved position decides it)
        expected = ({"positions", "tick", "periodic"} if note.kind.value == "resolved"
                    else {"positions", "tick"})
        assert note.context["trigger"] in expected, (note.kind, note.context["trigger"])
    status = desk.stub.GetRiskStatus(pb.GetRiskStatusRequest(), timeout=30)
    assert status.evaluation_source == "in-memory"


def test_check_order_answers_from_live_positions_and_fails_closed(desk: HotPathRig) -> None:
    # binance holds 10 BTC at ~60k against a 1M notional limit (~60 %)
    big = desk.stub.CheckOrder(order(10.0), timeout=30)  # +600k -> ~120 %
    assert big.decision == pb.DECISION_DENY and not big.allowed
    assert big.evaluation_source == "in-memory"
    projected = {p.limit.limit_id: p for p in big.projected}
    btc = projected[BTC_LIMIT]
    assert btc.limit.status == pb.LIMIT_STATUS_BREACH
    assert btc.limit.utilisation == pytest.approx(1.2, abs=0.03)
    assert btc.current_utilisation == pytest.approx(0.6, abs=0.02)
    assert any(r.startswith(f"DENY {BTC_LIMIT}") for r in big.reasons), list(big.reasons)

    small = desk.stub.CheckOrder(order(0.01), timeout=30)
    assert small.decision == pb.DECISION_ALLOW and small.allowed, list(small.reasons)

    # binance's account endpoints fail: the next poll marks the venue failed -> UNKNOWN, deny
    desk.stack.venue("binance").faults.add("http_error", "/fapi/v3/*", status=500)
    denied = wait_until(
        lambda: (r := desk.stub.CheckOrder(order(0.01), timeout=30)).decision == pb.DECISION_DENY
        and r, timeout=NOTICE_TIMEOUT_S, message="CheckOrder denies once binance's positions fail")
    assert any(p.limit.status == pb.LIMIT_STATUS_UNKNOWN for p in denied.projected), \
        list(denied.reasons)
    status = desk.stub.GetRiskStatus(pb.GetRiskStatusRequest(), timeout=30)
    assert status.status == pb.COMPLIANCE_STATUS_UNKNOWN  # blind, never "compliant"
    binance = {s.source: s for s in status.sources}["exchange:binance:main"]
    assert not binance.ok and binance.error_code
    # the stored status follows the in-memory decision once the writer has committed it
    unknown = wait_until(
        lambda: (u := desk.limit()) is not None and u.status == pb.LIMIT_STATUS_UNKNOWN and u,
        timeout=NOTICE_TIMEOUT_S, message="the stored status turns UNKNOWN")
    assert "binance" in unknown.reason

    desk.stack.venue("binance").faults.clear()  # recovers by itself with the next polls
    wait_until(lambda: desk.stub.CheckOrder(order(0.01), timeout=30).allowed, timeout=NOTICE_TIMEOUT_S,
               message="CheckOrder allows again once binance answers")


def _run_risk_cycle() -> Any:
    import dagster as dg

    from risk_monitor.definitions import defs

    job = defs().resolve_job_def("risk_cycle")
    return job.execute_in_process(instance=dg.DagsterInstance.ephemeral())


def test_both_paths_evaluating_one_breach_notify_it_once(desk: HotPathRig,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A Dagster ``risk_cycle`` on the same database and Slack, racing the hot path over the same
    breach: the alert store's lock and "ignore older evaluations" leave one notice per change."""
    monkeypatch.setenv("RISK_MONITOR_CONFIG", str(desk.config_path))
    step_expecting(desk, "OK")
    warn_at = step_expecting(desk, "WARN")
    next_notice(desk, 0, after=warn_at)

    step_expecting(desk, "BREACH")
    result = _run_risk_cycle()  # starts at once: the hot path polls in parallel
    assert result.success
    dagster_view = {r.limit_id: r for r in result.output_for_node("limit_status")}
    assert dagster_view[BTC_LIMIT].status.value == "BREACH"  # Dagster saw the breach too
    breach = next_notice(desk, 1, after=warn_at)
    evaluated_through(desk, breach["received_at"])  # a stray notice would be queued by now
    wait_until(desk.outbox_idle, timeout=NOTICE_TIMEOUT_S, message="outbox drained")

    assert [(n["kind"], n["status"]) for n in desk.notices()] == [
        ("firing", "WARN"), ("escalated", "BREACH")]
    rows = desk.outbox(after_id=desk.baseline)
    assert [(row.kind, row.alert_status, row.status) for row, _ in rows] == [
        ("firing", "WARN", "sent"), ("escalated", "BREACH", "sent")]
    assert len({row.idempotency_key for row, _ in rows}) == 2


def test_readiness_and_metrics_show_the_hot_path(desk: HotPathRig) -> None:
    body = httpx.get(f"{desk.service.rest_url}/readyz", timeout=30).json()
    check = next(c for c in body["checks"] if c["name"] == "hot_path")
    assert check["ok"] and check["critical"]
    assert check["data"]["last_evaluation_age_s"] < desk.settings.service.hot_path_stale_s
    assert body["ready"] is True

    text = httpx.get(f"{desk.service.rest_url}/metrics", timeout=30).text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("risk_monitor_hot_path_evaluations_total", outcome="ok") > 0
    assert value("risk_monitor_hot_path_evaluation_seconds_count") > 0
    assert value("risk_monitor_hot_path_detection_latency_seconds_count", trigger="positions") > 0
    assert value("risk_monitor_hot_path_ticks_total", venue="binance") > 0
    last = value("risk_monitor_hot_path_last_evaluation_timestamp_seconds")
    assert time.time() - 30 < last <= time.time() + 1
    assert ("risk_monitor_hot_path_queue_depth", (("queue", "writer"),)) in samples
