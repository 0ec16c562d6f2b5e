"""Which executor runs the steps of a risk run: chosen by the deployment, not by the code.

``in_process`` (the default) runs every step of a run in the run's own process: measured here,
the multiprocess executor (a process per step) doubles the tick → alert latency
(docs/benchmarks.md), and a risk run is small. A deployment that wants the steps spread over
worker machines sets ``RISK_MONITOR_DAGSTER_EXECUTOR=celery`` and runs Celery workers
(``dagster-celery worker start``, deploy/celery/); steps then exchange values through the risk
store (:mod:`risk_monitor.defs.io_manager`), never a local disk.

Environment (read when the definitions load, identically in the run and in every worker):

- ``RISK_MONITOR_DAGSTER_EXECUTOR``: ``in_process`` | ``multiprocess`` | ``celery``
- ``RISK_MONITOR_CELERY_BROKER`` / ``RISK_MONITOR_CELERY_BACKEND``: Celery broker and result
  backend URLs (e.g. ``redis://redis:6379/1``), read by Dagster at run time
- ``RISK_MONITOR_CELERY_KEY_PREFIX`` (optional): a Redis key prefix for the broker and result
  backend, so several deployments can share one Redis
"""

import os
from typing import Any

import dagster as dg

from risk_monitor.platform.errors import ConfigError

EXECUTOR_ENV = "RISK_MONITOR_DAGSTER_EXECUTOR"
BROKER_ENV = "RISK_MONITOR_CELERY_BROKER"
BACKEND_ENV = "RISK_MONITOR_CELERY_BACKEND"
KEY_PREFIX_ENV = "RISK_MONITOR_CELERY_KEY_PREFIX"
EXECUTORS = ("in_process", "multiprocess", "celery")
#: dagster-celery's broker transport defaults (dagster_celery.defaults), kept when we add a prefix
_TRANSPORT_DEFAULTS = {"max_retries": 3, "interval_start": 0, "interval_step": 0.2,
                       "interval_max": 0.5}


def celery_config(key_prefix: str | None) -> dict[str, Any]:
    """The celery executor's config: URLs from the environment at run time, optional prefix."""
    config: dict[str, Any] = {"broker": {"env": BROKER_ENV}, "backend": {"env": BACKEND_ENV}}
    if key_prefix:
        config["config_source"] = {
            "broker_transport_options": {**_TRANSPORT_DEFAULTS, "global_keyprefix": key_prefix},
            "result_backend_transport_options": {"global_keyprefix": key_prefix},
        }
    return config


def risk_executor() -> dg.ExecutorDefinition:
    """The executor the deployment configured (see the module docstring)."""
    kind = os.environ.get(EXECUTOR_ENV, "in_process").strip() or "in_process"
    if kind == "in_process":
        return dg.in_process_executor
    if kind == "multiprocess":
        return dg.multiprocess_executor
    if kind == "celery":
        try:
            from dagster_celery import celery_executor
        except ImportError as exc:
            raise ConfigError(f"{EXECUTOR_ENV}=celery needs the 'cluster' extra "
                              "(pip install 'risk-monitor[cluster]')", key=EXECUTOR_ENV) from exc
        configured: dg.ExecutorDefinition = celery_executor.configured(
            celery_config(os.environ.get(KEY_PREFIX_ENV)), name="celery")
        return configured
    raise ConfigError(f"{EXECUTOR_ENV} must be one of {', '.join(EXECUTORS)}, not {kind!r}",
                      key=EXECUTOR_ENV)
