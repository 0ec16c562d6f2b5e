"""Settings: YAML + environment, validated, errors naming the key, secrets by reference only."""

from __future__ import annotations

from pathlib import Path

import pytest

from risk_monitor.platform.errors import ConfigError, ProductionPurityError
from risk_monitor.platform.logging import redact_text
from risk_monitor.platform.settings import Settings, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_need_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RISK_MONITOR_CONFIG", raising=False)
    settings = load_settings()
    assert settings.venues == []
    assert settings.effective_database_url.startswith("sqlite:///")
    assert settings.effective_limits_file.name == "limits.yaml"
    assert settings.effective_limits_file.exists()


def test_yaml_and_environment_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, """
venues:
  - id: binance
    exchange: binanceusdm
    api_key_env: BIN_KEY
    secret_env: BIN_SECRET
alerts:
  repeat_interval_s: 900
""")
    monkeypatch.setenv("RISK_MONITOR_CONFIG", str(path))
    monkeypatch.setenv("RISK_MONITOR_ALERTS__REPEAT_INTERVAL_S", "120")
    settings = load_settings()
    assert settings.venues[0].exchange == "binanceusdm"
    assert settings.alerts.repeat_interval_s == 120  # environment beats the file


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("venues:\n  - id: binance\n    exchange: binanceusdm\n    timeout_ms: 5\n",
         "venues.0.timeout_ms"),
        ("venues:\n  - id: Bad Id\n    exchange: okx\n", "venues.0.id"),
        ("alerts:\n  repeat_interval_s: -1\n", "alerts.repeat_interval_s"),
        ("slack:\n  base_url: http://127.0.0.1:1/api\n", "slack.base_url"),
        ("unknown_section: 1\n", "unknown_section"),
        ("market_data:\n  max_age_s: soon\n", "market_data.max_age_s"),
    ],
)
def test_bad_value_names_the_key(tmp_path: Path, yaml_text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, yaml_text))
    assert info.value.key == key
    assert key in str(info.value)


def test_bad_environment_value_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RISK_MONITOR_CONFIG", raising=False)
    monkeypatch.setenv("RISK_MONITOR_SERVICE__GRPC_PORT", "99999")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.key == "service.grpc_port"


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path, "venues: [\n"))


def test_sandbox_options_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "venues:\n  - id: okx\n    exchange: okx\n    options:\n"
                           "      sandboxMode: true\n")
    with pytest.raises(ProductionPurityError) as info:
        load_settings(path)
    assert info.value.key == "venues.0.options"


def test_duplicate_venue_accounts_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "venues:\n  - {id: okx, exchange: okx}\n  - {id: okx, exchange: okx}\n")
    with pytest.raises(ConfigError, match="duplicate"):
        load_settings(path)


def test_secrets_resolve_from_environment_and_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_VENUE_SECRET", "zz-venue-secret-zz")
    value = Settings.secret("SOME_VENUE_SECRET", key="venues.0.secret_env")
    assert value is not None and value.get_secret_value() == "zz-venue-secret-zz"
    assert "zz-venue-secret-zz" not in str(value)  # SecretStr hides it
    assert redact_text("echo zz-venue-secret-zz") == "echo ***"
    with pytest.raises(ConfigError) as info:
        Settings.require_secret("NOT_SET_ANYWHERE", key="slack.token_env")
    assert info.value.key == "slack.token_env"


def test_masked_shows_secret_names_not_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    monkeypatch.setenv("BIN_SECRET", "binance-secret-value")
    path = write(tmp_path, """
database_url: postgresql+psycopg2://risk:dbpassword@db:5432/risk
venues:
  - {id: binance, exchange: binanceusdm, api_key_env: BIN_KEY, secret_env: BIN_SECRET}
""")
    masked = load_settings(path).masked()
    text = repr(masked)
    assert "binance-secret-value" not in text and "dbpassword" not in text
    assert masked["secrets"] == {"BIN_KEY": "NOT SET", "BIN_SECRET": "set"}


def test_masked_hides_a_password_without_a_user_name(tmp_path: Path) -> None:
    path = write(tmp_path, "redis_url: redis://:redispassword@cache:6379/0\n")
    masked = load_settings(path).masked()
    assert "redispassword" not in repr(masked)
    assert masked["redis_url"] == "redis://:***@cache:6379/0"


def test_configuration_reference_is_up_to_date() -> None:
    from risk_monitor.platform.settings_reference import render

    doc = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"
    assert doc.read_text() == render(), (
        "docs/configuration.md is stale: run "
        "`python -m risk_monitor.platform.settings_reference > docs/configuration.md`"
    )
