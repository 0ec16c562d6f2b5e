"""Process-wide Prometheus metrics that every layer shares (errors, build info).

Area-specific metrics live next to the code that updates them and register on the same default
registry; the service serves that registry at ``/metrics``.
"""

from __future__ import annotations

from prometheus_client import Counter, Info

from risk_monitor import __version__
from risk_monitor.platform.errors import RiskMonitorError

ERRORS = Counter(
    "risk_monitor_errors_total",
    "Errors by stable error code, source and retryability.",
    ["code", "source", "retryable"],
)

BUILD_INFO = Info("risk_monitor_build", "Version of the running Risk Monitor code.")
BUILD_INFO.info({"version": __version__})


def record_error(error: RiskMonitorError) -> None:
    """Count an error once where it is handled (logged, marked missing, or raised to Dagster)."""
    ERRORS.labels(
        code=error.code, source=error.source or "unknown", retryable=str(error.retryable).lower()
    ).inc()
