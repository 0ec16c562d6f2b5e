"""The SVG charts in the risk assets' metadata: well-formed images that show every row, the
breach line, and survive missing or infinite values (no plotting library involved)."""

from __future__ import annotations

import base64
import math
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pandas as pd

from risk_monitor.defs.risk_support import STATUS_COLOURS, exposure_chart, utilisation_chart
from risk_monitor.domain.model import LimitResult, LimitStatus

SVG = "{http://www.w3.org/2000/svg}"


def svg_of(markdown: str) -> ET.Element:
    assert markdown.startswith("![") and "(data:image/svg+xml;base64," in markdown
    encoded = markdown.split("base64,", 1)[1].removesuffix(")")
    return ET.fromstring(base64.b64decode(encoded))


def texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def result(limit_id: str, status: LimitStatus, utilisation: float | None) -> LimitResult:
    return LimitResult(limit_id=limit_id, limit_kind="max_notional", scope="venue:binance",
                       status=status, value=None if utilisation is None else utilisation * 1e6,
                       warn_level=8e5, breach_level=1e6, utilisation=utilisation,
                       as_of=datetime(2025, 1, 1, tzinfo=UTC), config_version="test")


def test_utilisation_chart_draws_each_limit_in_its_status_colour() -> None:
    results = [result("a_ok", LimitStatus.OK, 0.5), result("b_breach", LimitStatus.BREACH, 1.3),
               result("c_unknown", LimitStatus.UNKNOWN, None),
               result("d_warn", LimitStatus.WARN, float("nan"))]
    root = svg_of(utilisation_chart(results))
    labels = texts(root)
    for r in results:
        assert f"{r.limit_id} · {r.scope}" in labels
    assert "UNKNOWN" in labels and "130%" in labels and "50%" in labels
    fills = {rect.get("fill") for rect in root.iter(f"{SVG}rect")}
    assert {STATUS_COLOURS["OK"], STATUS_COLOURS["BREACH"]} <= fills
    widths = [float(rect.get("width", "0")) for rect in root.iter(f"{SVG}rect")
              if rect.get("fill") != "white"]
    assert all(math.isfinite(w) and w >= 0 for w in widths)
    dashed = [line for line in root.iter(f"{SVG}line") if line.get("stroke-dasharray")]
    assert len(dashed) == 1  # the breach level
    assert utilisation_chart([]) == "_no limits evaluated_"


def test_exposure_chart_shows_every_asset_long_and_short() -> None:
    table = pd.DataFrame({
        "level": ["asset", "asset", "asset", "venue"],
        "asset": ["BTC", "ETH", "SOL", None],
        "gross_usd": [5e6, 2e6, float("nan"), 7e6],
        "net_usd": [-4e6, 1.5e6, float("inf"), 1e6],
    })
    root = svg_of(exposure_chart(table))
    labels = texts(root)
    assert {"BTC", "ETH", "SOL", "gross", "net"} <= set(labels)
    heights = [float(rect.get("height", "0")) for rect in root.iter(f"{SVG}rect")
               if rect.get("height") not in (None, "100%")]
    assert all(math.isfinite(h) and h >= 0 for h in heights)
    assert any(label.startswith("-") for label in labels)  # an axis below zero for the short
    assert exposure_chart(table[table["level"] == "venue"]) == "_no exposures_"
