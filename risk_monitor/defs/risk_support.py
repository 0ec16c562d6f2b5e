"""Tables, plots and lineage helpers for the risk, alert and compliance assets.

Charts are small hand-made SVGs embedded in Markdown metadata, so the Dagster UI shows them next
to the asset without any extra service or plotting library in the run.
"""

import base64
import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

import dagster as dg
import pandas as pd

from risk_monitor.domain.figures import finite
from risk_monitor.domain.model import LimitResult
from risk_monitor.platform.code_version import code_version
from risk_monitor.platform.settings import Settings

STATUS_COLOURS = {"OK": "#2e7d32", "WARN": "#f9a825", "BREACH": "#c62828", "UNKNOWN": "#6a1b9a"}


# --- charts: hand-made SVG, no plotting library -------------------------------------------------
# matplotlib cost ~0.35 s to import plus ~0.2 s per figure in every run (each Dagster run is a
# fresh process); these SVGs cost well under a millisecond. The Dagster UI renders them like any
# image in Markdown metadata (its sanitizer allows ``data:`` image sources).
_FONT = "font-family='Helvetica,Arial,sans-serif'"
_GROSS, _NET, _AXIS = "#1f77b4", "#ff7f0e", "#9e9e9e"


def _svg_markdown(body: list[str], width: float, height: float, alt: str) -> str:
    svg = (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width:.0f}' height='{height:.0f}' "
           f"viewBox='0 0 {width:.0f} {height:.0f}'>"
           f"<rect width='100%' height='100%' fill='white'/>{''.join(body)}</svg>")
    encoded = base64.b64encode(svg.encode()).decode()
    return f"![{alt}](data:image/svg+xml;base64,{encoded})"


def _text(x: float, y: float, text: str, *, size: int = 11, anchor: str = "start",
          fill: str = "#212121") -> str:
    return (f"<text x='{x:.1f}' y='{y:.1f}' font-size='{size}' text-anchor='{anchor}' "
            f"fill='{fill}' {_FONT}>{html.escape(text)}</text>")


def _finite(value: Any) -> float:
    return finite(value) or 0.0  # a chart draws an unknown figure as 0


def _nice_max(value: float) -> float:
    """A round axis end at or above ``value`` (1, 2, 2.5, 5 x 10^n)."""
    if not math.isfinite(value) or value <= 0:
        return 1.0
    exponent = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exponent:
            return step * exponent
    return 10 * exponent


def utilisation_chart(results: Sequence[LimitResult], top: int = 20) -> str:
    """Horizontal bars of utilisation per (limit, scope), coloured by status; the dashed line
    is the breach level (100 %)."""
    rows = sorted(results, key=lambda r: -(r.utilisation or 0.0))[:top]
    if not rows:
        return "_no limits evaluated_"
    labels = [f"{r.limit_id} · {r.scope}" for r in rows]
    label_w = min(400.0, 6.2 * max(len(label) for label in labels) + 12)
    plot_w, bar_h, gap, top_pad = 420.0, 14.0, 5.0, 10.0
    values = [_finite(r.utilisation) * 100 for r in rows]
    end = _nice_max(max([*values, 100.0]))
    height = top_pad + len(rows) * (bar_h + gap) + 40
    width = label_w + plot_w + 50
    body: list[str] = []
    for i, (r, label, value) in enumerate(zip(rows, labels, values, strict=True)):
        y = top_pad + i * (bar_h + gap)
        body.append(_text(label_w - 6, y + bar_h - 3, label[:64], size=10, anchor="end"))
        w = max(0.0, min(value, end)) / end * plot_w
        body.append(f"<rect x='{label_w:.1f}' y='{y:.1f}' width='{w:.1f}' height='{bar_h}' "
                    f"fill='{STATUS_COLOURS[r.status.value]}'/>")
        if r.utilisation is None:
            body.append(_text(label_w + 4, y + bar_h - 3, r.status.value, size=9,
                              fill=STATUS_COLOURS[r.status.value]))
        else:
            body.append(_text(label_w + w + 4, y + bar_h - 3, f"{value:.0f}%", size=9))
    axis_y = top_pad + len(rows) * (bar_h + gap)
    breach_x = label_w + 100.0 / end * plot_w
    body.append(f"<line x1='{breach_x:.1f}' y1='{top_pad - 4}' x2='{breach_x:.1f}' "
                f"y2='{axis_y:.1f}' stroke='{STATUS_COLOURS['BREACH']}' stroke-dasharray='4 3'/>")
    body.append(f"<line x1='{label_w:.1f}' y1='{axis_y:.1f}' x2='{label_w + plot_w:.1f}' "
                f"y2='{axis_y:.1f}' stroke='{_AXIS}'/>")
    for k in range(5):
        tick = end * k / 4
        body.append(_text(label_w + plot_w * k / 4, axis_y + 13, f"{tick:.0f}", size=9,
                          anchor="middle"))
    body.append(_text(label_w + plot_w / 2, axis_y + 30, "utilisation of breach level (%)",
                      size=10, anchor="middle"))
    return _svg_markdown(body, width, height, "limit utilisation")


