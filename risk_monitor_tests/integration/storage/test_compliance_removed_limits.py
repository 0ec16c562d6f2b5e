"""A limit a new limit document drops ends its compliance interval at the change, in both paths
that apply a document (the service's writer and the Dagster ``compliance_status`` asset), sealed
with the version that removed it; time-in-status reports stop counting it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import dagster as dg
import yaml

from risk_monitor.adapters.sql import Storage
from risk_monitor.adapters.sql.audit_verify import verify
from risk_monitor.defs.compliance.assets import compliance_status
from risk_monitor.defs.resources import SettingsResource
from risk_monitor.defs.risk.resources import RiskStoreResource
from risk_monitor.domain.alerts import AlertPolicy
from risk_monitor.domain.engine import evaluate
from risk_monitor.domain.limits import LimitConfig, load_limit_config
from risk_monitor.domain.model import LimitResult, LimitStatus
from risk_monitor.service.writer import AlertWriter, LiveState
from risk_monitor_tests.fixtures.storage import START, make_result, open_intervals
from risk_monitor_tests.fixtures.waiting import wait_until
from risk_monitor_tests.unit.domain.builders import desk
from risk_monitor_tests.unit.domain.test_engine import DEFAULT

CHANGE = START + timedelta(minutes=10)
WINDOW = (START, START + timedelta(hours=1))


def _results(at_s: float, version: str, *limit_ids: str) -> list[LimitResult]:
    return [dataclasses.replace(make_result("WARN", START + timedelta(seconds=at_s),
                                            limit_id=limit_id), config_version=version)
            for limit_id in limit_ids]


def _history(storage: Storage) -> dict[str, tuple[str, object, str]]:
    return {i.limit_id: (i.status.value, i.until, i.config_version)
            for i in storage.compliance.intervals(*WINDOW)}


def _assert_dropped_ended(storage: Storage, version: str) -> None:
    assert _history(storage) == {"dropped": ("WARN", CHANGE, version),
                                 "kept": ("WARN", None, version)}
    spent = storage.compliance.time_in_status(*WINDOW)
    assert spent[("dropped", "portfolio")][LimitStatus.WARN] == 600.0  # not the whole hour
    assert spent[("kept", "portfolio")][LimitStatus.WARN] == 3600.0
    report = verify(storage.engine)  # the close is sealed: the chain verifies
    assert report.ok, report.findings


def test_the_service_writer_ends_a_dropped_limit_at_the_new_document(storage: Storage) -> None:
    report = evaluate(desk(start_of_day_equity=2_481_000, peak_equity=2_481_000), DEFAULT)
    first = _results(0, "cfg-v1", "kept", "dropped")
    second = _results(600, "cfg-v2", "kept")
    writer = AlertWriter(storage, policy=AlertPolicy, persist_interval_s=0.02)
    writer.start()
    try:
        writer.submit_state(LiveState(dataclasses.replace(report, config_version="cfg-v1"),
                                      lambda: first, {}))
        wait_until(lambda: len(open_intervals(storage)) == 2, timeout=30)
        writer.submit_state(LiveState(dataclasses.replace(report, config_version="cfg-v2"),
                                      lambda: second, {}), new_config=True)
        wait_until(lambda: len(open_intervals(storage)) == 1, timeout=30)
    finally:
        writer.stop(drain_s=30.0)
    assert writer.stats.failures == 0
    _assert_dropped_ended(storage, "cfg-v2")


def _document(limit_ids: Sequence[str]) -> LimitConfig:
    limits = [{"id": limit_id, "kind": "max_notional", "scope": {}, "warn": 800.0,
               "breach": 1000.0} for limit_id in limit_ids]
    return load_limit_config({"limits": limits})


def _run(results: list[LimitResult], config: LimitConfig, settings: Path) -> None:
    @dg.asset(name="limit_status")
    def given_status() -> list[LimitResult]:
        return results

    @dg.asset(name="limit_config")
    def given_config() -> LimitConfig:
        return config

    outcome = dg.materialize([given_status, given_config, compliance_status],
                             resources={"settings": SettingsResource(config_file=str(settings)),
                                        "risk_store": RiskStoreResource()},
                             instance=dg.DagsterInstance.ephemeral())
    assert outcome.success


def test_the_compliance_asset_ends_a_dropped_limit_at_the_new_document(
        pg_storage: Storage, migrated_postgres_url: str, tmp_path: Path) -> None:
    settings = tmp_path / "risk-monitor.yaml"
    settings.write_text(yaml.safe_dump({"database_url": migrated_postgres_url,
                                        "data_dir": str(tmp_path / "state")}))
    first, second = _document(["kept", "dropped"]), _document(["kept"])
    _run(_results(0, first.version, "kept", "dropped"), first, settings)
    assert len(open_intervals(pg_storage)) == 2
    _run(_results(600, second.version, "kept"), second, settings)
    _assert_dropped_ended(pg_storage, second.version)
    _run(_results(900, second.version, "kept"), second, settings)  # a later run: no change
    assert _history(pg_storage)["dropped"] == ("WARN", CHANGE, second.version)
