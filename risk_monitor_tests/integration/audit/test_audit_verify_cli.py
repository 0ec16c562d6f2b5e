"""`risk-monitor audit verify` / `audit anchor`, the Dagster and Prometheus anchors."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from risk_monitor.adapters.audit_anchors import ANCHOR_ASSET, anchor_metadata
from risk_monitor.adapters.prometheus import register_collector
from risk_monitor.adapters.sql import Storage
from risk_monitor.adapters.sql.audit_verify import verify
from risk_monitor.adapters.sql.schema import alert_states
from risk_monitor.cli import cli
from risk_monitor.dagster_catalog import read_dagster_anchors
from risk_monitor_tests.fixtures.storage import sqlite_url
from risk_monitor_tests.integration.audit.test_audit_chain import _history, _rewrite_chain


def _invoke(url: str, *args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(cli, list(args), env={"RISK_MONITOR_DATABASE_URL": url,
                                                 "RISK_MONITOR_CONFIG": None,
                                                 "DAGSTER_HOME": None})
    return result.exit_code, result.stdout, result.stderr


def test_verify_prints_the_head_then_names_the_broken_entry_and_alert(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    storage = Storage.open(url)
    try:
        fingerprint = _history(storage)
        anchors = tmp_path / "anchors.jsonl"
        code, out, _ = _invoke(url, "audit", "anchor", "--file", str(anchors))
        assert code == 0
        head = storage.audit.head()
        assert out.strip() == f"head {head.id} {head.hash}"
        code, out, _ = _invoke(url, "audit", "verify", "--anchors-file", str(anchors))
        assert code == 0, out
        assert "1 anchors matched" in out and f"head {head.id} {head.hash}" in out

        with storage.engine.begin() as conn:
            conn.execute(alert_states.update().where(alert_states.c.fingerprint == fingerprint)
                         .values(status="WARN"))
        code, _, err = _invoke(url, "audit", "verify")
        assert code == 1
        assert "first broken entry" in err and f"alert_states:{fingerprint}" in err
        assert f"fingerprint {fingerprint}" in err  # the affected alert
        code, out, _ = _invoke(url, "audit", "verify", "--json")
        assert code == 1
        assert json.loads(out)["findings"][0]["subject"] == f"alert_states:{fingerprint}"
    finally:
        storage.close()


def test_heads_recorded_in_dagster_catch_a_rewritten_chain(tmp_path: Path) -> None:
    storage = Storage.open(sqlite_url(tmp_path))
    try:
        fingerprint = _history(storage)
        (tmp_path / "dagster").mkdir()
        with dg.DagsterInstance.local_temp(str(tmp_path / "dagster")) as instance:
            instance.report_runless_asset_event(dg.AssetMaterialization(
                asset_key=ANCHOR_ASSET, metadata=anchor_metadata(storage.audit.head())))
            anchors = read_dagster_anchors(instance)
            assert [a.head_id for a in anchors] == [storage.audit.head().id]
            assert verify(storage.engine, anchors).ok
            _rewrite_chain(storage, fingerprint)
            report = verify(storage.engine, read_dagster_anchors(instance))
            assert [f.check for f in report.findings] == ["anchor"]
    finally:
        storage.close()


def test_the_service_metrics_export_the_head(storage: Storage) -> None:
    _history(storage)
    registry = CollectorRegistry()
    register_collector(storage.engine, registry=registry)
    head = storage.audit.head()
    assert registry.get_sample_value("risk_monitor_audit_chain_head",
                                     {"hash": head.hash}) == head.id
    with storage.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(alert_states)).scalar() == 2


def test_an_empty_store_is_not_reported_intact(tmp_path: Path) -> None:
    """A reviewer pointing `audit verify` at the wrong database (a fresh file is created and
    migrated) must not read "intact": an empty chain proves nothing."""
    code, out, err = _invoke(sqlite_url(tmp_path), "audit", "verify")
    assert code == 1
    assert "AUDIT TRAIL EMPTY" in err and "intact" not in out
    code, out, _ = _invoke(sqlite_url(tmp_path), "audit", "verify", "--json")
    assert code == 1
    assert json.loads(out)["ok"] is False and json.loads(out)["empty"] is True
