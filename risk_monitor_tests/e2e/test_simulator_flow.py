"""The README's simulator flow (issue 14 item 4), as a user runs it: ``risk-sim up`` in one
shell, then ``risk-monitor serve`` on the settings and secrets it wrote. The service must get
ready: ``/readyz`` 200 and grpc.health.v1 SERVING, with every check passing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from grpc_health.v1 import health_pb2

from risk_monitor_tests.fixtures.service import free_port, health_status
from risk_monitor_tests.fixtures.waiting import scaled, wait_until
from risk_sim.launcher import read_env_file

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]

SERVING = health_pb2.HealthCheckResponse.SERVING
#: starting means importing ccxt, dagster-free service code and the simulators: slow when busy
START_DEADLINE_S = 240.0


def bin_path(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("RISK_MONITOR_", "DAGSTER_"))}


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=scaled(30))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=scaled(10))


@pytest.fixture
def simulators(tmp_path: Path) -> Iterator[Path]:
    """``risk-sim up --scenario calm --out .risk_sim`` in the user's project directory."""
    log = (tmp_path / "risk-sim.log").open("wb")
    process = subprocess.Popen([bin_path("risk-sim"), "up", "--scenario", "calm", "--out",
                                ".risk_sim"], cwd=tmp_path, env=clean_env(), stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    out = tmp_path / ".risk_sim"
    try:
        def written() -> bool:
            assert process.poll() is None, (tmp_path / "risk-sim.log").read_text()
            return (out / "endpoints.json").exists() and (out / "risk-monitor.env").exists()

        wait_until(written, timeout=START_DEADLINE_S, interval=0.2,
                   message="risk-sim up writing its endpoints and secrets")
        yield out
    finally:
        stop(process)
        log.close()


def test_risk_sim_up_then_serve_gets_ready(simulators: Path, tmp_path: Path) -> None:
    endpoints = json.loads((simulators / "endpoints.json").read_text())
    assert endpoints["scenario"] == "calm"
    rest, grpc_port = free_port(), free_port()
    # `set -a; . .risk_sim/risk-monitor.env; set +a` and RISK_MONITOR_CONFIG, as the README says;
    # free ports instead of the defaults so parallel runs never collide
    env = {**clean_env(), **read_env_file(simulators / "risk-monitor.env"),
           "RISK_MONITOR_CONFIG": str(simulators / "risk-monitor.yaml"),
           "RISK_MONITOR_SERVICE__REST_PORT": str(rest),
           "RISK_MONITOR_SERVICE__GRPC_PORT": str(grpc_port)}
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([bin_path("risk-monitor"), "serve"], cwd=tmp_path, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        def ready() -> httpx.Response | None:
            assert process.poll() is None, log_path.read_text()[-3000:]
            response = httpx.get(f"http://127.0.0.1:{rest}/readyz", timeout=5)
            return response if response.status_code == 200 else None

        try:
            response = wait_until(ready, timeout=START_DEADLINE_S, interval=0.5,
                                  message="/readyz 200")
        except BaseException:
            print(log_path.read_text()[-5000:])
            raise
        checks = {c["name"]: c for c in response.json()["checks"]}
        assert all(c["ok"] for c in checks.values() if c["critical"]), checks
        assert checks["config"]["ok"], checks["config"]
        target = f"127.0.0.1:{grpc_port}"
        assert health_status(target, "") == SERVING
        assert health_status(target, "risk_monitor.v1.RiskMonitor") == SERVING
    finally:
        stop(process)
