"""The project's ``.env``: one Dagster instance and one settings file for every tool, no flags.

Dagster's own CLIs (``dg dev``, ``dg launch``, ``dagster asset materialize``) read ``.env`` in
the working directory before they look for ``DAGSTER_HOME``; ``risk-monitor`` reads the same
file (:func:`load_project_env`). ``risk-sim demo`` and ``risk-monitor dev`` write the absolute
``DAGSTER_HOME`` (Dagster refuses a relative one) and, after the demo, ``RISK_MONITOR_CONFIG``
into it, so the demo, the UI, the CLI materialisations and ``audit`` all meet on the same
instance and store. Variables already set in the environment always win; other lines of an
existing ``.env`` are kept. The file holds paths, never secrets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

ENV_FILE = ".env"
DAGSTER_HOME_ENV = "DAGSTER_HOME"
CONFIG_ENV = "RISK_MONITOR_CONFIG"
#: the only variables Risk Monitor writes into .env (paths; secrets never go there)
MANAGED = (DAGSTER_HOME_ENV, CONFIG_ENV)


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines of a dotenv file (comments and blank lines skipped)."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def load_project_env(root: Path | None = None) -> dict[str, str]:
    """Put the ``.env`` of ``root`` (default: the working directory) into ``os.environ``
    without overriding anything already set; returns what it added."""
    added: dict[str, str] = {}
    for name, value in read_env_file((root or Path.cwd()) / ENV_FILE).items():
        if name not in os.environ:
            os.environ[name] = value
            added[name] = value
    return added


def write_project_env(root: Path, values: Mapping[str, str]) -> Path:
    """Set ``values`` (managed names only) in ``root/.env``, keeping every other line."""
    unknown = set(values) - set(MANAGED)
    if unknown:
        raise ValueError(f"only {MANAGED} are written to {ENV_FILE}, not {sorted(unknown)}")
    path = root / ENV_FILE
    if not path.is_file():
        path.write_text(
            "# Written by risk-monitor / risk-sim: where this project's Dagster instance and\n"
            "# settings live, for dg, dagster and risk-monitor alike. Paths only, no secrets.\n")
    from dotenv import set_key  # atomic rewrite, every other line kept

    for name, value in values.items():
        set_key(path, name, value, quote_mode="never")
    return path