def exposure_chart(exposures: pd.DataFrame) -> str:
    """Gross and net USD exposure per asset (millions; net below the axis when short)."""
    assets = exposures[exposures["level"] == "asset"].sort_values("gross_usd", ascending=False)
    if not len(assets):
        return "_no exposures_"
    names = [str(a) for a in assets["asset"]]
    gross = [_finite(v) / 1e6 for v in assets["gross_usd"]]
    net = [_finite(v) / 1e6 for v in assets["net_usd"]]
    high = _nice_max(max([*gross, *net, 0.0]))
    low = -_nice_max(-min(net)) if min(net) < 0 else 0.0
    left, plot_h, top_pad, slot = 60.0, 200.0, 24.0, max(28.0, min(80.0, 560.0 / len(names)))
    width, height = left + slot * len(names) + 20, top_pad + plot_h + 40

    def y_of(value: float) -> float:
        return top_pad + (high - value) / (high - low) * plot_h

    zero = y_of(0.0)
    body: list[str] = [
        f"<rect x='{left + 8}' y='6' width='10' height='10' fill='{_GROSS}'/>",
        _text(left + 22, 15, "gross", size=10),
        f"<rect x='{left + 68}' y='6' width='10' height='10' fill='{_NET}'/>",
        _text(left + 82, 15, "net", size=10),
    ]
    for k in range(5):
        tick = low + (high - low) * k / 4
        body.append(_text(left - 6, y_of(tick) + 3, f"{tick:,.2f}", size=9, anchor="end"))
        body.append(f"<line x1='{left}' y1='{y_of(tick):.1f}' x2='{width - 20:.1f}' "
                    f"y2='{y_of(tick):.1f}' stroke='#eeeeee'/>")
    bar = slot * 0.35
    for i, (name, g, n) in enumerate(zip(names, gross, net, strict=True)):
        x = left + i * slot + slot * 0.15
        for offset, value, colour in ((0.0, g, _GROSS), (bar, n, _NET)):
            top_y, bottom_y = sorted((y_of(value), zero))
            body.append(f"<rect x='{x + offset:.1f}' y='{top_y:.1f}' width='{bar:.1f}' "
                        f"height='{bottom_y - top_y:.1f}' fill='{colour}'/>")
        body.append(_text(x + bar, top_pad + plot_h + 14, name[:10], size=10, anchor="middle"))
    body.append(f"<line x1='{left}' y1='{zero:.1f}' x2='{width - 20:.1f}' y2='{zero:.1f}' "
                f"stroke='{_AXIS}'/>")
    body.append(_text(14, top_pad + plot_h / 2, "USD millions", size=10, anchor="middle")
                .replace("<text ", f"<text transform='rotate(-90 14 {top_pad + plot_h / 2:.1f})' "))
    return _svg_markdown(body, width, height, "exposures per asset")


def input_data_versions(context: dg.AssetExecutionContext, keys: Iterable[str]
                        ) -> dict[str, dict[str, str | None]]:
    """Data version and run of each named asset's latest materialisation (for the audit log),
    read in one event-log query for all of them (one query per key cost ~2 % of the demo)."""
    names = list(keys)
    records = context.instance.get_asset_records([dg.AssetKey(key) for key in names])
    latest = {record.asset_entry.asset_key: record.asset_entry.last_materialization
              for record in records}
    versions: dict[str, dict[str, str | None]] = {}
    for key in names:
        event = latest.get(dg.AssetKey(key))
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
        "run_id": context.run.run_id,
        "job_name": context.job_name,
        "dagster_run_url": f"{ui}/runs/{context.run.run_id}",
        "dagster_asset_url": f"{ui}/assets/limit_status",
        "input_data_versions": input_data_versions(context, inputs),
        "limit_config_version": config_version,
        "code_version": code_version(),
        "source": "dagster",
    }
