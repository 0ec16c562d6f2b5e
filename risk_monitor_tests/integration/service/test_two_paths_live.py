"""Both evaluation paths, live: a running service and real Dagster ``risk_cycle`` runs read the
limit document from the configuration service (simulator over HTTP) and PostgreSQL.

1. the configuration service publishes a document: the service and a run evaluate its version;
2. the configuration service goes down: both keep that last good version (no silent fallback
   to the packaged file);
3. it publishes a document identical to the packaged file: the service becomes ready with it,
   and a run uses the same version.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
import yaml

from risk_monitor.adapters.config_service import SERVICE_SOURCES, SOURCE_SERVICE, SOURCE_STORE
from risk_monitor.domain.limits import LimitConfig
from risk_monitor.domain.model import LimitResult
from risk_monitor.platform.settings import load_settings
from risk_monitor_tests.fixtures.service import (
    ServiceThread,
    desk_limits,
    service_settings,
    wait_until,
)
from risk_sim.config_service import ConfigServiceSimulator

pytestmark = pytest.mark.integration

FAST = {"timeout_s": 2.0, "max_attempts": 1, "backoff_initial_s": 0.05, "backoff_max_s": 0.2}


@pytest.fixture
def sim() -> Iterator[ConfigServiceSimulator]:
    simulator = ConfigServiceSimulator().start()
    yield simulator
    simulator.stop()


def risk_cycle(*, assets: list[str] | None = None) -> dg.ExecuteInProcessResult:
    """One real ``risk_cycle`` run in-process (settings from RISK_MONITOR_CONFIG)."""
    from risk_monitor.definitions import defs

    job = defs().resolve_job_def("risk_cycle")
    selection = [dg.AssetKey(a) for a in assets] if assets else None
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False,
                                        asset_selection=selection)
    assert result.success, [str(e.message) for e in result.all_events if e.is_failure]
    return result


def run_version(result: dg.ExecuteInProcessResult) -> tuple[str, str]:
    """(source, version) of the limits a run used, from its limit_config materialisation."""
    config: LimitConfig = result.output_for_node("limit_config")
    event = result.asset_materializations_for_node("limit_config")[0]
    return str(event.metadata["source"].value), config.version


def evaluated_versions(result: dg.ExecuteInProcessResult) -> set[str]:
    results: list[LimitResult] = result.output_for_node("limit_status")
    assert results
    return {r.config_version for r in results}


def readyz(service: ServiceThread) -> tuple[int, dict[str, Any]]:
    answer = httpx.get(f"{service.rest_url}/readyz", timeout=5.0)
    return answer.status_code, answer.json()


def test_service_and_runs_evaluate_one_version_through_an_outage_and_a_packaged_document(
        sim: ConfigServiceSimulator, fresh_postgres_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    component = f"live-{uuid.uuid4().hex[:8]}"
    packaged_file = load_settings(None).effective_limits_file
    config_service = {"enabled": True, "component": component, "url": sim.url,
                      "poll_timeout_s": 1.0}
    # the run: its own data directory (no shared disk cache), the shared store
    run_settings = tmp_path / "run.yaml"
    run_settings.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "run"), "database_url": fresh_postgres_url,
        "limits_file": str(packaged_file), "config_service": config_service,
        "resilience": FAST}))
    monkeypatch.setenv("RISK_MONITOR_CONFIG", str(run_settings))
    monkeypatch.setenv("RISK_MONITOR_DATABASE_URL", fresh_postgres_url)

    published = sim.publish(component, {"limits": desk_limits(btc_breach=2e6, btc_warn=1.5e6)})
    service = ServiceThread(service_settings(
        database_url=fresh_postgres_url, redis_url=None, tmp=tmp_path / "service",
        limits_file=packaged_file, config_service=config_service, resilience=FAST)).start()
    try:
        assert service.app is not None
        app = service.app

        # 1. the service and a run evaluate the published version
        wait_until(lambda: readyz(service)[0] == 200, timeout=30, message="service ready")
        agreed = app.config_status()["limits_version"]
        assert app.config_status()["source"] == SOURCE_SERVICE and published
        first = risk_cycle()
        assert run_version(first) == (SOURCE_SERVICE, agreed)
        assert evaluated_versions(first) == {agreed}

        # 2. the configuration service goes down: both keep the same last good version
        outage = sim.faults.add("http_error", "*", status=503)
        wait_until(lambda: not app.config_status()["service_connected"], timeout=30,
                   message="the service notices the outage")
        during = risk_cycle()
        assert run_version(during) == (SOURCE_STORE, agreed)
        assert evaluated_versions(during) == {agreed}
        status = app.config_status()
        assert (status["limits_version"], status["source"] in SERVICE_SOURCES) == (agreed, True)

        # 3. it comes back with a document identical to the packaged file: a valid document
        sim.faults.remove(outage.id)
        sim.publish(component, {"limits": yaml.safe_load(packaged_file.read_text())})
        wait_until(lambda: app.config_status()["limits_version"] not in (None, agreed),
                   timeout=30, message="the service applies the packaged document")
        code, body = wait_until(lambda: (r := readyz(service))[0] == 200 and r, timeout=30,
                                message="service ready on the packaged document")
        packaged = body["config"]["limits_version"]
        assert (code, body["config"]["source"], body["config"]["service_synced"]) == \
            (200, SOURCE_SERVICE, True)
        after = risk_cycle(assets=["limit_config"])
        assert run_version(after) == (SOURCE_SERVICE, packaged)
    finally:
        service.stop()
