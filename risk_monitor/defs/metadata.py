"""Metadata helpers every asset shares: owners, code version, the clock, Markdown tables."""

import math
from datetime import datetime
from typing import Any

import pandas as pd

from risk_monitor.platform.clock import utc_now  # noqa: F401  (the assets' clock)

# the code version of a module's assets (pass ``__name__``): Dagster then derives each downstream
# data version from its inputs' versions ("same inputs + same code", not "another run")
from risk_monitor.platform.code_version import (  # noqa: F401
    module_code_version as asset_code_version,
)

OWNERS = ["team:risk"]


def _cell(value: Any, precise: bool) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return "" if precise else "—"
        return f"{value:.10g}" if precise else f"{value:,.2f}"
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat() if precise else value.isoformat(timespec="seconds")
    return str(value).replace("|", "\\|")


def md_table(frame: pd.DataFrame, rows: int = 30, *, precise: bool = False) -> str:
    """The first ``rows`` rows as a Markdown table; ``precise`` keeps raw numbers and times
    (data previews), otherwise figures read as money (thousands separators, 2 decimals)."""
    if not len(frame):
        return "_no rows_"
    head = frame.head(rows)
    lines = ["| " + " | ".join(str(c) for c in head.columns) + " |",
             "|" + "|".join("---" for _ in head.columns) + "|"]
    lines += ["| " + " | ".join(_cell(v, precise) for v in row) + " |"
              for row in head.itertuples(index=False)]
    if len(frame) > rows:
        lines.append(f"\n_{len(frame) - rows} more rows_")
    return "\n".join(lines)
