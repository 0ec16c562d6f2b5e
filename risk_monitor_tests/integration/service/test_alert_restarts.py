"""No page without a real change: a real service (``ServiceApp``, the object ``risk-monitor
serve`` runs) restarted three times on one store during a calm scenario posts nothing to Slack;
and the warm-up grace hides no real failure: a source that answered and then fails pages
within the grace.

Each start begins blind (``service.hot_path_warmup_s: 0``: the first evaluation runs before any
source has answered, so every limit starts UNKNOWN, the issue's "15 critical UNKNOWN alerts
during warm-up"). The alert settings are the defaults: no override of the noise controls.
Simulators: scenario ``calm`` (BTC on binance at ~60 % of its limit), real PostgreSQL and Redis.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import grpc
import pytest

from risk_monitor.adapters.sql import Storage
from risk_monitor.domain.model import LimitStatus
from risk_monitor.platform.settings import AlertSettings, load_settings
from risk_monitor.service.proto import risk_monitor_pb2 as pb
from risk_monitor.service.proto import risk_monitor_pb2_grpc as pb_grpc
from risk_monitor_tests.fixtures.guards import clear_guards
from risk_monitor_tests.fixtures.hot_path import (
    BTC_LIMIT,
    COMPONENTS,
    settings_document,
    write_settings,
)
from risk_monitor_tests.fixtures.service import ServiceThread, wait_until
from risk_sim.launcher import SimulatorStack

pytestmark = pytest.mark.integration

TIMEOUT_S = 90.0


@pytest.fixture
def calm_stack() -> Iterator[SimulatorStack]:
    stack = SimulatorStack("calm", clock="manual", components=COMPONENTS, control=False)
    stack.start()
    saved = {name: os.environ.get(name) for name in stack.env()}
    os.environ.update(stack.env())
    clear_guards()
    try:
        yield stack
    finally:
        stack.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        clear_guards()


def _run_once(thread: ServiceThread, storage: Storage) -> int:
    """Start, wait until the calm desk is evaluated OK after this start with nothing left to
    deliver and no series firing or pending, stop. Returns the evaluations seen."""
    started = time.time()
    thread.start(timeout=TIMEOUT_S)
    try:
        app = thread.app
        assert app is not None and app.hot_path is not None
        hot_path = app.hot_path
        with grpc.insecure_channel(thread.grpc_target) as channel:
            stub = pb_grpc.RiskMonitorStub(channel)

            last: list[object] = []

            def settled() -> bool:
                reply = stub.ListLimitStatus(pb.ListLimitStatusRequest(), timeout=30)
                fresh = [e for e in reply.limits
                         if e.as_of.ToDatetime(tzinfo=UTC).timestamp() > started - 1]
                counts = storage.outbox.counts()
                states = storage.alerts.all_states()
                last[:] = [[(e.limit_id, e.scope, e.status, e.reason) for e in reply.limits],
                           len(fresh), [(s.limit_id, s.scope, s.status.value) for s in states
                                        if s.status is not LimitStatus.OK], counts]
                return any(e.limit_id == BTC_LIMIT for e in fresh) \
                    and all(e.status == pb.LIMIT_STATUS_OK for e in reply.limits) \
                    and all(s.status is LimitStatus.OK for s in states) \
                    and counts["pending"] == 0 and counts["sending"] == 0

            try:
                wait_until(settled, timeout=TIMEOUT_S, message="the calm desk evaluated OK")
            except BaseException as failed:  # pytest.fail: say what was not calm
                raise AssertionError(f"not calm; last seen: {last}") from failed
            seen = hot_path.evaluations
            wait_until(lambda: hot_path.evaluations >= seen + 2, timeout=TIMEOUT_S,
                       message="two more evaluations")  # anything they would send is queued
            return hot_path.evaluations
    finally:
        thread.stop()
        clear_guards()


def test_three_restarts_during_a_calm_scenario_post_nothing(
        calm_stack: SimulatorStack, fresh_postgres_url: str, redis_url: str, redis_prefix: str,
        tmp_path: Path) -> None:
    doc = settings_document(calm_stack, database_url=fresh_postgres_url, redis_url=redis_url,
                            prefix=redis_prefix, tmp=tmp_path,
                            service={"hot_path_warmup_s": 0.0})
    doc["alerts"] = {"dagster_ui_url": "http://127.0.0.1:3000"}  # the default noise controls
    settings = load_settings(write_settings(tmp_path / "risk-monitor.yaml", doc))
    defaults = AlertSettings()
    assert (settings.alerts.keep_firing_for_s, settings.alerts.unknown_for_s,
            settings.alerts.hysteresis) == (defaults.keep_firing_for_s, defaults.unknown_for_s,
                                            defaults.hysteresis)
    storage = Storage.open(fresh_postgres_url)
    try:
        evaluations = [_run_once(ServiceThread(settings), storage) for _ in range(4)]
        assert all(n >= 3 for n in evaluations), evaluations  # every start really evaluated
        states = storage.alerts.all_states()
        assert states, "the store holds the series across restarts"
        # the blind starts were recorded (an UNKNOWN opens an episode) and held, not paged
        assert max(s.episode for s in states) >= 1, states
        assert storage.outbox.counts() == {**storage.outbox.counts(), "pending": 0,
                                           "sending": 0}
        assert storage.outbox.rows(limit=1000) == []  # nothing was even queued
        assert calm_stack.slack is not None
        assert calm_stack.slack.messages == []
    finally:
        storage.close()


def test_a_source_that_fails_after_answering_pages_within_the_warm_up_grace(
        calm_stack: SimulatorStack, fresh_postgres_url: str, redis_url: str, redis_prefix: str,
        tmp_path: Path) -> None:
    grace_s = 600.0  # far longer than the test: a page inside it is not the grace's end
    doc = settings_document(calm_stack, database_url=fresh_postgres_url, redis_url=redis_url,
                            prefix=redis_prefix, tmp=tmp_path, service={"hot_path_warmup_s": 0.0})
    doc["alerts"] = {**doc["alerts"], "warmup_grace_s": grace_s}  # unknown_for_s at test speed
    settings = load_settings(write_settings(tmp_path / "risk-monitor.yaml", doc))
    storage = Storage.open(fresh_postgres_url)
    thread = ServiceThread(settings)
    started = time.time()
    thread.start(timeout=TIMEOUT_S)
    try:
        with grpc.insecure_channel(thread.grpc_target) as channel:
            stub = pb_grpc.RiskMonitorStub(channel)

            def calm() -> bool:  # every source answered, the desk is OK again after a blind start
                reply = stub.ListLimitStatus(pb.ListLimitStatusRequest(), timeout=30)
                return any(e.limit_id == BTC_LIMIT for e in reply.limits) \
                    and all(e.status == pb.LIMIT_STATUS_OK for e in reply.limits) \
                    and all(s.status is LimitStatus.OK for s in storage.alerts.all_states())

            wait_until(calm, timeout=TIMEOUT_S, message="the calm desk evaluated OK")
            assert max(s.episode for s in storage.alerts.all_states()) >= 1  # blind start held
            assert calm_stack.slack is not None and calm_stack.slack.messages == []

            calm_stack.venue("binance").faults.add("http_error", "/fapi/v3/*", status=500)

            def unknown_posts() -> list[dict[str, object]]:
                posts = [(m.get("params") or {}).get("metadata") or {}
                         for m in list(calm_stack.slack.messages)]
                return [p["event_payload"] for p in posts if isinstance(p, dict)
                        and (p.get("event_payload") or {}).get("status") == "UNKNOWN"]

            posted = wait_until(unknown_posts, timeout=TIMEOUT_S,
                              message="binance failing after answering is paged")
            assert time.time() - started < grace_s
            assert any("binance" in str(p.get("scope")) or p.get("limit_id") == BTC_LIMIT
                       for p in posted), posted
    finally:
        thread.stop()
        storage.close()
        clear_guards()
