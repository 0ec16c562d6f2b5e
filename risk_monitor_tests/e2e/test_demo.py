"""``risk-sim demo`` as a user runs it: the README's command in a pseudo-terminal, in an empty
working directory, no server, no DAGSTER_HOME and no Risk Monitor environment. It must print
nothing but the progress display and the alerts the ``limit_breach`` scenario raises (WARN,
BREACH, RESOLVED for binance_btc_notional) with the risk summary, and leave its runs in the
Dagster instance of that directory, which ``risk-monitor dev`` and ``audit`` then open with no
flags."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from risk_monitor_tests.fixtures.e2e import play_environment
from risk_monitor_tests.fixtures.waiting import scaled
from risk_sim.scenario import load_scenario

REPO = Path(__file__).resolve().parents[2]
LIMIT_ID = "binance_btc_notional"
#: the demo takes ~20 s on an idle machine; this only guards against a hang on a busy one
DEMO_TIMEOUT_S = scaled(400)  # stretched under CI contention (RISK_MONITOR_TEST_DEADLINE_SCALE)
#: terminal control sequences (colours, cursor moves of the progress display)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")

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


def run_in_pty(command: list[str], cwd: Path, env: dict[str, str], timeout: float
               ) -> tuple[int, str]:
    """Run ``command`` with stdin, stdout and stderr on one pseudo-terminal, as in a shell;
    returns the exit code and everything the terminal received, control sequences removed."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdin=terminal, stdout=terminal,
                               stderr=terminal, close_fds=True)
    os.close(terminal)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        returncode = process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(timeout=10)
        os.close(controller)
    return returncode, ANSI.sub("", b"".join(chunks).decode("utf-8", errors="replace"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    cwd = tmp_path_factory.mktemp("demo-cwd")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RISK_MONITOR_", "DAGSTER_"))}
    env.update({"COLUMNS": "200", "LINES": "50", "TERM": "xterm-256color"})
    returncode, output = run_in_pty([*risk_sim_command(), "demo"], cwd, env, DEMO_TIMEOUT_S)
    # a terminal has one stream: stdout and stderr arrive together
    yield DemoRun(cwd, returncode, output, "")


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
    log = demo.cwd / ".risk_monitor" / "demo" / "demo.log"
    assert log.exists() and '"level"' in log.read_text()


#: what the terminal may show: the title, the progress display, the step lines, the alerts
#: table, the risk summary and the closing lines (anything else is a leak)
ALLOWED_LINE = re.compile(
    r"^\s*$|^[─━ ]*(Risk Monitor demo|Alerts raised|Risk summary)|^─+$|"
    r"^simulators up|^DAGSTER_HOME|^[^\s]* ?(starting the simulators|loading the Dagster)|"
    r"^\s*[⠀-⣿]? ?(scenario|step \d+/\d+)|^[✔✘] step \d+/\d+|"
    r"^\s*[┏┃┡│├└╭╰┌]|^(Headline|Top exposures|Venues|Limit utilisation)|"
    r"^(alerts file|logs|Dagster instance):|^next|^  risk-monitor|^no alerts were raised")


def test_the_terminal_shows_only_progress_and_summary(demo: DemoRun) -> None:
    assert demo.returncode == 0, demo.stdout[-3000:]
    leaked = [line for line in demo.stdout.splitlines() if not ALLOWED_LINE.search(line)]
    assert not leaked, leaked[:10]
    for noise in ('"level"', "Warning", "dagster - ", "Traceback", "RUN_START"):
        assert noise not in demo.stdout, noise
    # ...and the warnings and Dagster's events are in the log file instead
    log = (demo.cwd / ".risk_monitor" / "demo" / "demo.log").read_text()
    assert "risk_cycle" in log


def test_audit_recent_after_the_demo_needs_no_flags(demo: DemoRun) -> None:
    assert demo.returncode == 0, demo.stdout[-3000:]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RISK_MONITOR_", "DAGSTER_"))}
    done = subprocess.run([str(Path(sys.executable).with_name("risk-monitor")), "audit",
                           "recent"], cwd=demo.cwd, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if LIMIT_ID in line]
    assert len(lines) == 3, done.stdout
    assert {"WARN", "BREACH"} <= {word for line in lines for word in line.split()}


def test_dev_after_the_demo_starts_no_automation_on_the_stopped_simulators(
        demo: DemoRun) -> None:
    assert demo.returncode == 0, demo.stdout[-3000:]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RISK_MONITOR_", "DAGSTER_"))}
    # what `risk-monitor dev` reads when its code location loads, from the demo's directory
    done = subprocess.run(
        [sys.executable, "-c", "from risk_monitor.project_env import load_project_env; "
         "load_project_env(); from risk_monitor.defs.risk.automation import automation_state;"
         " print(automation_state().reason)"],
        cwd=demo.cwd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "automation off: `automation: off` in the settings" in done.stdout, done.stdout


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
    # the one env file is the project's .env: paths only (DAGSTER_HOME, RISK_MONITOR_CONFIG)
    assert [p.name for p in demo.cwd.rglob("*.env")] == [".env"]
    from risk_monitor.project_env import MANAGED, read_env_file

    assert set(read_env_file(demo.cwd / ".env")) == set(MANAGED)
    texts = {"terminal": demo.stdout, ".env": (demo.cwd / ".env").read_text()}
    for name in ("risk-monitor.yaml", "alerts.jsonl", "demo.log"):
        texts[name] = (demo_dir / name).read_text()
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a simulator secret leaked into {where}"
