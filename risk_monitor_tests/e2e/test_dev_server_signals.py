"""``risk-monitor dev`` (webserver, daemon, code servers) and ``risk-monitor serve`` stop within
10 s of SIGTERM or SIGINT once they are up, and leave no process of their group behind
(issue 14 item 6)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from risk_monitor_tests.fixtures.service import desk_limits, free_port, write_limits
from risk_monitor_tests.fixtures.waiting import scaled, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

STOP_WITHIN_S = 10.0
#: starting dagster dev imports the code location in several processes: minutes on a busy machine
START_DEADLINE_S = 600.0
SIGNALS = [signal.SIGTERM, signal.SIGINT]


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def answers(url: str, process: subprocess.Popen[bytes]) -> bool:
    """True once ``url`` answers 200; fails the test if the process died first."""
    assert process.poll() is None, f"{process.args} exited before it was up"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_and_check(process: subprocess.Popen[bytes], signum: signal.Signals,
                   ports: tuple[int, ...]) -> None:
    """Send ``signum``; the process exits within the budget and its whole group with it."""
    # the requirement itself on an idle machine; CI's contention run stretches it
    # (RISK_MONITOR_TEST_DEADLINE_SCALE): there a second of CPU takes several of wall time
    budget = scaled(STOP_WITHIN_S)
    sent = time.monotonic()
    process.send_signal(signum)
    process.wait(timeout=budget + 5)
    stopped_after = time.monotonic() - sent
    assert stopped_after <= budget, stopped_after
    # its children went with it: no process of its group, nothing serves its ports
    wait_until(lambda: not group_alive(process.pid), timeout=5, interval=0.1,
               message="every child of the process gone")
    for port in ports:
        assert not listening(port), f"something still serves :{port}"


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RISK_MONITOR_", "DAGSTER_"))}
    env["DAGSTER_HOME"] = str(tmp_path / "home")
    return env


def launch(args: list[str], tmp_path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("risk-monitor")), *args], cwd=tmp_path,
        env=clean_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    if group_alive(process.pid):
        os.killpg(process.pid, signal.SIGKILL)
    if process.poll() is None:
        process.wait()


@pytest.mark.parametrize("signum", SIGNALS)
def test_dev_server_stops_within_10_s(tmp_path: Path, signum: signal.Signals) -> None:
    port = free_port()
    process = launch(["dev", "--host", "127.0.0.1", "--port", str(port)], tmp_path)
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/server_info", process),
                   timeout=START_DEADLINE_S, interval=0.5, message="the Dagster webserver")
        stop_and_check(process, signum, (port,))
    finally:
        kill_group(process)


@pytest.mark.parametrize("signum", SIGNALS)
def test_serve_stops_within_10_s(tmp_path: Path, signum: signal.Signals) -> None:
    rest, grpc_port = free_port(), free_port()
    config = tmp_path / "risk-monitor.yaml"
    config.write_text(yaml.safe_dump({
        "environment": "ci",
        "data_dir": str(tmp_path / "data"),
        "database_url": f"sqlite:///{tmp_path}/rm.db",
        "limits_file": str(write_limits(tmp_path / "limits.yaml", desk_limits())),
        "service": {"rest_host": "127.0.0.1", "rest_port": rest, "grpc_host": "127.0.0.1",
                    "grpc_port": grpc_port},
    }))
    process = launch(["--config", str(config), "serve"], tmp_path)
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{rest}/healthz", process),
                   timeout=120, interval=0.2, message="risk-monitor serve answering /healthz")
        stop_and_check(process, signum, (rest, grpc_port))
    finally:
        kill_group(process)
