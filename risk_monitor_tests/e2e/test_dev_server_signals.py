"""``risk-monitor dev`` stops, with its webserver, daemon and code servers, within 10 s of
SIGTERM or SIGINT once it is up."""

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

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

STOP_WITHIN_S = 10.0
#: starting dagster dev imports the code location in several processes: minutes on a busy machine
START_DEADLINE_S = 600.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_dev_server_stops_within_10_s(tmp_path: Path, signum: signal.Signals) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RISK_MONITOR_", "DAGSTER_"))}
    env["DAGSTER_HOME"] = str(tmp_path / "home")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("risk-monitor")), "dev", "--host", "127.0.0.1",
         "--port", str(port)], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            assert process.poll() is None, "risk-monitor dev exited before it was up"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info",
                                            timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            assert time.monotonic() < deadline, "the webserver never answered"
            time.sleep(0.5)  # polling interval while waiting for start-up, not an assertion
        sent = time.monotonic()
        process.send_signal(signum)
        process.wait(timeout=STOP_WITHIN_S + 5)
        stopped_after = time.monotonic() - sent
        assert stopped_after <= STOP_WITHIN_S, stopped_after
        # its children went with it: nothing serves the UI port any more
        assert not listening(port), "the Dagster webserver outlived risk-monitor dev"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
