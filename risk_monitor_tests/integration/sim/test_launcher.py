"""The launcher: configuration it writes for Risk Monitor, its control plane, and the CLI."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from risk_monitor.platform.settings import load_settings
from risk_monitor_tests.fixtures.sims import point_ccxt_at
from risk_monitor_tests.fixtures.waiting import scaled
from risk_sim.cli import cli
from risk_sim.launcher import SimulatorStack, read_env_file
from risk_sim.scenario import ScenarioError, list_scenarios

pytestmark = pytest.mark.integration
BTC = "BTC/USDT:USDT"


def http(url: str, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def test_written_configuration_loads_and_reaches_the_simulators(sim: SimulatorStack,
                                                                tmp_path: Path) -> None:
    paths = sim.write_config(tmp_path)
    settings = load_settings(paths["settings"])
    assert {(v.id, v.exchange, v.account) for v in settings.venues} == \
        {("binance", "binanceusdm", "main"), ("okx", "okx", "main")}
    env = read_env_file(paths["env"])
    assert env == sim.env()
    assert stat.S_IMODE(paths["env"].stat().st_mode) == 0o600
    for text in (paths["settings"].read_text(), paths["endpoints"].read_text()):
        for secret in env.values():
            assert secret not in text  # secrets only in the env file
    assert settings.custodians[0].endpoint_override == sim.fireblocks.base_path  # type: ignore[union-attr]
    assert settings.slack is not None and settings.slack.base_url == sim.slack.api_base  # type: ignore[union-attr]
    assert settings.config_service.url == sim.config_service.url  # type: ignore[union-attr]
    # no document for risk-monitor in this scenario: the service uses its limits file instead
    # of waiting on the configuration service's 404 (it would never get ready)
    assert "risk-monitor" not in sim.scenario.config_service
    assert settings.config_service.enabled is False
    assert env["RISK_MONITOR_FIREBLOCKS_SECRET_KEY"].startswith("-----BEGIN")

    import ccxt

    for venue in settings.venues:  # what a production adapter would do with these settings
        config = {"apiKey": env[venue.api_key_env or ""], "secret": env[venue.secret_env or ""],
                  "enableRateLimit": False}
        if venue.password_env:
            config["password"] = env[venue.password_env]
        exchange = getattr(ccxt, venue.exchange)(config)
        point_ccxt_at(exchange, venue.endpoint_override or "", venue.ws_endpoint_override)
        positions = exchange.fetch_positions(venue.symbols)
        assert len(positions) == len(sim.market.positions(venue.id, venue.account))


def test_env_file_is_shell_compatible(sim: SimulatorStack, tmp_path: Path) -> None:
    paths = sim.write_config(tmp_path)
    name = "RISK_MONITOR_FIREBLOCKS_SECRET_KEY"
    script = f'set -a; . "{paths["env"]}"; set +a; printf %s "${name}"'
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30,
                            check=True)
    assert result.stdout == sim.env()[name]


def test_control_plane_steps_and_switches_faults(sim: SimulatorStack) -> None:
    control = sim.control_url
    assert control is not None
    assert http(f"{control}/health") == {"ok": True}
    info = http(f"{control}/scenario")
    assert info["name"] == "calm" and info["index"] == 0
    assert http(f"{control}/endpoints")["okx"]["http"] == sim.venue("okx").url
    record = http(f"{control}/scenario/step", "POST", {})
    assert record["index"] == 1 and record["label"] == sim.scenario.steps[0].label
    assert http(f"{control}/scenario/state")["step"] == 1
    http(f"{control}/faults/okx", "POST", {"kind": "http_error", "count": 1,
                                          "params": {"status": 503}})
    assert [f.kind for f in sim.venue("okx").faults.snapshot()] == ["http_error"]
    http(f"{control}/faults/okx", "DELETE")
    assert sim.venue("okx").faults.snapshot() == []
    before = sim.market.clock.elapsed()
    assert http(f"{control}/clock/advance", "POST", {"seconds": 5})["elapsed"] == before + 5
    http(f"{control}/scenario/action", "POST",
         {"set_price": {"symbol": BTC, "price": 42000}})
    assert sim.market.quote("binance", BTC).last == 42000
    with pytest.raises(urllib.error.HTTPError) as bad:
        http(f"{control}/scenario/action", "POST", {"set_price": {"symbol": BTC}})
    assert bad.value.code == 400
    http(f"{control}/scenario/reset", "POST", {})
    assert http(f"{control}/scenario")["index"] == 0
    assert sim.market.quote("binance", BTC).last == 60000


def test_cli_lists_validates_and_steps(sim: SimulatorStack, tmp_path: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(cli, ["scenarios"])
    assert listed.exit_code == 0
    assert all(name in listed.output for name in list_scenarios())
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ninstruments: {}\n")
    result = runner.invoke(cli, ["validate", str(bad)])
    assert result.exit_code != 0 and "instruments" in result.output
    stepped = runner.invoke(cli, ["step", "--control", sim.control_url or ""])
    assert stepped.exit_code == 0, stepped.output
    assert f"step 1: {sim.scenario.steps[0].label}" in stepped.output


def test_missing_simulators_are_tolerated_and_reported() -> None:
    with SimulatorStack("custodian_errors", components=["binance", "okx"],
                        control=False) as stack:
        assert stack.fireblocks is None and "fireblocks" not in stack.endpoints()
        assert "custodians" not in stack.settings_document()
        stack.player.step()
        with pytest.raises(ScenarioError, match="fireblocks simulator"):
            stack.player.step()  # its faults need Fireblocks
        absent = stack._optional("fireblocks", "risk_sim.not_written_yet", "Nothing")
        assert absent is None and "risk_sim.not_written_yet" in stack.missing["fireblocks"]


def test_risk_sim_up_runs_until_sigterm(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    process = subprocess.Popen(
        [sys.executable, "-c", "from risk_sim.cli import main; main()", "up",
         "--scenario", "limit_breach", "--clock", "manual", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + scaled(60)
        lines: list[str] = []
        while time.monotonic() < deadline:
            line = process.stdout.readline() if process.stdout else ""
            if not line:
                break
            lines.append(line)
            if line.startswith("Step it with"):
                break
        assert any("is up" in line for line in lines), "".join(lines)
        endpoints = json.loads((out / "endpoints.json").read_text())
        assert endpoints["scenario"] == "limit_breach"
        record = http(f"{endpoints['control']}/scenario/step", "POST", {})
        assert record["label"].startswith("baseline")
        with urllib.request.urlopen(f"{endpoints['binance']['http']}/fapi/v1/ping",
                                    timeout=10) as answer:
            assert answer.status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
