"""The risk sensors and schedule start in the state the settings say (issue 14 item 3): off for
a configuration that watches nothing, with a message saying why; on once venues are set;
``automation: on|off`` forces it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from risk_monitor.defs.risk.automation import automation_state

VENUE = {"id": "binance", "exchange": "binanceusdm", "api_key_env": "K", "secret_env": "S"}
AUTOMATED = ("market_data_sensor", "collection_sensor", "risk_cycle_every_minute")


def use_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **document: Any) -> Path:
    path = tmp_path / "risk-monitor.yaml"
    path.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), **document}))
    monkeypatch.setenv("RISK_MONITOR_CONFIG", str(path))
    return path


@pytest.mark.parametrize(("document", "running", "words"), [
    ({}, False, "no venue or custodian is configured"),
    ({"venues": [VENUE]}, True, "1 venue/custodian"),
    ({"automation": "on"}, True, "`automation: on`"),
    ({"venues": [VENUE], "automation": "off"}, False, "`automation: off`"),
])
def test_the_settings_decide(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                             document: dict[str, Any], running: bool, words: str) -> None:
    use_config(monkeypatch, tmp_path, **document)
    state = automation_state()
    assert state.running is running
    assert words in state.reason


def test_settings_that_do_not_load_start_nothing(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    use_config(monkeypatch, tmp_path, automation="sometimes")
    state = automation_state()
    assert not state.running and "automation" in state.reason


LOAD = """
import json
from risk_monitor.definitions import defs
loaded = defs()
status = {name: loaded.get_sensor_def(name).default_status.value
          for name in ("market_data_sensor", "collection_sensor")}
schedule = loaded.get_schedule_def("risk_cycle_every_minute")
status[schedule.name] = schedule.default_status.value
status["description"] = schedule.description
print(json.dumps(status))
"""


def definitions_status(config: Path) -> dict[str, str]:
    """The default statuses as a code server loads them (a fresh process reads the settings)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RISK_MONITOR_", "DAGSTER_"))}
    env["RISK_MONITOR_CONFIG"] = str(config)
    out = subprocess.run([sys.executable, "-c", LOAD], env=env, capture_output=True,
                         text=True, timeout=300, check=True, cwd=config.parent)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_definitions_start_stopped_without_venues(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    """One code-location load (a subprocess: the state is read when the definitions load);
    the running case is the same ``AUTOMATION`` value, covered above."""
    stopped = definitions_status(use_config(monkeypatch, tmp_path))
    assert [stopped[name] for name in AUTOMATED] == ["STOPPED"] * 3
    assert "no venue or custodian is configured" in stopped["description"]
