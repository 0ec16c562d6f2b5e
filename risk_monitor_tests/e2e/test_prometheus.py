"""Real Prometheus end to end: ``risk-monitor serve`` on the database a Dagster risk evaluation
wrote (the ``limit_breach`` play), Prometheus scraping its ``/metrics`` every second, and a
PromQL query through Prometheus's HTTP API returning the stored utilisation.

Prometheus (Debian's 2.x) must be installed — ``.ci/run`` installs it; a missing binary fails
the test. It binds 127.0.0.1 on a free port of its own (never Debian's :9090). FACTS.md: the
first sample shows ~6 s after start even at a 1 s scrape interval, so the query polls for up
to 30 s.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from risk_monitor.adapters.sql import Storage
from risk_monitor_tests.fixtures.e2e import ScenarioPlays, ScenarioRun, play_environment
from risk_monitor_tests.fixtures.service import spawn_service, wait_until
from risk_sim.net import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LIMIT_ID = "binance_btc_notional"


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as answer:  # loopback only
        return json.loads(answer.read())


def rest_port_from_log(log: Path) -> int | None:
    for line in log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "service_started" in (record.get("event"),
                                                              record.get("message")):
            return int(record["rest_port"])
    return None


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def play(scenario_plays: ScenarioPlays) -> ScenarioRun:
    return scenario_plays.get("limit_breach")


@pytest.fixture(scope="module")
def service_url(play: ScenarioRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``risk-monitor serve`` (a subprocess) on the play's database, REST on a free port."""
    tmp = tmp_path_factory.mktemp("prom-service")
    config = tmp / "service.yaml"
    config.write_text(yaml.safe_dump({
        "environment": "ci", "data_dir": str(tmp / "state"), "database_url": play.database_url,
        "service": {"rest_port": 0, "grpc_port": 0, "drain_s": 0},
    }))
    log = tmp / "service.log"
    with play_environment({}):  # no RISK_MONITOR_* from the session leaks into the child
        proc = spawn_service(config, log_path=log)
    try:
        def started() -> int | None:
            if proc.poll() is not None:
                pytest.fail(f"risk-monitor serve exited:\n{log.read_text()[-3000:]}")
            return rest_port_from_log(log)

        port = wait_until(started, 60, interval=0.1, message="service_started in the log")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def prometheus_url(service_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus") or ("/usr/bin/prometheus"
                                            if Path("/usr/bin/prometheus").exists() else None)
    if binary is None:
        pytest.fail("the prometheus binary is required: apt-get install -y "
                    "--no-install-recommends prometheus (.ci/run installs it)")
    tmp = tmp_path_factory.mktemp("prometheus")
    target = urllib.parse.urlsplit(service_url).netloc
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "risk_monitor", "scrape_interval": "1s",
                            "scrape_timeout": "1s", "metrics_path": "/metrics",
                            "static_configs": [{"targets": [target]}]}],
    }))
    port = free_port()
    log = tmp / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited:\n{log.read_text()[-3000:]}")
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as answer:
                return answer.status == 200

        wait_until(ready, 30, interval=0.2, message="Prometheus ready")
        yield url
    finally:
        stop(proc)


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    body = get_json(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def test_promql_returns_the_stored_utilisation(play: ScenarioRun, service_url: str,
                                               prometheus_url: str) -> None:
    storage = Storage.open(play.database_url)
    try:
        stored = [r for r in storage.risk_state.limit_results() if r.limit_id == LIMIT_ID]
    finally:
        storage.close()
    assert len(stored) == 1 and stored[0].utilisation is not None, stored
    # the service itself exposes it (what Prometheus scrapes)
    with urllib.request.urlopen(f"{service_url}/metrics", timeout=5) as answer:
        assert f'limit_id="{LIMIT_ID}"' in answer.read().decode()

    promql = f'risk_monitor_limit_utilisation{{limit_id="{LIMIT_ID}"}}'
    series = wait_until(lambda: query(prometheus_url, promql), 30, interval=0.5,
                        message=f"a sample of {promql} in Prometheus")
    assert len(series) == 1, series
    labels = series[0]["metric"]
    assert labels["scope"] == stored[0].scope and labels["limit_kind"] == stored[0].limit_kind
    assert labels["job"] == "risk_monitor"
    value = float(series[0]["value"][1])
    assert math.isclose(value, stored[0].utilisation, rel_tol=1e-12), (value, stored[0])
    # the scrape itself is healthy
    up = query(prometheus_url, 'up{job="risk_monitor"}')
    assert [float(s["value"][1]) for s in up] == [1.0]
