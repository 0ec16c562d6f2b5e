"""Retry, timeout and circuit-breaker policies, driven by real functions that fail N times."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest
from prometheus_client import REGISTRY

from risk_monitor.platform.errors import (
    CircuitOpenError,
    RateLimitedError,
    SourceAuthenticationError,
    SourceUnavailableError,
)
from risk_monitor.platform.resilience import SourceGuard, backoff_delay, guard_for
from risk_monitor.platform.settings import ResilienceSettings, Settings
from risk_monitor_tests.fixtures.guards import clear_guards
from risk_monitor_tests.fixtures.waiting import wait_until

FAST = ResilienceSettings(timeout_s=1.0, max_attempts=4, backoff_initial_s=0.01,
                          backoff_max_s=0.05, breaker_fail_max=2, breaker_reset_s=0.3)


class Flaky:
    """Fails ``failures`` times with ``error`` and then returns ``value``."""

    def __init__(self, failures: int, error: BaseException, value: str = "ok") -> None:
        self.failures = failures
        self.error = error
        self.value = value
        self.calls = 0
        self.times: list[float] = []

    def __call__(self) -> str:
        self.calls += 1
        self.times.append(time.monotonic())
        if self.calls <= self.failures:
            raise self.error
        return self.value

    async def acall(self) -> str:
        return self()


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def guard(name: str, settings: ResilienceSettings = FAST) -> SourceGuard:
    return SourceGuard(name, settings, rng=random.Random(0))


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(1)
    for attempt, base in ((1, 0.1), (2, 0.2), (3, 0.4), (6, 1.0)):
        for _ in range(20):
            delay = backoff_delay(attempt, 0.1, 1.0, rng)
            assert base / 2 <= delay <= base


def test_a_retryable_failure_is_retried_until_success() -> None:
    flaky = Flaky(2, ConnectionResetError("peer reset"))
    before = metric("risk_monitor_source_retries_total", source="u-retry", endpoint="read")
    assert guard("u-retry").call("read", flaky) == "ok"
    assert flaky.calls == 3
    assert metric("risk_monitor_source_retries_total", source="u-retry",
                  endpoint="read") - before == 2


def test_retries_stop_after_max_attempts_with_our_error() -> None:
    flaky = Flaky(10, TimeoutError("slow"))
    with pytest.raises(SourceUnavailableError) as info:
        guard("u-exhaust").call("read", flaky)
    assert flaky.calls == FAST.max_attempts
    assert info.value.source == "u-exhaust"
    assert info.value.details["endpoint"] == "read"


def test_a_non_retryable_failure_is_not_retried() -> None:
    flaky = Flaky(5, SourceAuthenticationError("bad key", source="u-auth"))
    with pytest.raises(SourceAuthenticationError):
        guard("u-auth").call("read", flaky)
    assert flaky.calls == 1


def test_a_rate_limit_waits_at_least_retry_after() -> None:
    flaky = Flaky(1, RateLimitedError("429", retry_after=0.2))
    settings = FAST.model_copy(update={"backoff_max_s": 1.0})
    assert guard("u-429", settings).call("read", flaky) == "ok"
    assert flaky.times[1] - flaky.times[0] >= 0.19


def test_a_rate_limit_longer_than_the_backoff_cap_is_not_retried_early() -> None:
    flaky = Flaky(1, RateLimitedError("429", retry_after=60))
    with pytest.raises(RateLimitedError):
        guard("u-429-long").call("read", flaky)
    assert flaky.calls == 1


def test_a_hung_call_times_out_as_unavailable() -> None:
    """The guard gives up on a call that is still hanging: an order, not a speed bound."""
    settings = FAST.model_copy(update={"max_attempts": 1})
    release = threading.Event()
    finished: list[bool] = []

    def hang() -> None:
        release.wait(60)
        finished.append(True)

    try:
        with pytest.raises(SourceUnavailableError, match="did not answer"):
            guard("u-hang", settings).call("read", hang, timeout_s=0.2)
        assert finished == []  # the guard answered while the call still hung
    finally:
        release.set()


def test_the_breaker_opens_after_fail_max_exhausted_calls_and_half_opens_later() -> None:
    g = guard("u-breaker")
    for _ in range(FAST.breaker_fail_max):
        with pytest.raises(SourceUnavailableError):
            g.call("read", Flaky(99, ConnectionRefusedError("down")))
    assert g.state == "open"
    refused = Flaky(0, RuntimeError("never"))
    with pytest.raises(CircuitOpenError):
        g.call("read", refused)
    assert refused.calls == 0  # the breaker did not let the call through
    assert metric("risk_monitor_circuit_breaker_state", source="u-breaker") == 2
    # once ``breaker_reset_s`` has passed, one trial call goes through and closes it again
    # (polled: pybreaker reads the wall clock, which a test cannot set)
    trial = Flaky(0, RuntimeError("never"))
    wait_until(lambda: _lets_through(g, trial), timeout=30,
               message="the breaker to half-open after breaker_reset_s")
    assert trial.calls == 1  # every earlier attempt was refused without calling
    assert g.state == "closed"


def _lets_through(g: SourceGuard, call: Flaky) -> bool:
    try:
        return g.call("read", call) == "ok"
    except CircuitOpenError:
        return False


def test_errors_that_are_our_fault_do_not_trip_the_breaker() -> None:
    g = guard("u-breaker-auth")
    for _ in range(FAST.breaker_fail_max + 2):
        with pytest.raises(SourceAuthenticationError):
            g.call("read", Flaky(99, SourceAuthenticationError("bad key")))
    assert g.state == "closed"


def test_async_calls_retry_and_time_out() -> None:
    async def scenario() -> None:
        flaky = Flaky(2, ConnectionResetError("reset"))
        assert await guard("u-async").acall("read", flaky.acall) == "ok"
        assert flaky.calls == 3

        async def hang() -> str:  # a server that never answers: only the guard's timeout ends it
            await asyncio.Event().wait()
            return "late"

        settings = FAST.model_copy(update={"max_attempts": 2})
        with pytest.raises(SourceUnavailableError, match="did not answer"):
            await guard("u-async-hang", settings).acall("read", hang, timeout_s=0.1)

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_async_breaker_rejects_while_open() -> None:
    async def scenario() -> None:
        g = guard("u-async-breaker")
        for _ in range(FAST.breaker_fail_max):
            with pytest.raises(SourceUnavailableError):
                await g.acall("read", Flaky(99, ConnectionRefusedError("down")).acall)
        with pytest.raises(CircuitOpenError):
            await g.acall("read", Flaky(0, RuntimeError("never")).acall)

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_guard_for_shares_one_guard_per_source_and_settings() -> None:
    clear_guards()
    settings = Settings(resilience=FAST)
    assert guard_for(settings, "a") is guard_for(settings, "a")
    assert guard_for(settings, "a") is not guard_for(settings, "b")
    assert not guard_for(settings, "a").shared  # no redis_url: in-memory breaker
    clear_guards()
