"""Timeouts, retries and circuit breakers for every call to an outside source.

One :class:`SourceGuard` per source (venue, custodian) wraps each call in, from the outside in:

1. a **circuit breaker** (pybreaker) that refuses calls for ``breaker_reset_s`` after
   ``breaker_fail_max`` consecutive failed calls. Its state lives in Redis
   (``pybreaker.CircuitRedisStorage``) when ``settings.redis_url`` is set, because every Dagster run
   is a new process and an in-memory breaker would forget the outage at once; in memory
   otherwise. A Redis outage falls back to "closed" (pybreaker's choice): a broken breaker store
   must not stop data collection.
2. a **retry** (tenacity): up to ``max_attempts`` attempts with exponential backoff and jitter,
   retrying only what :func:`risk_monitor.adapters.errors.map_exception` calls retryable
   (network, timeout, 5xx, 429). A rate limit's ``retry_after`` is honoured: we wait at least that
   long, and give up at once when it is longer than ``backoff_max_s`` (retrying early gets API
   keys banned; blocking a run for minutes is worse than a missing-data marker).
3. a **timeout** per attempt.

The breaker counts one failure per *exhausted* call (not per attempt), and only failures that
say the source is unhealthy (retryable ones): a refused credential or a bad request is our
problem, not the venue's. Every error leaving a guard is a :class:`RiskMonitorError`
(``CircuitOpenError`` when the breaker refuses). Metrics: requests, latency, retries and errors
per source and endpoint, breaker state per source.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pybreaker
from prometheus_client import Counter, Gauge, Histogram
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
)

from risk_monitor.adapters.errors import map_exception
from risk_monitor.platform.errors import (
    CircuitOpenError,
    RateLimitedError,
    RiskMonitorError,
    SourceUnavailableError,
)
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.settings import ResilienceSettings, Settings

T = TypeVar("T")

log = get_logger(__name__)

# --- metrics -------------------------------------------------------------------------------------
SOURCE_REQUESTS = Counter(
    "risk_monitor_source_requests_total",
    "Calls to an outside source by outcome (ok, error, rejected by the open breaker).",
    ["source", "endpoint", "outcome"],
)
SOURCE_LATENCY = Histogram(
    "risk_monitor_source_request_seconds",
    "Latency of one attempt against an outside source.",
    ["source", "endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
SOURCE_RETRIES = Counter(
    "risk_monitor_source_retries_total",
    "Retries of a call to an outside source (attempts after the first).",
    ["source", "endpoint"],
)
SOURCE_ERRORS = Counter(
    "risk_monitor_source_errors_total",
    "Failed attempts against an outside source by error code.",
    ["source", "endpoint", "code"],
)
BREAKER_STATE = Gauge(
    "risk_monitor_circuit_breaker_state",
    "Circuit breaker state per source: 0 closed, 1 half-open, 2 open.",
    ["source"],
)
_STATE_VALUE = {pybreaker.STATE_CLOSED: 0, pybreaker.STATE_HALF_OPEN: 1, pybreaker.STATE_OPEN: 2}


# --- policy --------------------------------------------------------------------------------------
def backoff_delay(attempt: int, initial_s: float, max_s: float,
                  rng: random.Random | None = None) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, capped at ``max_s``.

    Equal jitter keeps a floor (full jitter may retry at once and hammer a struggling venue)
    while still spreading the retries of many processes apart.
    """
    base = min(max_s, initial_s * (2 ** max(0, attempt - 1)))
    draw = (rng or random).random()
    return base / 2 + draw * base / 2


def _as_ours(exc: BaseException, source: str, endpoint: str) -> RiskMonitorError:
    if isinstance(exc, pybreaker.CircuitBreakerError):
        return CircuitOpenError(
            f"circuit breaker open for {source}: calls refused until it half-opens",
            source=source, details={"endpoint": endpoint},
        )
    mapped = map_exception(exc, source=source, endpoint=endpoint)
    if mapped.source is None:
        mapped.source = source
    return mapped


