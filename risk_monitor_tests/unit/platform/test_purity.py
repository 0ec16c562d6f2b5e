"""`environment: production` refuses whatever is not a production API, naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from risk_monitor.platform.errors import ConfigError, ProductionPurityError
from risk_monitor.platform.purity import production_purity_violations
from risk_monitor.platform.settings import load_settings

SLACK = {"token_env": "RISK_MONITOR_SLACK_TOKEN"}
VENUE = {"id": "binance", "exchange": "binanceusdm", "api_key_env": "K", "secret_env": "S"}


def production(**sections: object) -> dict[str, object]:
    document: dict[str, object] = {"environment": "production", "slack": SLACK}
    document.update(sections)
    return {k: v for k, v in document.items() if v is not None}


def write(tmp_path: Path, document: dict[str, object]) -> Path:
    path = tmp_path / "risk-monitor.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_a_pure_production_configuration_loads(tmp_path: Path) -> None:
    document = production(
        venues=[{**VENUE, "endpoint_override": "https://fapi.binance.com",
                 "ws_endpoint_override": "wss://fstream.binance.com"}],
        custodians=[{"id": "fireblocks"}],
        config_service={"enabled": True, "url": "http://10.20.0.7:8080"},  # internal: private ok
    )
    settings = load_settings(write(tmp_path, document))
    assert settings.environment == "production"
    assert production_purity_violations(settings) == []


@pytest.mark.parametrize(
    ("sections", "key", "words"),
    [
        ({"venues": [{**VENUE, "endpoint_override": "http://127.0.0.1:9001"}]},
         "venues.0.endpoint_override", "TLS"),
        ({"venues": [{**VENUE, "endpoint_override": "https://127.0.0.1:9001"}]},
         "venues.0.endpoint_override", "loopback"),
        ({"venues": [{**VENUE, "endpoint_override": "https://[::1]:9001"}]},
         "venues.0.endpoint_override", "loopback"),
        ({"venues": [{**VENUE, "endpoint_override": "https://localhost:9001"}]},
         "venues.0.endpoint_override", "loopback"),
        ({"venues": [{**VENUE, "ws_endpoint_override": "wss://192.168.1.20:9002"}]},
         "venues.0.ws_endpoint_override", "private"),
        ({"venues": [{**VENUE, "endpoint_override": "https://venueproxy:9001"}]},
         "venues.0.endpoint_override", "single-label"),
        ({"venues": [{**VENUE, "endpoint_override": "https://testnet.binancefuture.com"}]},
         "venues.0.endpoint_override", "sandbox"),
        ({"venues": [{**VENUE, "enable_rate_limit": False}]},
         "venues.0.enable_rate_limit", "rate limiter"),
        ({"venues": [{**VENUE, "options": {"environment": "testnet"}}]},
         "venues.0.options.environment", "sandbox"),
        ({"custodians": [{"endpoint_override": "https://sandbox-api.fireblocks.io/v1"}]},
         "custodians.0.endpoint_override", "sandbox"),
        ({"custodians": [{"endpoint_override": "https://10.0.0.5/v1"}]},
         "custodians.0.endpoint_override", "private"),
        ({"slack": {**SLACK, "base_url": "http://127.0.0.1:8123/api/"}},
         "slack.base_url", "TLS"),
        ({"slack": {**SLACK, "base_url": "https://slack-sim.example.com/api/"}},
         "slack.base_url", "simulator"),
        ({"slack": None}, "slack", "file sink"),
        ({"config_service": {"url": "http://127.0.0.1:8500"}}, "config_service.url", "loopback"),
        ({"config_service": {"url": "http://config.sim.internal"}}, "config_service.url",
         "simulator"),
    ],
)
def test_production_refuses_naming_the_key(tmp_path: Path, sections: dict[str, object],
                                           key: str, words: str) -> None:
    document = production()
    document.update(sections)
    document = {k: v for k, v in document.items() if v is not None}
    with pytest.raises(ProductionPurityError) as info:
        load_settings(write(tmp_path, document))
    assert info.value.key == key
    assert isinstance(info.value, ConfigError)
    assert f"'{key}'" in str(info.value)
    assert words in str(info.value)


def test_every_refusal_is_listed_not_only_the_first(tmp_path: Path) -> None:
    document = {"environment": "Production",
                "venues": [{**VENUE, "endpoint_override": "http://127.0.0.1:1"}]}
    with pytest.raises(ProductionPurityError) as info:
        load_settings(write(tmp_path, document))
    assert info.value.key == "venues.0.endpoint_override"
    violations = info.value.details["violations"]
    assert [v.split(":", 1)[0] for v in violations] == ["venues.0.endpoint_override", "slack"]
    assert "slack" in str(info.value)


def test_production_set_through_the_environment_is_enforced(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RISK_MONITOR_CONFIG", raising=False)
    monkeypatch.setenv("RISK_MONITOR_ENVIRONMENT", "prod")
    with pytest.raises(ProductionPurityError) as info:
        load_settings()
    assert info.value.key == "slack"


def test_the_same_configuration_is_fine_outside_production(tmp_path: Path) -> None:
    document = {"environment": "ci",
                "venues": [{**VENUE, "endpoint_override": "http://127.0.0.1:1",
                            "enable_rate_limit": False}],
                "slack": {**SLACK, "base_url": "http://127.0.0.1:2/api/"}}
    settings = load_settings(write(tmp_path, document))
    assert production_purity_violations(settings) == []


def test_check_config_reports_the_refusal(tmp_path: Path) -> None:
    """`risk-monitor check-config` loads settings, so it refuses with the key and exits non-zero."""
    path = write(tmp_path, production(
        venues=[{**VENUE, "endpoint_override": "https://127.0.0.1:9"}]))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "risk-monitor"), "--config", str(path), "check-config"],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "venues.0.endpoint_override" in output
    assert "Traceback" not in output
