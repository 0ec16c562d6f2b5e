"""The executor is configuration: in-process by default, Celery or multiprocess on request, and
an unknown value is a clear configuration error naming the variable."""

import dagster as dg
import pytest

from risk_monitor.defs.executors import EXECUTOR_ENV, KEY_PREFIX_ENV, celery_config, risk_executor
from risk_monitor.platform.errors import ConfigError


def test_in_process_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EXECUTOR_ENV, raising=False)
    assert risk_executor() is dg.in_process_executor


def test_multiprocess_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EXECUTOR_ENV, "multiprocess")
    assert risk_executor() is dg.multiprocess_executor


def test_celery_reads_broker_urls_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EXECUTOR_ENV, "celery")
    monkeypatch.setenv(KEY_PREFIX_ENV, "risk-prod:")
    executor = risk_executor()
    assert executor.name == "celery"
    config = celery_config("risk-prod:")
    assert config["broker"] == {"env": "RISK_MONITOR_CELERY_BROKER"}
    assert config["backend"] == {"env": "RISK_MONITOR_CELERY_BACKEND"}
    transport = config["config_source"]["broker_transport_options"]
    assert transport["global_keyprefix"] == "risk-prod:" and transport["max_retries"] == 3
    assert "config_source" not in celery_config(None)


def test_the_jobs_take_the_configured_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    from risk_monitor.definitions import defs

    monkeypatch.setenv(EXECUTOR_ENV, "celery")
    assert defs().resolve_job_def("risk_cycle").executor_def.name == "celery"
    monkeypatch.delenv(EXECUTOR_ENV)
    assert defs().resolve_job_def("risk_evaluation").executor_def is dg.in_process_executor


def test_an_unknown_executor_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EXECUTOR_ENV, "threads")
    with pytest.raises(ConfigError) as raised:
        risk_executor()
    assert raised.value.key == EXECUTOR_ENV and "in_process" in str(raised.value)
