"""Dagster entry point: every definition under ``risk_monitor/defs``, JSON run logging, the
executor the deployment configured (in-process unless it asks for Celery) and the embedded
SQLite instance's commit mode (``defs/sqlite_instance.py``)."""

import functools
import gc
import logging
import warnings
from pathlib import Path

import dagster as dg

from risk_monitor.defs.executors import risk_executor
from risk_monitor.defs.sqlite_instance import commit_without_fsync
from risk_monitor.platform.logging import configure_logging, run_events_handler

DEFAULT_DAGSTER_UI_URL = "http://127.0.0.1:3000"

# Deliberate use of a beta API: content-hash data versions on every collection output
# (defs/collection_support.py). Known and pinned with dagster 1.13, so not repeated per run.
warnings.filterwarnings("ignore", message=r"Parameter `data_version` of initializer `Output",
                        category=dg.BetaWarning)
# dagster.yaml's run-events handler (python_logs.dagster_handler_config) is beta in 1.13.
warnings.filterwarnings("ignore", message=r"Handling yaml-defined logging configuration",
                        category=dg.BetaWarning)


@dg.logger(
    config_schema={"log_level": dg.Field(str, is_required=False, default_value="INFO")},
    description="Dagster's own run and step events as JSON lines, like the rest of Risk Monitor.",
)
def json_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger("dagster.risk_monitor", level=logging.DEBUG)
    logger.addHandler(run_events_handler(init_context.logger_config["log_level"],
                                         _dagster_ui_url()))
    return logger


def _dagster_ui_url() -> str:
    from risk_monitor.platform.errors import RiskMonitorError
    from risk_monitor.platform.settings import load_settings

    try:
        return load_settings().alerts.dagster_ui_url
    except RiskMonitorError:  # a bad configuration fails the run's resources, not its logger
        return DEFAULT_DAGSTER_UI_URL


@functools.cache
def _defs_folder() -> dg.Definitions:
    """The defs folder, walked once per process: Dagster calls :func:`defs` several times per
    run (origin, job, each step's context), and each walk rebuilds the component tree.

    Before and after the walk, every object alive so far (Dagster, pandas, SQLAlchemy, our
    modules and definitions: what the process keeps until it exits) leaves the cyclic garbage
    collector's generations (``gc.freeze``). Without that, each full collection during the walk
    and the run walks them all again, and so does the interpreter's exit: measured on a
    ``risk_cycle`` run worker, ~0.35 s of CPU before the last step and 0.6-1 s at exit, a
    quarter of the process's CPU. Frozen objects are still freed when their last reference
    goes; only cycles among them stay until exit.

    During the walk the collector is off: the walk imports modules and builds definitions, so
    almost everything it allocates lives as long as the process and each collection would
    only re-walk survivors (measured on a ``risk_cycle`` run worker: ~220 collections,
    ~35 ms of CPU). It is back on before the walk returns, whether the walk succeeds or not.
    """
    gc.freeze()  # Dagster's objects: a full collection while the walk imports skips them
    enabled = gc.isenabled()
    gc.disable()
    try:
        definitions = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    finally:
        gc.freeze()  # and those of the definitions' imports (pandas, SQLAlchemy, ours)
        if enabled:
            gc.enable()
    return definitions


@dg.definitions
def defs() -> dg.Definitions:
    configure_logging()
    commit_without_fsync()  # the embedded SQLite instance only (defs/sqlite_instance.py)
    return dg.Definitions.merge(
        _defs_folder(),
        dg.Definitions(loggers={"console": json_console_logger}, executor=risk_executor()),
    )
