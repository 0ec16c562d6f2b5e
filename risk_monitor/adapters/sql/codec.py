"""Rows <-> domain types, and JSON documents that survive both backends.

Payloads are stored as plain JSON (ISO 8601 times, enum values), redacted on the way in:
whatever lands in a context or audit payload must never carry a secret.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import asdict, fields, is_dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from sqlalchemy.engine import RowMapping

from risk_monitor.domain.figures import finite
from risk_monitor.domain.model import (
    AlertSeverity,
    AlertState,
    LimitResult,
    LimitStatus,
    Notification,
    NotificationKind,
)
from risk_monitor.platform.clock import Clock, utc_now  # noqa: F401  (the stores' default)
from risk_monitor.platform.logging import REDACTED, is_secret_key, redact, redact_text

T = TypeVar("T")


def to_jsonable(value: Any, _depth: int = 0) -> Any:
    """A JSON-safe copy: datetimes as ISO strings, enums as values, NaN/inf as None."""
    if _depth > 16:
        return str(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value, _depth + 1)
    if isinstance(value, date):  # datetime too
        return value.isoformat()
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value), _depth + 1)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v, _depth + 1) for v in value]
    return str(value)


def safe_document(value: Any) -> Any:
    """JSON-safe and redacted: for payloads, contexts and configuration documents.

    ``redact(to_jsonable(value))`` in one walk: the hot path makes an alert's context safe
    several times per change (outbox payload, audit entries), and two walks through the
    generic ``isinstance`` chains cost ~100 µs a context. Plain dicts, lists and scalars
    are handled here; anything else (and anything deeper than ``redact`` goes) by the two
    functions themselves, so the result is theirs exactly."""
    return _safe(value, 0)


def _safe(value: Any, depth: int) -> Any:
    kind = type(value)
    if kind is str:
        return redact_text(value)
    if value is None or kind is bool or kind is int:
        return value
    if kind is float:
        return value if math.isfinite(value) else None
    if depth >= _REDACT_DEPTH:  # the general rules, depth limits included
        return redact(to_jsonable(value, depth), depth)
    if kind is dict:
        safe: dict[str, Any] = {}
        for key, item in value.items():
            name = key if type(key) is str else str(key)
            member = type(item)  # the plain members inline: a call per member was ~half
            if is_secret_key(name):
                plain = to_jsonable(item, depth + 1)
                safe[name] = REDACTED if plain not in (None, "") else redact(plain, depth + 1)
            elif member is str:
                safe[name] = redact_text(item)
            elif item is None or member is bool or member is int:
                safe[name] = item
            else:
                safe[name] = _safe(item, depth + 1)
        return safe
    if kind is list or kind is tuple:
        return [_safe(item, depth + 1) for item in value]
    if kind is datetime:  # to_jsonable's text of it, redacted as redact does
        return redact_text(value.isoformat())
    return redact(to_jsonable(value, depth), depth)


#: the depth from which ``redact`` answers ``REDACTED`` whatever the value (``> 8``), and
#: below which a dict or list is the same level for it and for ``to_jsonable``
_REDACT_DEPTH = 8


def parse_time(value: str | datetime | None) -> datetime | None:
    if value is None:
        return None
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _required_float(value: Any, what: str) -> float:
    as_float = finite(value)
    if as_float is None:
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return as_float


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    """A dataclass's field names, in order (``fields()`` walks the class on every call:
    the hot path converts a few states and notifications per change)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


def _values(obj: Any, **overrides: Any) -> dict[str, Any]:
    """A dataclass's fields (shallow), with ``overrides`` replacing some."""
    return {**{name: getattr(obj, name) for name in _field_names(type(obj))}, **overrides}


def _build(cls: type[T], data: Mapping[str, Any] | RowMapping, **overrides: Any) -> T:
    """``cls`` from ``data``'s values of its fields (each required), ``overrides`` aside."""
    return cls(**{name: data[name] for name in _field_names(cls)  # type: ignore[arg-type]
                  if name not in overrides}, **overrides)


# --- alert states ------------------------------------------------------------------------------
def state_values(state: AlertState) -> dict[str, Any]:
    notified = state.last_notified_status
    return _values(state, status=state.status.value, severity=state.severity.value,
                   last_notified_status=notified.value if notified else None,
                   value=finite(state.value), utilisation=finite(state.utilisation))


def state_from_row(row: Mapping[str, Any] | RowMapping) -> AlertState:
    notified = row["last_notified_status"]
    return _build(AlertState, row, status=LimitStatus(row["status"]),
                  severity=AlertSeverity(row["severity"]),
                  last_notified_status=LimitStatus(notified) if notified else None,
                  clearing_since=row.get("clearing_since"))


# --- notifications -----------------------------------------------------------------------------
def notification_payload(n: Notification) -> dict[str, Any]:
    """The full notification as stored in ``outbox.payload`` (context redacted)."""
    return _values(
        n, kind=n.kind.value, status=n.status.value, severity=n.severity.value,
        value=finite(n.value), warn_level=finite(n.warn_level),
        breach_level=finite(n.breach_level), utilisation=finite(n.utilisation),
        detected_at=n.detected_at.isoformat(),
        source_event_time=n.source_event_time.isoformat() if n.source_event_time else None,
        context=safe_document(dict(n.context)))


def notification_from_payload(data: Mapping[str, Any]) -> Notification:
    detected_at = parse_time(data["detected_at"])
    assert detected_at is not None
    breach = data.get("breach_level")
    return _build(
        Notification, data, kind=NotificationKind(data["kind"]),
        status=LimitStatus(data["status"]), severity=AlertSeverity(data["severity"]),
        value=data.get("value"), warn_level=data.get("warn_level"),
        breach_level=float("nan") if breach is None else float(breach),
        utilisation=data.get("utilisation"), episode=int(data["episode"]),
        detected_at=detected_at, source_event_time=parse_time(data.get("source_event_time")),
        reason=data.get("reason", ""), context=dict(data.get("context") or {}),
        usd_per_unit=data.get("usd_per_unit"))


def sequence_of(n: Notification) -> int:
    """The series sequence number, the last field of ``fingerprint:episode:sequence``."""
    try:
        return int(n.idempotency_key.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        raise ValueError(
            f"idempotency_key {n.idempotency_key!r} is not 'fingerprint:episode:sequence'"
        ) from None


# --- limit results -----------------------------------------------------------------------------
def limit_result_values(r: LimitResult) -> dict[str, Any]:
    """The columns of ``limit_status_latest`` (``usd_per_unit`` travels on notifications)."""
    values = _values(r, fingerprint=r.fingerprint, status=r.status.value, value=finite(r.value),
                     warn_level=finite(r.warn_level), utilisation=finite(r.utilisation),
                     breach_level=_required_float(r.breach_level,
                                                  f"breach level of {r.limit_id}"))
    del values["usd_per_unit"]
    return values


def limit_result_from_row(row: Mapping[str, Any] | RowMapping) -> LimitResult:
    return _build(LimitResult, row, status=LimitStatus(row["status"]), reason=row["reason"] or "",
                  usd_per_unit=None)
