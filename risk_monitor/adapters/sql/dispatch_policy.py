"""The outbox dispatcher's rules for a failed attempt and a batch: backoff, the server's
Retry-After, when a batch stops, what an operator reads on a held-back row, and when the
committing thread may post itself; and the shapes the dispatcher works with."""

from __future__ import annotations

import random
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from risk_monitor.domain.model import Notification
from risk_monitor.domain.silences import Acknowledgement, Silence, Verdict
from risk_monitor.platform.errors import RateLimitedError, RiskMonitorError
from risk_monitor.ports import Notifier

#: the committing thread's post waits at most this per connect, send or receive
INLINE_TIMEOUT_S = 0.25
#: ... and it posts only while the notifier's posts take less than this (moving average): a
#: slow Slack is posted to by the dispatcher's thread, never at the cost of the next commit
INLINE_MAX_SEND_S = 0.02
#: after a failed delivery attempt, posts go through the dispatcher's thread this long
INLINE_HOLD_S = 30.0


@runtime_checkable
class FindsEarlierPosts(Protocol):
    """A notifier that can find a post whose answer was lost (Slack message metadata)."""

    def find_sent(self, notification: Notification, previous_ref: str | None) -> str | None: ...

@runtime_checkable
class PostsThreadNotes(Protocol):
    """A notifier that can reply in an alert's thread (Slack: acknowledgements)."""

    def post_note(self, thread_ref: str, text: str, key: str | None = None) -> str: ...

@runtime_checkable
class BoundsPosts(Protocol):
    """A notifier that can cap how long the calling thread waits on its posts (None: it
    cannot, with the client it has)."""

    def bounded(self, timeout_s: float) -> AbstractContextManager[None] | None: ...


@dataclass(frozen=True)
class ClaimReads:
    """Read with a claim, in its transaction: what decides and threads each delivery."""

    silences: list[Silence]
    acks: list[Acknowledgement]
    roots: dict[tuple[str, int], str]  # (fingerprint, episode) -> thread root ref


@dataclass
class DispatchResult:
    """Outcome of one dispatch: sent, rescheduled, failed for good, and released unsent."""

    sent: int = 0
    retried: int = 0
    failed: int = 0
    deferred: int = 0
    suppressed: int = 0  # held back by a silence or an acknowledgement (recorded, not sent)

    @property
    def claimed(self) -> int:
        return self.sent + self.retried + self.failed + self.deferred + self.suppressed


class InlinePosts:
    """When the committing thread may post the rows it claimed on insert itself: the notifier
    caps its waits (``timeout_s``), accepts our configuration, has not failed an attempt for
    ``INLINE_HOLD_S`` and posts fast (``INLINE_MAX_SEND_S``). Otherwise the dispatcher's
    thread posts: a slow or failing notifier never holds back the next commit for long."""

    def __init__(self, timeout_s: float | None) -> None:
        self.timeout_s = timeout_s  # None: never
        self.send_avg_s = 0.0  # moving average of the notifier's posts
        self._after = 0.0  # monotonic: not before (a failed attempt)

    def bound(self, notifier: Notifier, *, healthy: bool
              ) -> AbstractContextManager[None] | None:
        """The cap to post under, or None: the committing thread must not post now."""
        if self.timeout_s is None or not healthy or not isinstance(notifier, BoundsPosts) \
                or self.send_avg_s > INLINE_MAX_SEND_S or time.monotonic() < self._after:
            return None
        return notifier.bounded(self.timeout_s)

    def sent(self, took_s: float) -> None:
        """A post of any thread took ``took_s``."""
        self.send_avg_s += 0.2 * (took_s - self.send_avg_s)

    def failed(self) -> None:
        """A delivery attempt failed: posts go through the dispatcher's thread a while."""
        self._after = time.monotonic() + INLINE_HOLD_S


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