def _run_with_timeout(fn: Callable[[], T], timeout_s: float | None, what: str) -> T:
    """Run a blocking call with a deadline on a daemon thread.

    Client libraries have their own timeouts (ccxt ``timeout``, urllib3 for Fireblocks) and
    adapters set them; this deadline is the backstop for a call that ignores its own, so a
    hung socket can never hang a Dagster run. The abandoned thread is a daemon: it cannot block
    the interpreter's exit.
    """
    if timeout_s is None:
        return fn()
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name=f"guarded-{what}", daemon=True).start()
    if not done.wait(timeout_s):
        raise TimeoutError(f"{what} did not answer within {timeout_s:g}s")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


class _MetricsListener(pybreaker.CircuitBreakerListener):
    def __init__(self, source: str) -> None:
        self._source = source

    def state_change(self, cb: pybreaker.CircuitBreaker,
                     old_state: pybreaker.CircuitBreakerState | None,
                     new_state: pybreaker.CircuitBreakerState) -> None:
        BREAKER_STATE.labels(source=self._source).set(_STATE_VALUE.get(new_state.name, 0))
        if old_state is not None and old_state.name != new_state.name:
            log.warning("circuit breaker state changed", source=self._source,
                        old_state=old_state.name, new_state=new_state.name)


class SourceGuard:
    """Breaker + retry + timeout for one source; sync (:meth:`call`) and async (:meth:`acall`)."""

    def __init__(self, source: str, settings: ResilienceSettings, *,
                 redis_client: Any | None = None, namespace: str = "rm:breaker",
                 rng: random.Random | None = None) -> None:
        self.source = source
        self.settings = settings
        self._rng = rng or random.Random()
        storage: pybreaker.CircuitBreakerStorage
        if redis_client is not None:
            storage = pybreaker.CircuitRedisStorage(
                pybreaker.STATE_CLOSED, redis_client, namespace=f"{namespace}:{source}")
        else:
            storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
        self.shared = redis_client is not None
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=settings.breaker_fail_max,
            reset_timeout=settings.breaker_reset_s,
            exclude=[self._not_a_source_failure],
            listeners=[_MetricsListener(source)],
            state_storage=storage,
            name=source,
            throw_new_error_on_trip=False)

    @staticmethod
    def _not_a_source_failure(exc: BaseException) -> bool:
        return not (isinstance(exc, RiskMonitorError) and exc.retryable)

    def _retryable(self, exc: BaseException) -> bool:
        """What the error mapper calls retryable, minus what waiting cannot fix here."""
        if not isinstance(exc, RiskMonitorError) or isinstance(exc, CircuitOpenError):
            return False
        if isinstance(exc, RateLimitedError) and exc.retry_after is not None \
                and exc.retry_after > self.settings.backoff_max_s:
            return False
        return exc.retryable

    def _wait(self, state: RetryCallState) -> float:
        """Backoff with jitter, at least a rate limit's ``retry_after``."""
        delay = backoff_delay(state.attempt_number, self.settings.backoff_initial_s,
                              self.settings.backoff_max_s, self._rng)
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
            delay = max(delay, float(exc.retry_after))
        return delay

    @property
    def state(self) -> str:
        """``closed``, ``half-open`` or ``open`` (read from the shared store when there is one)."""
        return self.breaker.current_state

    def _retry_policy(self, endpoint: str) -> dict[str, Any]:
        """Attempts, backoff and the retry predicate (the error mapper's verdict) for one call."""
        return {"stop": stop_after_attempt(self.settings.max_attempts), "wait": self._wait,
                "retry": retry_if_exception(self._retryable),
                "before_sleep": self._before_sleep(endpoint), "reraise": True}

    @contextlib.contextmanager
    def _counted(self, endpoint: str) -> Iterator[None]:
        """Count the call's outcome and publish the breaker state; an open breaker becomes ours."""
        try:
            yield
        except pybreaker.CircuitBreakerError as exc:
            self._outcome(endpoint, "rejected")
            raise _as_ours(exc, self.source, endpoint) from None
        except RiskMonitorError:
            self._outcome(endpoint, "error")
            raise
        self._outcome(endpoint, "ok")

    def _outcome(self, endpoint: str, outcome: str) -> None:
        SOURCE_REQUESTS.labels(source=self.source, endpoint=endpoint, outcome=outcome).inc()
        BREAKER_STATE.labels(source=self.source).set(_STATE_VALUE.get(self.state, 0))

    def _before_sleep(self, endpoint: str) -> Callable[[RetryCallState], None]:
        def hook(state: RetryCallState) -> None:
            SOURCE_RETRIES.labels(source=self.source, endpoint=endpoint).inc()
            exc = state.outcome.exception() if state.outcome is not None else None
            wait = state.next_action.sleep if state.next_action is not None else None
            log.warning("source call failed, retrying", source=self.source, endpoint=endpoint,
                        attempt=state.attempt_number,
                        error_code=getattr(exc, "code", None), error=str(exc),
                        wait_s=round(wait, 3) if wait is not None else None)
        return hook

    def _record_attempt(self, endpoint: str, started: float, exc: BaseException | None) -> None:
        SOURCE_LATENCY.labels(source=self.source, endpoint=endpoint).observe(
            time.perf_counter() - started)
        if exc is not None:
            code = exc.code if isinstance(exc, RiskMonitorError) else "RM000"
            SOURCE_ERRORS.labels(source=self.source, endpoint=endpoint, code=code).inc()

    # -- sync -----------------------------------------------------------------------------------
    def call(self, endpoint: str, fn: Callable[[], T], *, timeout_s: float | None = None) -> T:
        """Call ``fn`` under the source's breaker, retry policy and timeout."""
        limit = self.settings.timeout_s if timeout_s is None else timeout_s

        def attempt() -> T:
            started = time.perf_counter()
            try:
                value = _run_with_timeout(fn, limit, f"{self.source}.{endpoint}")
            except BaseException as exc:
                mapped = _as_ours(exc, self.source, endpoint)
                self._record_attempt(endpoint, started, mapped)
                raise mapped from exc
            self._record_attempt(endpoint, started, None)
            return value

        def retried() -> T:
            return Retrying(**self._retry_policy(endpoint))(attempt)

        with self._counted(endpoint):
            return self.breaker.call(retried)

    # -- async ----------------------------------------------------------------------------------
    async def acall(self, endpoint: str, fn: Callable[[], Awaitable[T]], *,
                    timeout_s: float | None = None) -> T:
        """The async twin of :meth:`call`: ``fn`` returns a fresh awaitable per attempt."""
        limit = self.settings.timeout_s if timeout_s is None else timeout_s

        async def attempt() -> T:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(limit):
                    value = await fn()
            except TimeoutError as exc:
                mapped: RiskMonitorError = SourceUnavailableError(
                    f"{self.source}.{endpoint} did not answer within {limit:g}s",
                    source=self.source, details={"endpoint": endpoint})
                self._record_attempt(endpoint, started, mapped)
                raise mapped from exc
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                mapped = _as_ours(exc, self.source, endpoint)
                self._record_attempt(endpoint, started, mapped)
                raise mapped from exc
            self._record_attempt(endpoint, started, None)
            return value

        with self._counted(endpoint), self.breaker.calling():
            retrying = AsyncRetrying(**self._retry_policy(endpoint), sleep=asyncio.sleep)
            value: T = await retrying(attempt)
        return value


# --- one guard per source per process ------------------------------------------------------------
_guards: dict[tuple[Any, ...], SourceGuard] = {}
_guards_lock = threading.Lock()
_redis_clients: dict[str, Any] = {}


def breaker_namespace(settings: Settings) -> str:
    """Redis key prefix of the breakers: under the collection prefix, so one setting isolates
    a deployment (or a test) from every other."""
    return f"{settings.market_data.key_prefix}:breaker"


def _redis_client(url: str) -> Any:
    client = _redis_clients.get(url)
    if client is None:
        import redis  # lazy: processes without Redis never pay for it

        # bytes in, bytes out: pybreaker decodes the state itself
        client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        _redis_clients[url] = client
    return client


def guard_for(settings: Settings, source: str) -> SourceGuard:
    """The process-wide guard of ``source``; its breaker is shared through Redis when configured."""
    key = (source, settings.redis_url, breaker_namespace(settings), settings.resilience)
    with _guards_lock:
        guard = _guards.get(key)
        if guard is None:
            client = _redis_client(settings.redis_url) if settings.redis_url else None
            guard = SourceGuard(source, settings.resilience, redis_client=client,
                                namespace=breaker_namespace(settings))
            _guards[key] = guard
        return guard

