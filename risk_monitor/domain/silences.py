"""Silences and acknowledgements with Alertmanager semantics (pure; no I/O, no clock reads).

A silence is a set of label matchers (``=``, ``!=``, ``=~``, ``!~``; regexes anchored, as in
Alertmanager) with a start, an end, an author and a comment; a notification whose labels match
every matcher of an active silence is held back, while its alert is still recorded and still
counts in compliance (only the notification is silenced). An acknowledgement is per episode: it
stops REPEAT notices of that episode until its status changes.

Labels of a notification: ``limit_id``, ``scope``, ``venue`` (from the scope, "" when the scope
names none), ``severity``, ``status``, ``group`` (the limit's group in the limits document, ""
when none) and ``kind`` (the limit kind). The routing tree (``domain/routing.py``) matches the
same labels.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from risk_monitor.domain.model import LimitStatus, Notification, NotificationKind
from risk_monitor.domain.scopes import parse_scope_key

MatchOp = Literal["=", "!=", "=~", "!~"]
LABELS = ("limit_id", "scope", "venue", "severity", "status", "group", "kind")
_MATCHER = re.compile(r"^\s*([a-z_]+)\s*(=~|!~|!=|=)\s*\"?(.*?)\"?\s*$")


@dataclass(frozen=True)
class Matcher:
    """One label condition; regexes match the whole value."""

    name: str
    value: str
    op: MatchOp = "="

    def __post_init__(self) -> None:
        if self.name not in LABELS:
            raise ValueError(f"unknown label {self.name!r}; expected one of {LABELS}")
        if self.op in ("=~", "!~"):
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"bad regex for {self.name}: {exc}") from exc

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """``venue=binance``, ``severity!=info``, ``limit_id=~"btc_.*"``."""
        found = _MATCHER.match(text)
        if found is None:
            raise ValueError(f"not a matcher: {text!r} (expected label=value, !=, =~ or !~)")
        name, op, value = found.groups()
        return cls(name=name, value=value, op=op)  # type: ignore[arg-type]

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = re.fullmatch(self.value, actual) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'


@dataclass(frozen=True)
class Silence:
    """Hold back notifications matching every matcher between ``starts_at`` and ``ends_at``."""

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    expired_at: datetime | None = None  # set by ``unsilence``: ends it early

    def __post_init__(self) -> None:
        if not self.matchers:
            raise ValueError("a silence needs at least one matcher")
        if all(m.op in ("=~", "!~") and re.fullmatch(m.value, "") for m in self.matchers):
            raise ValueError("a silence must not match every alert")
        if self.ends_at <= self.starts_at:
            raise ValueError("a silence must end after it starts")
        if not self.created_by.strip():
            raise ValueError("a silence needs an author")
        if not self.comment.strip():
            raise ValueError("a silence needs a comment (why, and until what)")

    def active(self, now: datetime) -> bool:
        end = min(self.ends_at, self.expired_at) if self.expired_at else self.ends_at
        return self.starts_at <= now < end

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


def silence_end(starts_at: datetime, *, duration: timedelta | None,
                ends_at: datetime | None) -> datetime:
    """The end of a new silence, given as exactly one of a duration (what operators think in)
    and an end time (what Alertmanager stores). The one rule every wire form (REST, gRPC, CLI)
    applies after converting its own types; that the end is after the start is
    :class:`Silence`'s own check."""
    if (duration is None) == (ends_at is None):
        raise ValueError("give exactly one of a duration and an end time")
    if duration is None:
        assert ends_at is not None
        return ends_at
    if duration <= timedelta(0):
        raise ValueError("a silence's duration must be positive")
    return starts_at + duration


@dataclass(frozen=True)
class Acknowledgement:
    """Someone owns this episode: repeats of ``status`` stop until the status changes."""

    fingerprint: str
    episode: int
    status: LimitStatus
    acked_by: str
    acked_at: datetime
    comment: str = ""


@dataclass(frozen=True)
class Verdict:
    """Whether a notification goes out, and what held it back."""

    send: bool
    silenced_by: tuple[str, ...] = field(default_factory=tuple)
    acknowledged_by: str | None = None


def labels_of(n: Notification) -> dict[str, str]:
    """The labels silences match on (an unparsable scope names no venue: never a crash that
    would stop delivery)."""
    try:
        venue = parse_scope_key(n.scope).venue or ""
    except ValueError:
        venue = ""
    group = n.context.get("group")
    return {"limit_id": n.limit_id, "scope": n.scope, "venue": venue,
            "severity": n.severity.value, "status": n.status.value,
            "group": group if isinstance(group, str) else "", "kind": n.limit_kind}


def verdict(n: Notification, silences: Iterable[Silence],
            acks: Iterable[Acknowledgement], now: datetime) -> Verdict:
    """Silences hold any notification they match; an ack holds only its episode's repeats of
    the acknowledged status (a change of status always goes out)."""
    labels = labels_of(n)
    matching = tuple(s.id for s in silences if s.active(now) and s.matches(labels))
    ack = next((a for a in acks if a.fingerprint == n.fingerprint and a.episode == n.episode
                and a.status is n.status and n.kind is NotificationKind.REPEAT), None)
    return Verdict(send=not matching and ack is None, silenced_by=matching,
                   acknowledged_by=ack.acked_by if ack else None)
