"""Tables, plots and lineage helpers for the risk, alert and compliance assets.

Plots are PNGs embedded in Markdown metadata, so the Dagster UI shows them next to the asset
without any extra service; matplotlib is imported on first use (it costs ~0.3 s per process).
"""

import base64
import io
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pandas as pd

from risk_monitor import __version__
from risk_monitor.domain.model import LimitResult
from risk_monitor.platform.settings import Settings

OWNERS = ["team:risk"]
STATUS_COLOURS = {"OK": "#2e7d32", "WARN": "#f9a825", "BREACH": "#c62828", "UNKNOWN": "#6a1b9a"}


def utc_now() -> datetime:
    return datetime.now(UTC)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        return f"{value:,.2f}"
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat(timespec="seconds")
    return str(value).replace("|", "\\|")


def md_table(frame: pd.DataFrame, rows: int = 30) -> str:
    """A frame as a Markdown table (the first ``rows`` rows)."""
    if not len(frame):
        return "_no rows_"
    head = frame.head(rows)
    lines = ["| " + " | ".join(str(c) for c in head.columns) + " |",
             "|" + "|".join("---" for _ in head.columns) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |"
              for row in head.itertuples(index=False)]
    if len(frame) > rows:
        lines.append(f"\n_{len(frame) - rows} more rows_")
    return "\n".join(lines)


def _png_markdown(fig: Any, alt: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f"![{alt}](data:image/png;base64,{encoded})"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def utilisation_chart(results: Sequence[LimitResult], top: int = 20) -> str:
    """Horizontal bars of utilisation per (limit, scope), coloured by status."""
    rows = sorted(results, key=lambda r: -(r.utilisation or 0.0))[:top]
    if not rows:
        return "_no limits evaluated_"
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(rows) + 1))
    labels = [f"{r.limit_id} · {r.scope}" for r in rows][::-1]
    values = [(r.utilisation or 0.0) * 100 for r in rows][::-1]
    colours = [STATUS_COLOURS[r.status.value] for r in rows][::-1]
    ax.barh(labels, values, color=colours)
    for i, r in enumerate(rows[::-1]):
        if r.utilisation is None:
            ax.text(1, i, r.status.value, va="center", fontsize=7, color="white")
    ax.axvline(100, color="#c62828", linestyle="--", linewidth=1)
    ax.set_xlabel("utilisation of breach level (%)")
    ax.tick_params(axis="y", labelsize=7)
    return _png_markdown(fig, "limit utilisation")


def exposure_chart(exposures: pd.DataFrame) -> str:
    """Gross and net USD exposure per asset."""
    assets = exposures[exposures["level"] == "asset"].sort_values("gross_usd", ascending=False)
    if not len(assets):
        return "_no exposures_"
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3))
    x = range(len(assets))
    ax.bar([i - 0.2 for i in x], assets["gross_usd"].fillna(0) / 1e6, width=0.4, label="gross")
    ax.bar([i + 0.2 for i in x], assets["net_usd"].fillna(0) / 1e6, width=0.4, label="net")
    ax.set_xticks(list(x), [str(a) for a in assets["asset"]])
    ax.set_ylabel("USD millions")
    ax.legend()
    return _png_markdown(fig, "exposures per asset")


def input_data_versions(context: dg.AssetExecutionContext, keys: Iterable[str]
                        ) -> dict[str, dict[str, str | None]]:
    """Data version and run of each named asset's latest materialisation (for the audit log)."""
    versions: dict[str, dict[str, str | None]] = {}
    for key in keys:
        event = context.instance.get_latest_materialization_event(dg.AssetKey(key))
        if event is None or event.asset_materialization is None:
            versions[key] = {"data_version": None, "run_id": None}
            continue
        tags = event.asset_materialization.tags or {}
        versions[key] = {"data_version": tags.get("dagster/data_version"),
                         "run_id": event.run_id}
    return versions


def alert_context(context: dg.AssetExecutionContext, settings: Settings,
                  inputs: Iterable[str], config_version: str) -> dict[str, Any]:
    """What every alert of this run carries: where it came from and how to look at it."""
    ui = settings.alerts.dagster_ui_url.rstrip("/")
    return {
        "run_id": context.run_id,
        "job_name": context.job_name,
        "dagster_run_url": f"{ui}/runs/{context.run_id}",
        "dagster_asset_url": f"{ui}/assets/limit_status",
        "input_data_versions": input_data_versions(context, inputs),
        "limit_config_version": config_version,
        "code_version": __version__,
        "source": "dagster",
    }
