"""`risk-monitor audit trace` follows an alert to its run, inputs, limit and code versions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from risk_monitor import application
from risk_monitor.adapters.file_sink import FileSink
from risk_monitor.adapters.sql import OutboxDispatcher, Storage
from risk_monitor.audit_trace import trace
from risk_monitor.domain.alerts import AlertPolicy
from risk_monitor.platform.code_version import code_version
from risk_monitor_tests.fixtures.storage import make_result
from risk_monitor_tests.fixtures.waiting import scaled

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CONTEXT = {
    "run_id": "run-abc", "job_name": "risk_cycle", "source": "dagster",
    "dagster_run_url": "http://ui/runs/run-abc",
    "input_data_versions": {"exchange_positions": {"data_version": "dv-pos-1",
                                                   "run_id": "run-abc"}},
    "limit_config_version": "cfg-v1",
}


@pytest.fixture
def storage(fresh_postgres_url: str) -> Storage:
    return Storage.open(fresh_postgres_url)


def _raise_episode(storage: Storage, tmp_path: Path) -> str:
    storage.config_versions.record("cfg-v1", {"limits": [{"id": "max_notional"}]},
                                   source="file", applied_at=T0)
    policy = AlertPolicy()
    for minutes, status in ((0, "WARN"), (1, "BREACH"), (2, "OK")):
        at = T0 + timedelta(minutes=minutes)
        application.raise_alerts(storage, [make_result(status, at)], now=at, policy=policy,
                               context={**CONTEXT, "run_id": f"run-{minutes}"})
    dispatcher = OutboxDispatcher(storage.engine, FileSink(tmp_path / "alerts.jsonl"))
    assert dispatcher.dispatch_once().sent == 3
    return storage.outbox.rows()[0].correlation_id


def test_trace_by_any_key_gives_the_whole_chain(storage: Storage, tmp_path: Path) -> None:
    correlation = _raise_episode(storage, tmp_path)
    rows = storage.outbox.rows()
    for key in (correlation, rows[1].idempotency_key, rows[0].fingerprint, "run-1"):
        episodes = trace(storage, key)
        assert len(episodes) == 1, key
        episode = episodes[0]
        assert episode.correlation_id == correlation
        assert [n.alert_status for n in episode.notifications] == ["WARN", "BREACH", "OK"]
        assert all(n.delivery == "sent" and n.notified_at for n in episode.notifications)
        assert [d["run_id"] for d in episode.detections] == ["run-0", "run-1", "run-2"]
        assert episode.detections[0]["input_data_versions"]["exchange_positions"][
            "data_version"] == "dv-pos-1"
        assert episode.detections[0]["code_version"] == code_version()
        assert episode.config_versions["cfg-v1"]["document"] == {
            "limits": [{"id": "max_notional"}]}
    assert trace(storage, "nothing-like-this") == []


def test_cli_prints_the_trace(storage: Storage, tmp_path: Path, fresh_postgres_url: str) -> None:
    correlation = _raise_episode(storage, tmp_path)
    env = {**os.environ, "RISK_MONITOR_DATABASE_URL": fresh_postgres_url}
    env.pop("RISK_MONITOR_CONFIG", None)
    cli = str(Path(sys.executable).parent / "risk-monitor")
    result = subprocess.run([cli, "audit", "trace", correlation, "--json"], env=env,
                            capture_output=True, text=True, timeout=scaled(60), check=False)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data[0]["limit_id"] == "max_notional"
    assert data[0]["notifications"][1]["detect_latency_s"] == pytest.approx(0.5)
    human = subprocess.run([cli, "audit", "trace", correlation], env=env, capture_output=True,
                           text=True, timeout=scaled(60), check=False)
    assert human.returncode == 0, human.stderr
    assert "Dagster run run-1" in human.stdout and "dv-pos-1" in human.stdout
    assert "document stored" in human.stdout
    missing = subprocess.run([cli, "audit", "trace", "nope"], env=env, capture_output=True,
                             text=True, timeout=scaled(60), check=False)
    assert missing.returncode == 1
    recent = subprocess.run([cli, "audit", "recent"], env=env, capture_output=True, text=True,
                            timeout=scaled(60), check=False)
    assert correlation in recent.stdout


def test_trace_by_slack_reference_names_inputs_sealing_entry_and_code(
        storage: Storage, tmp_path: Path) -> None:
    correlation = _raise_episode(storage, tmp_path)
    ref = storage.outbox.rows()[1].delivery_ref
    assert ref is not None
    for key in (ref, ref.rsplit(":", 1)[1]):  # "channel:ts" or the bare ts
        [episode] = trace(storage, key, with_documents=False)
        assert episode.correlation_id == correlation
    detection = episode.detections[1]
    assert detection["evaluation"] == "dagster run run-1"
    assert detection["inputs"] == [{"input": "exchange_positions", "data_version": "dv-pos-1",
                                    "as_of": None, "run_id": "run-abc"}]
    assert detection["entry_hash"] and detection["code_version"] == code_version()
    assert "document" not in episode.config_versions["cfg-v1"]
    assert episode.config_versions["cfg-v1"]["audit_hash"]
