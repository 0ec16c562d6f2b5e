"""The figures an evaluation records: named risk metrics and portfolio equity points.

The writers (both evaluation paths) and the readers (API, dashboard, Prometheus) share these
names; the store only saves them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")  # a Prometheus metric or label name


def finite(value: Any) -> float | None:
    """A number (or a number's text, as venues send prices) as a float when it is a finite
    one, else None: unknown never travels as NaN (or as 0) to a reader. A bool is no number.

    Also the per-tick float check of the hot path (several calls per tick): a float, the
    common case, is answered first without the conversion."""
    if type(value) is float:
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class EquityPoint:
    """Portfolio equity at one time (start of day, peak and drawdown read its history)."""

    scope: str
    at: datetime
    equity: float


@dataclass(frozen=True)
class MetricValue:
    """One named risk figure, e.g. ``exposure_usd{venue="binance",asset="BTC"}``.

    ``name`` has no prefix (the collector adds ``risk_monitor_``); ``value`` None means unknown.
    """

    name: str
    value: float | None
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"metric name {self.name!r} is not a Prometheus name")
        bad = [k for k in self.labels if not _NAME.match(k) or k.startswith("__")]
        if bad:
            raise ValueError(f"label names {bad} of {self.name!r} are not Prometheus names")

    @property
    def labels_key(self) -> str:
        return json.dumps({k: str(v) for k, v in self.labels.items()}, sort_keys=True,
                          separators=(",", ":"))


# -- the figures an evaluation stores in ``risk_metrics_latest`` (writers' and readers' contract) -
#: unlabelled portfolio figures
EQUITY_METRIC = "portfolio_equity_usd"
GROSS_METRIC = "portfolio_gross_usd"
NET_METRIC = "portfolio_net_usd"
DAILY_PNL_METRIC = "portfolio_daily_pnl_usd"
UNREALIZED_PNL_METRIC = "portfolio_unrealized_pnl_usd"
DRAWDOWN_METRIC = "portfolio_drawdown_pct"
LEVERAGE_METRIC = "portfolio_leverage"
#: per level: labels ``{level="venue", venue=...}`` or ``{level="asset", asset=...}``
EXPOSURE_GROSS_METRIC = "exposure_gross_usd"
EXPOSURE_NET_METRIC = "exposure_net_usd"
#: labels ``{venue=...}``: balances + unrealized P&L at the venue (counterparty exposure)
VENUE_EQUITY_METRIC = "venue_equity_usd"
#: every name an evaluation writes (pass as ``names`` to :meth:`LatestEvaluationStore.replace_metrics`)
EVALUATION_METRIC_NAMES: tuple[str, ...] = (
    EQUITY_METRIC, GROSS_METRIC, NET_METRIC, DAILY_PNL_METRIC, UNREALIZED_PNL_METRIC,
    DRAWDOWN_METRIC, LEVERAGE_METRIC, EXPOSURE_GROSS_METRIC, EXPOSURE_NET_METRIC,
    VENUE_EQUITY_METRIC,
)
