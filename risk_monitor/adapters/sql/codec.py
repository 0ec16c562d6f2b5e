"""Rows <-> domain types, and JSON documents that survive both backends.

Payloads are stored as plain JSON (ISO 8601 times, enum values), redacted on the way in:
whatever lands in a context or audit payload must never carry a secret.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import PurePath
from typing import Any

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
from risk_monitor.platform.logging import redact


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
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, PurePath):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value), _depth + 1)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v, _depth + 1) for v in value]
    return str(value)


def safe_document(value: Any) -> Any:
    """JSON-safe and redacted: for payloads, contexts and configuration documents."""
    return redact(to_jsonable(value))


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


# --- alert states ------------------------------------------------------------------------------
def state_values(state: AlertState) -> dict[str, Any]:
    return {
        "fingerprint": state.fingerprint,
        "limit_id": state.limit_id,
        "scope": state.scope,
        "status": state.status.value,
        "severity": state.severity.value,
        "started_at": state.started_at,
        "last_evaluated_at": state.last_evaluated_at,
        "last_notified_at": state.last_notified_at,
        "last_notified_status": (
            state.last_notified_status.value if state.last_notified_status else None
        ),
        "episode": state.episode,
        "sequence": state.sequence,
        "value": finite(state.value),
        "utilisation": finite(state.utilisation),
        "correlation_id": state.correlation_id,
        "clearing_since": state.clearing_since,
    }


def state_from_row(row: Mapping[str, Any] | RowMapping) -> AlertState:
    return AlertState(
        fingerprint=row["fingerprint"],
        limit_id=row["limit_id"],
        scope=row["scope"],
        status=LimitStatus(row["status"]),
        severity=AlertSeverity(row["severity"]),
        started_at=row["started_at"],
        last_evaluated_at=row["last_evaluated_at"],
        last_notified_at=row["last_notified_at"],
        last_notified_status=(
            LimitStatus(row["last_notified_status"]) if row["last_notified_status"] else None
        ),
        episode=row["episode"],
        sequence=row["sequence"],
        value=row["value"],
        utilisation=row["utilisation"],
        correlation_id=row["correlation_id"],
        clearing_since=row.get("clearing_since"),
    )


# --- notifications -----------------------------------------------------------------------------
def notification_payload(n: Notification) -> dict[str, Any]:
    """The full notification as stored in ``outbox.payload`` (context redacted)."""
    return {
        "idempotency_key": n.idempotency_key,
        "fingerprint": n.fingerprint,
        "kind": n.kind.value,
        "status": n.status.value,
        "severity": n.severity.value,
        "limit_id": n.limit_id,
        "limit_kind": n.limit_kind,
        "scope": n.scope,
        "value": finite(n.value),
        "warn_level": finite(n.warn_level),
        "breach_level": finite(n.breach_level),
        "utilisation": finite(n.utilisation),
        "config_version": n.config_version,
        "correlation_id": n.correlation_id,
        "episode": n.episode,
        "detected_at": n.detected_at.isoformat(),
        "source_event_time": n.source_event_time.isoformat() if n.source_event_time else None,
        "reason": n.reason,
        "context": safe_document(dict(n.context)),
    }


def notification_from_payload(data: Mapping[str, Any]) -> Notification:
    detected_at = parse_time(data["detected_at"])
    assert detected_at is not None
    breach = data.get("breach_level")
    return Notification(
        idempotency_key=data["idempotency_key"],
        fingerprint=data["fingerprint"],
        kind=NotificationKind(data["kind"]),
        status=LimitStatus(data["status"]),
        severity=AlertSeverity(data["severity"]),
        limit_id=data["limit_id"],
        limit_kind=data["limit_kind"],
        scope=data["scope"],
        value=data.get("value"),
        warn_level=data.get("warn_level"),
        breach_level=float("nan") if breach is None else float(breach),
        utilisation=data.get("utilisation"),
        config_version=data["config_version"],
        correlation_id=data["correlation_id"],
        episode=int(data["episode"]),
        detected_at=detected_at,
        source_event_time=parse_time(data.get("source_event_time")),
        reason=data.get("reason", ""),
        context=dict(data.get("context") or {}),
    )


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
    return {
        "limit_id": r.limit_id,
        "scope": r.scope,
        "fingerprint": r.fingerprint,
        "limit_kind": r.limit_kind,
        "status": r.status.value,
        "value": finite(r.value),
        "warn_level": finite(r.warn_level),
        "breach_level": _required_float(r.breach_level, f"breach level of {r.limit_id}"),
        "utilisation": finite(r.utilisation),
        "as_of": r.as_of,
        "config_version": r.config_version,
        "reason": r.reason,
        "source_event_time": r.source_event_time,
    }


def limit_result_from_row(row: Mapping[str, Any] | RowMapping) -> LimitResult:
    return LimitResult(
        limit_id=row["limit_id"],
        limit_kind=row["limit_kind"],
        scope=row["scope"],
        status=LimitStatus(row["status"]),
        value=row["value"],
        warn_level=row["warn_level"],
        breach_level=row["breach_level"],
        utilisation=row["utilisation"],
        as_of=row["as_of"],
        config_version=row["config_version"],
        reason=row["reason"] or "",
        source_event_time=row["source_event_time"],
    )
