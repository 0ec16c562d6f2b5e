"""The error hierarchy: stable unique codes, retryability, metadata for Dagster and metrics."""

from __future__ import annotations

from prometheus_client import REGISTRY

from risk_monitor.platform import errors
from risk_monitor.platform.metrics import record_error


def error_classes() -> list[type[errors.RiskMonitorError]]:
    """Every error class, base first."""
    found: list[type[errors.RiskMonitorError]] = []
    stack: list[type[errors.RiskMonitorError]] = [errors.RiskMonitorError]
    while stack:
        cls = stack.pop()
        found.append(cls)
        stack.extend(cls.__subclasses__())
    return found


def test_codes_are_unique_and_well_formed() -> None:
    classes = error_classes()
    codes = [cls.code for cls in classes]
    assert len(codes) == len(set(codes)), codes
    assert all(code.startswith("RM") and len(code) == 5 for code in codes)
    assert len(classes) >= 15


def test_retryable_defaults_follow_the_class() -> None:
    assert errors.SourceUnavailableError("x").retryable
    assert errors.RateLimitedError("x", retry_after=2.0).retryable
    assert not errors.SourceAuthenticationError("x").retryable
    assert not errors.DataValidationError("x").retryable
    assert errors.NotificationError("x").retryable
    assert not errors.NotificationRejectedError("x").retryable
    assert errors.DataSourceError("x", retryable=True).retryable


def test_metadata_carries_code_source_and_retryable() -> None:
    err = errors.RateLimitedError("slow down", source="binance", retry_after=3)
    meta = err.as_metadata()
    assert meta["error_code"] == "RM202"
    assert meta["source"] == "binance"
    assert meta["retryable"] is True
    assert meta["detail_retry_after"] == 3
    assert str(err) == "RM202 [binance]: slow down"


def test_config_error_names_the_key() -> None:
    err = errors.ConfigError("bad", key="venues.0.timeout_ms")
    assert err.key == "venues.0.timeout_ms"
    assert err.as_metadata()["detail_key"] == "venues.0.timeout_ms"


def test_record_error_counts_by_code_source_retryable() -> None:
    labels = {"code": "RM203", "source": "okx-test", "retryable": "false"}
    before = REGISTRY.get_sample_value("risk_monitor_errors_total", labels) or 0.0
    record_error(errors.SourceAuthenticationError("denied", source="okx-test"))
    assert REGISTRY.get_sample_value("risk_monitor_errors_total", labels) == before + 1
