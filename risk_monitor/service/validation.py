"""Bounds on every value a client sends (gRPC and REST), checked before any work is done.

Each rule raises :class:`DataValidationError` naming the field; the gRPC layer answers it with
INVALID_ARGUMENT and REST with 422 and a typed body. Proto3 hands us any double (NaN, inf,
1e308), any enum number and strings up to the message size limit: nothing here trusts that.
Values from a request reach the logs only through :func:`loggable`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import TypeVar

from risk_monitor.platform.errors import DataValidationError

MAX_ID_LENGTH = 64
MAX_INSTRUMENT_LENGTH = 100
MAX_CLIENT_ORDER_ID_LENGTH = 128
MAX_SCOPE_PREFIX_LENGTH = 256
MAX_CURSOR_DIGITS = 19  # a PostgreSQL bigint
MAX_STATUS_FILTERS = 16
#: larger than any order a desk sends; beyond it a double has lost its integer precision
MAX_ORDER_AMOUNT = 1e15
#: WatchAlerts heartbeats: 0 asks for the default; finite values are clamped into this range
MIN_HEARTBEAT_S = 0.1
MAX_HEARTBEAT_S = 300.0
#: longest request value written to a log line
LOG_VALUE_LIMIT = 64

E = TypeVar("E", bound=int)
_ID = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_INSTRUMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9/:._-]*")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
POSITION_SIDES = frozenset({"", "long", "short"})


def _fail(field: str, message: str) -> DataValidationError:
    return DataValidationError(f"{field}: {message}", source="request",
                               details={"field": field})


def identifier(field: str, value: str, *, required: bool = True) -> str:
    """Venue / account / limit ids: the same alphabet the settings and limit schema allow."""
    if not value:
        if required:
            raise _fail(field, "is required")
        return value
    if len(value) > MAX_ID_LENGTH or not _ID.fullmatch(value):
        raise _fail(field, f"must match [a-z0-9][a-z0-9_.-]* and be at most {MAX_ID_LENGTH} "
                    "characters")
    return value


def instrument(field: str, value: str) -> str:
    if not value:
        raise _fail(field, "is required")
    if len(value) > MAX_INSTRUMENT_LENGTH or not _INSTRUMENT.fullmatch(value):
        raise _fail(field, f"must be a ccxt unified symbol of at most {MAX_INSTRUMENT_LENGTH} "
                    "characters, e.g. BTC/USDT:USDT")
    return value


def printable(field: str, value: str, max_length: int) -> str:
    if len(value) > max_length or not _PRINTABLE.fullmatch(value):
        raise _fail(field, f"must be printable ASCII of at most {max_length} characters")
    return value


def amount(field: str, value: float) -> float:
    """A finite, positive quantity or price no larger than :data:`MAX_ORDER_AMOUNT`."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _fail(field, "must be a number")
    if not math.isfinite(value):
        raise _fail(field, "must be a finite number")
    if value <= 0:
        raise _fail(field, "must be > 0")
    if value > MAX_ORDER_AMOUNT:
        raise _fail(field, f"must be at most {MAX_ORDER_AMOUNT:g}")
    return float(value)


def choice(field: str, value: str, allowed: Iterable[str]) -> str:
    options = sorted(allowed)
    if value not in options:
        raise _fail(field, f"must be one of {[o for o in options if o] or options}")
    return value


def enum_numbers(field: str, values: Iterable[E], allowed: Iterable[E]) -> list[E]:
    """Proto3 enums are open: a client may send any number; only declared ones pass."""
    allowed_set = set(allowed)
    items = list(values)
    if len(items) > MAX_STATUS_FILTERS:
        raise _fail(field, f"at most {MAX_STATUS_FILTERS} values")
    for item in items:
        if item not in allowed_set:
            raise _fail(field, f"unknown value {item}; allowed {sorted(map(int, allowed_set))}")
    return items


def cursor(field: str, value: str) -> int | None:
    """None for empty (start at the head), else a non-negative integer from a previous event."""
    if not value:
        return None
    if len(value) > MAX_CURSOR_DIGITS or not value.isascii() or not value.isdigit():
        raise _fail(field, "must be a cursor from a previous AlertEvent")
    return int(value)


def heartbeat(field: str, value: float, default_s: float) -> float:
    """0 (unset) -> default; NaN, inf or negative -> error; else clamped to a sane range.

    NaN once reached the alert wait as ``sleep(0)`` and busy-polled the database.
    """
    if not math.isfinite(value) or value < 0:
        raise _fail(field, f"must be a finite number of seconds >= 0 (0: default "
                    f"{default_s:g}s)")
    if value == 0:
        return default_s
    return min(max(value, MIN_HEARTBEAT_S), MAX_HEARTBEAT_S)


def loggable(value: str | None, limit: int = LOG_VALUE_LIMIT) -> str | None:
    """A request value fit for a log line: at most ``limit`` printable characters and a note of
    how much was cut (a 1 MB field must not become a 1 MB log line)."""
    if value is None:
        return None
    head = "".join(c if c.isprintable() else "?" for c in value[:limit])
    if len(value) > limit:
        head += f"...(+{len(value) - limit} chars)"
    return head
