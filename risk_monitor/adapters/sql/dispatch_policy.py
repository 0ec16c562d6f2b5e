"""The outbox dispatcher's rules for a failed attempt and a batch: backoff, the server's
Retry-After, when a batch stops, and what an operator reads on a held-back row."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from risk_monitor.domain.silences import Verdict
from risk_monitor.platform.errors import RateLimitedError, RiskMonitorError


@dataclass(frozen=True)
class BackoffPolicy:
    """Exponential backoff with jitter; a server's Retry-After is a floor, never shortened."""

    initial_s: float = 1.0
    max_s: float = 60.0
    multiplier: float = 2.0
    jitter: float = 0.2  # +/- fraction of the delay, so replicas do not retry in lockstep

    def delay(self, attempt: int, retry_after: float | None = None,
              rng: random.Random | None = None) -> float:
        base = min(self.max_s, self.initial_s * self.multiplier ** max(0, attempt - 1))
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        delay = max(0.0, base * (1.0 + spread))
        return max(delay, retry_after or 0.0)


def server_retry_after(error: RiskMonitorError) -> float | None:
    """The seconds the server asked us to wait (429 Retry-After), if it said."""
    raw: Any = error.retry_after if isinstance(error, RateLimitedError) else None
    if raw is None:
        raw = error.details.get("retry_after")
    try:
        value = float(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None
    return value if value is not None and value >= 0 else None


def held_by_text(found: Verdict) -> str:
    """``silence:<id>,...`` or ``ack:<who>``: what an operator reads on the suppressed row."""
    if found.silenced_by:
        return ",".join(f"silence:{sid}" for sid in found.silenced_by)
    return f"ack:{found.acknowledged_by}"


class BatchStop:
    """Shared by the series of one batch: stop after a retryable failure or near the lease."""

    def __init__(self, deadline: datetime) -> None:
        self.deadline = deadline
        self.not_before: datetime | None = None
        self._lock = threading.Lock()

    def trip(self, not_before: datetime) -> None:
        with self._lock:
            if self.not_before is None or not_before > self.not_before:
                self.not_before = not_before

    def stopped(self, now: datetime) -> bool:
        with self._lock:
            return self.not_before is not None or now >= self.deadline
