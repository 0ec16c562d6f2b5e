"""The wall clock, once: whatever reads time takes a ``Clock`` defaulting to :func:`utc_now`,
so tests and replays pass their own (the domain never reads it: time is a parameter)."""

from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

Clock = Callable[[], datetime]

#: now, timezone-aware UTC; a partial calls ``datetime.now`` without a Python frame (the tick
#: path reads it per tick)
utc_now: Clock = partial(datetime.now, UTC)
