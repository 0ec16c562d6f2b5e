"""Secrets set through the settings never appear in a log line, a Dagster compute log, the
Dagster event log, our own store, or an error message — even at DEBUG and with a venue
refusing a wrong secret (the error path that most often echoes credentials).

The whole risk cycle runs as an operator would run it (`dagster job execute`, a subprocess
with compute-log capture) against the simulators; then every byte it left behind is searched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from risk_monitor_tests.fixtures.waiting import scaled
from risk_sim.launcher import SimulatorStack

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
#: a Dagster run and check-config in subprocesses: minutes on a busy machine, not 120 s
pytestmark = pytest.mark.timeout(scaled(600))


@pytest.fixture(scope="module")
def stack() -> Iterator[SimulatorStack]:
    with SimulatorStack("calm", components=["binance", "okx", "fireblocks", "slack"]) as started:
        yield started


def _needles(env: dict[str, str], names: list[str]) -> dict[str, str]:
    needles: dict[str, str] = {}
    for name in names:
        value = env[name]
        if "PRIVATE KEY" in value:  # a PEM: search a line of its body (it may be re-wrapped)
            body = [line for line in value.splitlines() if line and "-----" not in line]
            needles[name] = body[len(body) // 2]
        else:
            needles[name] = value
    return needles


def test_no_secret_leaves_a_trace(stack: SimulatorStack, tmp_path: Path) -> None:
    paths = stack.write_config(tmp_path / "config")
    secrets = stack.env()
    wrong_okx_secret = f"wrong-okx-secret-{uuid.uuid4().hex}"
    secrets["RISK_MONITOR_OKX_SECRET"] = wrong_okx_secret  # OKX refuses it: the error path
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    data_dir = tmp_path / "state"
    env = {**os.environ, **secrets,
           "RISK_MONITOR_CONFIG": str(paths["settings"]), "RISK_MONITOR_DATA_DIR": str(data_dir),
           "RISK_MONITOR_CONFIG_SERVICE__ENABLED": "false", "DAGSTER_HOME": str(home),
           "RISK_MONITOR_LOG_LEVEL": "DEBUG", "RISK_MONITOR_RESILIENCE__MAX_ATTEMPTS": "1"}
    run = subprocess.run(
        [str(BIN / "dagster"), "job", "execute", "-m", "risk_monitor.definitions",
         "-j", "risk_cycle"], env=env, capture_output=True, text=True, timeout=scaled(300),
        check=False)
    check = subprocess.run([str(BIN / "risk-monitor"), "check-config"], env=env,
                           capture_output=True, text=True, timeout=scaled(60), check=False)
    assert check.returncode == 0, check.stderr

    compute_logs = list(home.rglob("compute_logs/*.err"))
    assert compute_logs, "the run wrote no compute log"
    captured = "".join(p.read_text(errors="replace") for p in compute_logs)
    # the error path really ran: OKX refused the wrong secret with an authentication error
    assert "RM203" in captured or "RM203" in run.stderr, run.stderr[-2000:]
    assert '"level": "debug"' in captured  # and we logged at DEBUG

    needles = _needles({**secrets}, list(secrets))
    haystacks: dict[str, bytes] = {
        "dagster stdout": run.stdout.encode(), "dagster stderr": run.stderr.encode(),
        "check-config output": (check.stdout + check.stderr).encode(),
    }
    for folder in (home, data_dir):
        for path in folder.rglob("*"):
            if path.is_file():
                haystacks[str(path.relative_to(tmp_path))] = path.read_bytes()
    assert any("compute_logs" in name for name in haystacks)
    assert any(name.endswith(".db") for name in haystacks)  # event log + our store
    leaks = [(env_name, where) for env_name, needle in needles.items()
             for where, blob in haystacks.items() if needle.encode() in blob]
    assert not leaks, f"secrets leaked: {leaks}"
