"""Errors reach Dagster as failures carrying the error code, source and retryability, and are
counted in risk_monitor_errors_total."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from prometheus_client import REGISTRY

from risk_monitor.defs.resources import SettingsResource
from risk_monitor.defs.risk.assets import limit_config
from risk_monitor.defs.risk.resources import RiskStoreResource


def test_invalid_limits_fail_the_asset_with_the_error_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "limits.yaml"
    bad.write_text("schema_version: 1\nlimits:\n  - id: x\n    kind: max_notional\n"
                   "    scope: {}\n    warn: 10\n    breach: 5\n")
    monkeypatch.delenv("RISK_MONITOR_CONFIG", raising=False)
    monkeypatch.setenv("RISK_MONITOR_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RISK_MONITOR_LIMITS_FILE", str(bad))
    labels = {"code": "RM100", "source": "config", "retryable": "false"}
    before = REGISTRY.get_sample_value("risk_monitor_errors_total", labels) or 0.0

    result = dg.materialize([limit_config], raise_on_error=False,
                            resources={"settings": SettingsResource(),
                                       "risk_store": RiskStoreResource()})

    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data
    assert failure.user_failure_data is not None, failure.error
    metadata = {k: v.value for k, v in failure.user_failure_data.metadata.items()}
    assert metadata["error_code"] == "RM100"
    assert metadata["retryable"] is False
    assert "limits" in str(metadata.get("detail_key", "")) + failure.user_failure_data.description
    assert REGISTRY.get_sample_value("risk_monitor_errors_total", labels) == before + 1
