"""The installed `risk-monitor` command, run as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None
        ) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("RISK_MONITOR_", "DAGSTER_"))}
    full_env.update(env or {})
    return subprocess.run([str(BIN / "risk-monitor"), *args], capture_output=True, text=True,
                          env=full_env, timeout=120, check=False, cwd=cwd or Path.cwd())


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0, result.stderr
    for command in ("check-config", "serve", "dev"):
        assert command in result.stdout


OKX_VENUE = ("  - {id: okx, exchange: okx, api_key_env: OKX_K, secret_env: OKX_S, "
             "password_env: OKX_P}\n")
OKX_ENV = {"OKX_K": "okx-key", "OKX_S": "okx-secret-never-printed", "OKX_P": "okx-pass"}
GOOD_LIMITS = """schema_version: 1
venues: [okx]
limits:
  - {id: okx_btc, kind: max_notional, scope: {venue: okx, instrument: "BTC/USDT:USDT"},
     warn: 800000, breach: 1000000}
  - {id: data_age, kind: data_age, scope: {venue: "*"}, warn: 30, breach: 50}
"""


def write_config(tmp_path: Path, venues: str = OKX_VENUE, limits: str = GOOD_LIMITS,
                 extra: str = "") -> Path:
    (tmp_path / "limits.yaml").write_text(limits)
    config = tmp_path / "c.yaml"
    config.write_text(f"limits_file: {tmp_path / 'limits.yaml'}\nvenues:\n{venues}{extra}")
    return config


def test_check_config_prints_masked_configuration(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = run("check-config", env={"RISK_MONITOR_CONFIG": str(config), **OKX_ENV},
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "exchange: okx" in result.stdout
    assert "OKX_S: set" in result.stdout
    assert OKX_ENV["OKX_S"] not in result.stdout + result.stderr
    assert "configuration OK" in result.stderr


@pytest.mark.parametrize(("venues", "limits", "extra", "env", "key"), [
    pytest.param(OKX_VENUE.replace("exchange: okx", "exchange: krakenn"), GOOD_LIMITS, "",
                 OKX_ENV, "venues[0].exchange", id="misspelled-venue"),
    pytest.param(OKX_VENUE, GOOD_LIMITS, "", {**OKX_ENV, "OKX_P": ""},
                 "venues[0].password_env", id="missing-credential"),
    pytest.param(OKX_VENUE, GOOD_LIMITS.replace("venue: okx,", "venue: binance,"), "", OKX_ENV,
                 "limits[0].scope.venue", id="limit-on-unconfigured-venue"),
    pytest.param(OKX_VENUE, GOOD_LIMITS, "service:\n  positions_poll_s: 40\n", OKX_ENV,
                 "limits[1].warn", id="budget-smaller-than-poll"),
    pytest.param(OKX_VENUE, "limits: [\n  - {id: x", "", OKX_ENV, "(document)",
                 id="limits-not-yaml"),
    pytest.param(OKX_VENUE, "- just\n- a list\n", "", OKX_ENV, "(document)",
                 id="limits-not-a-mapping"),
    pytest.param(OKX_VENUE, GOOD_LIMITS.replace("kind: max_notional", "kind: max_notionl"), "",
                 OKX_ENV, "limits[0].kind", id="limits-unknown-kind"),
    pytest.param(OKX_VENUE, GOOD_LIMITS.replace("warn: 800000", "warn: 1200000"), "", OKX_ENV,
                 "limits[0]", id="limits-warn-above-breach"),
    pytest.param(OKX_VENUE, GOOD_LIMITS, "slack:\n  routes:\n    - {matchers: ['region=eu'], "
                 "channel: '#eu'}\n", OKX_ENV, "slack.routes[0].matchers",
                 id="route-unknown-label"),
    pytest.param(OKX_VENUE, GOOD_LIMITS, "slack:\n  routes:\n    - {matchers: ['venue=okx'], "
                 "routes: [{matchers: ['venue=binance'], channel: '#b'}]}\n", OKX_ENV,
                 "slack.routes[0].routes[0].matchers", id="route-on-unconfigured-venue"),
])
def test_check_config_rejects(tmp_path: Path, venues: str, limits: str, extra: str,
                              env: dict[str, str], key: str) -> None:
    config = write_config(tmp_path, venues, limits, extra)
    result = run("check-config", env={"RISK_MONITOR_CONFIG": str(config), **env}, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert any(key in line for line in errors), result.stderr
    assert all("fix:" in line for line in errors), errors
    in_limits = key.startswith(("limits", "(document)"))
    source = str(tmp_path / ("limits.yaml" if in_limits else "c.yaml"))
    assert any(source in line for line in errors if key in line), errors
    assert "configuration OK" not in result.stderr


def test_a_quote_budget_below_its_poll_is_refused_naming_both_keys(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("market_data:\n  max_age_s: 1\n")
    result = run("check-config", env={"RISK_MONITOR_CONFIG": str(config)}, cwd=tmp_path)
    assert result.returncode != 0
    assert "market_data.max_age_s" in result.stderr
    assert "market_data.poll_interval_s" in result.stderr
    assert "configuration OK" not in result.stderr


def test_bad_config_value_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("service:\n  grpc_port: -3\n")
    result = run("check-config", env={"RISK_MONITOR_CONFIG": str(config)}, cwd=tmp_path)
    assert result.returncode == 2
    assert "service.grpc_port" in result.stderr


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_check_config_formats(fmt: str, tmp_path: Path) -> None:
    result = run("check-config", "--format", fmt, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
