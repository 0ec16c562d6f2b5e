"""Dagster entry point: every definition under ``risk_monitor/defs``, JSON run logging, the
executor the deployment configured (in-process unless it asks for Celery) and the embedded
SQLite instance's commit mode (``defs/sqlite_instance.py``)."""

import functools
import gc
import importlib
import logging
import pkgutil
import warnings
from types import ModuleType

import dagster as dg
from dagster.components.definitions import LazyDefinitions

import risk_monitor.defs
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


def _module_definitions(module: ModuleType) -> dg.Definitions:
    """One defs module's definitions, by the rule of Dagster's defs folder: its
    ``@dg.definitions`` functions when it has any, else every definition at module scope."""
    lazy = [value for value in vars(module).values() if isinstance(value, LazyDefinitions)]
    if lazy:
        return dg.Definitions.merge(*(load() for load in lazy))
    return dg.load_definitions_from_module(module)


def _walk_defs_folder() -> dg.Definitions:
    """Every module under ``risk_monitor/defs`` (packages and files, in name order), merged.

    Not ``dg.load_from_defs_folder``: for a folder of plain Python modules it gives the same
    definitions (same asset specs, checks, jobs, sensors, schedules and resources), but each
    call also builds a component tree and the JSON schemas of every installed component type
    for the UI's component library, ~0.1-0.2 s of CPU in every run process. The folder holds no
    components (no ``defs.yaml`` / ``component.py``); one that adds them goes back to
    ``dg.load_from_defs_folder``.
    """
    package = risk_monitor.defs
    with warnings.catch_warnings():  # as the defs folder walk: Dagster's own API notices, once
        for category in (dg.PreviewWarning, dg.BetaWarning, dg.SupersessionWarning,
                         DeprecationWarning):  # (e.g. load_definitions_from_module is preview)
            warnings.simplefilter("ignore", category=category)
        names = [package.__name__] + [
            info.name for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")]
        return dg.Definitions.merge(
            *(_module_definitions(importlib.import_module(name)) for name in names))


@functools.cache
def _defs_folder() -> dg.Definitions:
    """The defs folder, walked once per process: Dagster calls :func:`defs` several times per
    run (origin, job, each step's context), and each walk builds the definitions again.

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
        definitions = _walk_defs_folder()
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
