"""Both instance variants (embedded SQLite, PostgreSQL) load as real Dagster instances and run."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from risk_monitor.platform.logging import configure_logging, get_logger, register_secret

ROOT = Path(__file__).resolve().parents[3]
PROBE_SECRET = "probe-secret-value-77"


@dg.asset
def instance_probe() -> int:
    register_secret(PROBE_SECRET)
    get_logger("risk_monitor.probe").info("probe says hello", probe=True, api_key="k-123",
                                          note=f"token {PROBE_SECRET}")
    return 1


def _instance(home: Path, template: Path) -> dg.DagsterInstance:
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, home / "dagster.yaml")
    return dg.DagsterInstance.from_config(str(home))


@pytest.fixture
def sqlite_instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    with _instance(tmp_path / "home", ROOT / "dagster.yaml") as instance:
        yield instance


@pytest.fixture
def postgres_instance(tmp_path: Path, fresh_postgres_url: str,
                      monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    monkeypatch.setenv("RISK_MONITOR_DAGSTER_PG_URL", fresh_postgres_url)
    with _instance(tmp_path / "home", ROOT / "deploy" / "postgres" / "dagster.yaml") as instance:
        yield instance


def _run_and_check(instance: dg.DagsterInstance) -> None:
    configure_logging("INFO")  # as risk_monitor.definitions does when Dagster loads it
    result = dg.materialize([instance_probe], instance=instance)
    assert result.success
    event = instance.get_latest_materialization_event(dg.AssetKey("instance_probe"))
    assert event is not None and event.run_id == result.run_id
    assert instance.get_run_by_id(result.run_id) is not None
    # python_logs.managed_python_loggers routes our loggers into the Dagster event log
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    probe_lines = [json.loads(m) for m in messages if "probe says hello" in m]
    assert probe_lines, messages[-5:]
    assert probe_lines[0]["probe"] is True and probe_lines[0]["api_key"] == "***"
    assert not any(PROBE_SECRET in m or "k-123" in m for m in messages)


def test_embedded_sqlite_instance(sqlite_instance: dg.DagsterInstance) -> None:
    assert "Sqlite" in type(sqlite_instance.run_storage).__name__
    assert type(sqlite_instance.run_coordinator).__name__ in ("DefaultRunCoordinator", "SyncInMemoryRunCoordinator")
    _run_and_check(sqlite_instance)


def test_postgres_instance(postgres_instance: dg.DagsterInstance) -> None:
    assert "Postgres" in type(postgres_instance.run_storage).__name__
    assert "Postgres" in type(postgres_instance.event_log_storage).__name__
    assert type(postgres_instance.run_coordinator).__name__ in ("DefaultRunCoordinator", "SyncInMemoryRunCoordinator")
    _run_and_check(postgres_instance)
