"""The wall clock, once: whatever reads time takes a ``Clock`` defaulting to :func:`utc_now`,
so tests and replays pass their own (the domain never reads it: time is a parameter)."""

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)
