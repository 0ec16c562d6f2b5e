"""``risk-sim demo`` as a user runs it: a subprocess in an empty working directory, no server,
no DAGSTER_HOME and no Risk Monitor environment. It must print the alerts the ``limit_breach``
scenario raises (WARN, BREACH, RESOLVED for binance_btc_notional) and leave its runs in the
Dagster instance of that directory, which ``risk-monitor dev`` then opens."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from risk_monitor_tests.fixtures.e2e import play_environment
from risk_sim.scenario import load_scenario

REPO = Path(__file__).resolve().parents[2]
LIMIT_ID = "binance_btc_notional"
#: the demo must finish "in about a minute"; this only guards against a hang
DEMO_TIMEOUT_S = 240

# the module's demo subprocess runs during the first test's setup, whichever test that is
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(DEMO_TIMEOUT_S + 60)]


@dataclass
class DemoRun:
    cwd: Path
    returncode: int
    stdout: str
    stderr: str


def risk_sim_command() -> list[str]:
    script = Path(sys.executable).with_name("risk-sim")
    return [str(script)] if script.exists() else [sys.executable, "-m", "risk_sim.cli"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    cwd = tmp_path_factory.mktemp("demo-cwd")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RISK_MONITOR_", "DAGSTER_"))}
    env["COLUMNS"] = "200"  # rich wraps at 80 columns when not on a terminal
    done = subprocess.run([*risk_sim_command(), "demo"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=DEMO_TIMEOUT_S, check=False)
    yield DemoRun(cwd, done.returncode, done.stdout, done.stderr)


def alert_rows(stdout: str) -> list[list[str]]:
    """Rows of the printed alerts table (time, status, limit, scope, value / limit)."""
    section = stdout.split("Alerts raised", 1)[1].split("Risk summary", 1)[0]
    return [[cell.strip() for cell in line.strip("│ ").split("│")]
            for line in section.splitlines() if line.startswith("│")]


def test_the_demo_prints_the_alerts_of_the_breach(demo: DemoRun) -> None:
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    rows = alert_rows(demo.stdout)
    states = [row[1] for row in rows if row[2] == LIMIT_ID]
    assert states == ["WARN", "BREACH", "RESOLVED"], rows
    assert all(row[3] == "venue:binance|instrument:BTC/USDT:USDT" for row in rows)
    for part in ("Risk summary", "Top exposures", "Limit utilisation", "risk-monitor dev",
                 "alerts.jsonl"):
        assert part in demo.stdout, part
    # progress went to the terminal, the logs to the log file
    assert "step 5/5" in demo.stdout
    assert '"level"' not in demo.stdout and '"level"' not in demo.stderr
    log = demo.cwd / ".risk_monitor" / "demo" / "demo.log"
    assert log.exists() and log.stat().st_size > 0


def test_the_dagster_instance_of_the_directory_holds_the_runs(demo: DemoRun) -> None:
    assert demo.returncode == 0, demo.stderr[-3000:]
    home = demo.cwd / ".dagster_home"
    # seeded like `risk-monitor dev` seeds it: the repository's (SQLite) dagster.yaml
    assert (home / "dagster.yaml").read_text() == (REPO / "dagster.yaml").read_text()
    steps = len(load_scenario("limit_breach").steps)
    with play_environment({"DAGSTER_HOME": str(home)}), dg.DagsterInstance.get() as instance:
        runs = instance.get_runs(dg.RunsFilter(job_name="risk_cycle",
                                               tags={"risk_monitor/trigger": "demo"}))
        assert len(runs) == steps
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        for key in ("limit_status", "risk_alerts", "compliance_status"):
            event = instance.get_latest_materialization_event(dg.AssetKey(key))
            assert event is not None and event.run_id in {r.run_id for r in runs}, key
        checks = instance.get_records_for_run(
            runs[0].run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
        assert checks


def test_secrets_stay_in_the_demo_process(demo: DemoRun) -> None:
    from risk_sim.launcher import SimulatorStack

    credentials = SimulatorStack("limit_breach").market.credentials()
    secrets = [str(value) for accounts in credentials.values() for creds in accounts.values()
               for value in creds.values() if value and len(str(value)) >= 8]
    assert secrets
    demo_dir = demo.cwd / ".risk_monitor" / "demo"
    assert not list(demo.cwd.rglob("*.env")), "the demo writes no secrets file"
    texts = {"stdout": demo.stdout, "stderr": demo.stderr}
    for name in ("risk-monitor.yaml", "alerts.jsonl", "demo.log"):
        texts[name] = (demo_dir / name).read_text()
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a simulator secret leaked into {where}"
