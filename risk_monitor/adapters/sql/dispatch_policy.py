"""The outbox dispatcher's rules for a failed attempt and a batch: backoff, the server's
Retry-After, when a batch stops, what an operator reads on a held-back row, and when the
committing thread may post itself; and the shapes the dispatcher works with."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
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


@runtime_checkable
class GatesPosts(Protocol):
    """A notifier whose posts made inside ``gated(gate)`` (on the calling thread) build their
    request and then hand its bytes to ``gate`` (:class:`SendGate`) instead of sending them
    (None: it cannot, with the client it has)."""

    def gated(self, gate: SendGate) -> AbstractContextManager[None] | None: ...


class PostAborted(BaseException):
    """Raised at a :class:`SendGate` that was aborted (the transaction behind the post did not
    commit): nothing was sent. A ``BaseException``, so no notifier or retry handler on the way
    mistakes it for a failed attempt."""


class SendGate:
    """Holds a prepared post's first bytes until the transaction that claimed its row is
    decided: :meth:`open` after the commit, :meth:`abort` after a failure. The post is
    rendered and its request built on another thread while the commit is in flight (issue 10:
    that CPU was on the way from the commit to Slack); the bytes then go out on the thread
    that opens the gate, at once (no wake-up of the preparing thread before they are sent).
    Nothing passes a gate that was not opened: an alert is never posted before its commit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._decided = threading.Event()
        self._open: bool | None = None
        self._parked: tuple[Callable[[bytes], None], bytes] | None = None
        self._error: BaseException | None = None
        self.opened_at = 0.0  # perf_counter() of :meth:`open`

    def through(self, send: Callable[[bytes], None], data: bytes) -> None:
        """The preparing thread's send of ``data``: done by the opener if the gate is still
        closed (this thread waits for the decision), else here; :class:`PostAborted` if the
        gate was aborted; the send's own error as it was raised."""
        with self._lock:
            decided = self._open
            if decided is None:
                self._parked = (send, data)
        if decided is None:  # parked: the opener sends it, or the abort drops it
            self._decided.wait()
            if not self._open:
                raise PostAborted("the transaction behind this post did not commit")
            if self._error is not None:
                raise self._error
            return
        if not decided:
            raise PostAborted("the transaction behind this post did not commit")
        send(data)

    def open(self) -> None:
        """The transaction committed: send the parked bytes now, on this thread."""
        with self._lock:
            self._open, parked, self._parked = True, self._parked, None
            self.opened_at = time.perf_counter()
        if parked is not None:
            send, data = parked
            try:
                send(data)
            except BaseException as exc:  # the preparing thread handles it as its own
                self._error = exc
        self._decided.set()

    def abort(self) -> None:
        """The transaction did not commit: the post must not go out."""
        with self._lock:
            self._open = False
            self._parked = None
        self._decided.set()


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
