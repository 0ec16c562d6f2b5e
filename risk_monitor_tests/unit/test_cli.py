"""The installed `risk-monitor` command, run as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("RISK_MONITOR_CONFIG", None) if env is None or "RISK_MONITOR_CONFIG" not in env \
        else None
    return subprocess.run([str(BIN / "risk-monitor"), *args], capture_output=True, text=True,
                          env=full_env, timeout=60, check=False)


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0, result.stderr
    for command in ("check-config", "serve", "dev"):
        assert command in result.stdout


def test_check_config_prints_masked_configuration(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("venues:\n  - {id: okx, exchange: okx, api_key_env: OKX_K, "
                      "secret_env: OKX_S, password_env: OKX_P}\n")
    secret = "okx-secret-never-printed"
    result = run("check-config", env={"RISK_MONITOR_CONFIG": str(config), "OKX_S": secret})
    assert result.returncode == 0, result.stderr
    assert "exchange: okx" in result.stdout
    assert "OKX_S: set" in result.stdout and "OKX_K: NOT SET" in result.stdout
    assert secret not in result.stdout + result.stderr
    assert "configuration OK" in result.stderr


def test_bad_config_value_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("service:\n  grpc_port: -3\n")
    result = run("check-config", env={"RISK_MONITOR_CONFIG": str(config)})
    assert result.returncode == 2
    assert "service.grpc_port" in result.stderr


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_check_config_formats(fmt: str) -> None:
    result = run("check-config", "--format", fmt)
    assert result.returncode == 0, result.stderr
