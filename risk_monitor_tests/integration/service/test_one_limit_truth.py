"""Both paths read the same limit document: the service's and the Dagster runs' one
provider, against the real configuration service (simulator over HTTP) and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from risk_monitor.adapters.config_service import (
    SERVICE_SOURCES,
    SOURCE_FILE,
    SOURCE_SERVICE,
    SOURCE_STORE,
    ConfigState,
)
from risk_monitor.adapters.limit_provider import LimitConfigProvider
from risk_monitor.adapters.sql import Storage
from risk_monitor.bootstrap import Runtime
from risk_monitor.platform.settings import ResilienceSettings, Settings, load_settings
from risk_monitor_tests.fixtures.service import desk_limits, free_port
from risk_sim.config_service import ConfigServiceSimulator

pytestmark = pytest.mark.integration

FAST = ResilienceSettings(timeout_s=2.0, max_attempts=1, backoff_initial_s=0.05,
                          backoff_max_s=0.2)


@pytest.fixture(scope="module")
def sim() -> Iterator[ConfigServiceSimulator]:
    simulator = ConfigServiceSimulator().start()
    yield simulator
    simulator.stop()


def settings(url: str, component: str, tmp_path: Path) -> Settings:
    return load_settings(None, data_dir=tmp_path, resilience=FAST.model_dump(), config_service={
        "enabled": True, "component": component, "url": url, "poll_timeout_s": 1.0})


def provider(cfg: Settings, storage: Storage) -> LimitConfigProvider:
    """A Dagster run's limit provider, wired as the composition root wires it."""
    return Runtime(cfg).limits(storage)


async def service_view(cfg: Settings, storage: Storage) -> ConfigState:
    """What ``risk-monitor serve`` applies at start: the same provider, with its refresh loop."""
    limits = Runtime(cfg).limits(storage)
    await limits.start()
    await limits.stop()
    return limits.state


async def test_service_and_runs_share_one_document_through_an_outage(
        sim: ConfigServiceSimulator, pg_storage: Storage, tmp_path: Path) -> None:
    component = f"truth-{uuid.uuid4().hex[:8]}"
    dead = f"http://127.0.0.1:{free_port()}"
    up, down = settings(sim.url, component, tmp_path), settings(dead, component, tmp_path)

    # nothing known and the service down: both fail closed, neither uses the file's levels
    blind = await service_view(down, pg_storage)
    run = provider(down, pg_storage).current()
    assert blind.current is not None and blind.current.limits.unavailable
    assert not blind.service_synced
    assert run.source == SOURCE_FILE and run.config.unavailable
    assert pg_storage.config_versions.history() == []  # an untrusted file is nobody's last good

    # the service publishes: the service and a run evaluate the same version
    sim.publish(component, {"limits": desk_limits(btc_breach=2e6, btc_warn=1.5e6)})
    live = await service_view(up, pg_storage)
    run = provider(up, pg_storage).current()
    assert live.current is not None and live.current.source == SOURCE_SERVICE
    assert not live.current.limits.unavailable
    assert (run.source, run.config.version) == (SOURCE_SERVICE, live.current.limits_version)
    agreed = run.config.version

    # the service goes down: both keep the same last good version (no file fallback)
    kept = await service_view(down, pg_storage)
    run = provider(down, pg_storage).current()
    assert kept.current is not None and kept.current.limits_version == agreed
    assert kept.current.source in SERVICE_SOURCES and kept.service_synced
    assert (run.source, run.config.version) == (SOURCE_STORE, agreed)
    assert not run.config.unavailable


async def test_a_document_identical_to_the_packaged_file_is_a_valid_document(
        sim: ConfigServiceSimulator, pg_storage: Storage, tmp_path: Path) -> None:
    component = f"packaged-{uuid.uuid4().hex[:8]}"
    cfg = settings(sim.url, component, tmp_path)
    packaged = yaml.safe_load(cfg.effective_limits_file.read_text())
    sim.publish(component, {"limits": packaged})
    state = await service_view(cfg, pg_storage)
    assert state.current is not None and state.service_synced  # the service becomes ready
    assert (state.current.source, state.current.limits.unavailable) == (SOURCE_SERVICE, "")
    run = provider(cfg, pg_storage).current()
    assert (run.source, run.config.version) == (SOURCE_SERVICE, state.current.limits_version)
    (recorded,) = pg_storage.config_versions.history()
    assert recorded.source == SOURCE_SERVICE  # not left as the file's record
