"""Dagster entry point: every definition under ``risk_monitor/defs``, JSON run logging and the
executor the deployment configured (in-process unless it asks for Celery)."""

import logging
from pathlib import Path

import dagster as dg

from risk_monitor.defs.executors import risk_executor
from risk_monitor.platform.logging import configure_logging, json_handler, resolve_level


@dg.logger(
    config_schema={"log_level": dg.Field(str, is_required=False, default_value="INFO")},
    description="Dagster's own run and step events as JSON lines, like the rest of Risk Monitor.",
)
def json_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    level = resolve_level(init_context.logger_config["log_level"])
    logger = logging.Logger("dagster.risk_monitor", level=level)
    logger.addHandler(json_handler())
    return logger


@dg.definitions
def defs() -> dg.Definitions:
    configure_logging()
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        dg.Definitions(loggers={"console": json_console_logger}, executor=risk_executor()),
    )
