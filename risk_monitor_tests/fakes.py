"""In-memory fakes of ``risk_monitor.ports``, for fast unit tests of the use cases.

They keep what they are given and answer from it, with the ports' semantics (an alert
transaction applies atomically, notifications are enqueued once per idempotency key); the
real adapters are exercised against PostgreSQL, Redis and the simulators in integration/.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from risk_monitor.domain.figures import EquityPoint, MetricValue
from risk_monitor.domain.model import AlertState, LimitResult, Notification, SourceStatus
from risk_monitor.platform.errors import ConfigError


class FakeEquityHistory:
    def __init__(self, points: Iterable[EquityPoint] = ()) -> None:
        self.points: list[EquityPoint] = list(points)

    def start_of_day(self, scope: str, day: date) -> EquityPoint | None:
        mine = [p for p in self.points if p.scope == scope and p.at.date() == day]
        return min(mine, key=lambda p: p.at) if mine else None

    def peak(self, scope: str) -> EquityPoint | None:
        mine = [p for p in self.points if p.scope == scope]
        return max(mine, key=lambda p: p.equity) if mine else None

    def record(self, points: Sequence[EquityPoint]) -> int:
        self.points += points
        return len(points)


class FakeEvaluationStore:
    def __init__(self) -> None:
        self.results: dict[str, LimitResult] = {}
        self.metrics: list[MetricValue] = []
        self.sources: dict[str, SourceStatus] = {}

    def upsert_limit_results(self, results: Sequence[LimitResult], *,
                             prune_before: datetime | None = None) -> int:
        if prune_before is not None:
            self.results = {k: r for k, r in self.results.items() if r.as_of >= prune_before}
        self.results.update({r.fingerprint: r for r in results})
        return len(results)

    def replace_metrics(self, metrics: Iterable[MetricValue], as_of: datetime, *,
                        names: Iterable[str] | None = None) -> int:
        replaced = set(names) if names is not None else None
        kept = [m for m in self.metrics if replaced is not None and m.name not in replaced]
        self.metrics = kept + list(metrics)
        return len(self.metrics) - len(kept)

    def record_sources(self, statuses: Sequence[SourceStatus]) -> None:
        self.sources.update({s.key: s for s in statuses})


@dataclass(frozen=True)
class Applied:
    enqueued: int


@dataclass
class FakeAlertTransaction:
    states: dict[str, AlertState]
    store: FakeAlertStore

    def apply(self, states: Sequence[AlertState],
              notifications: Sequence[Notification]) -> Applied:
        self.states.update({s.fingerprint: s for s in states})
        new = [n for n in notifications if n.idempotency_key not in self.store.keys]
        self.store.keys.update(n.idempotency_key for n in new)
        self.store.outbox += new
        return Applied(len(new))

    def seal(self, *, before: Mapping[str, AlertState], states: Sequence[AlertState],
             notifications: Sequence[Notification], context: Mapping[str, Any],
             at: datetime) -> int:
        entries = [f"alert.{n.kind.value}:{n.idempotency_key}" for n in notifications]
        entries += [f"alert_state.changed:{s.fingerprint}" for s in states
                    if before.get(s.fingerprint) != s]
        self.store.audit += entries
        return len(entries)


@dataclass
class FakeAlertStore:
    states: dict[str, AlertState] = field(default_factory=dict)
    outbox: list[Notification] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    audit: list[str] = field(default_factory=list)
    locks: list[tuple[str, ...]] = field(default_factory=list)

    def all_states(self) -> list[AlertState]:
        return list(self.states.values())

    @contextlib.contextmanager
    def locked(self, fingerprints: Sequence[str]) -> Iterator[FakeAlertTransaction]:
        """All or nothing, like the SQL transaction: the states are written at exit."""
        wanted = sorted(set(fingerprints))
        self.locks.append(tuple(wanted))
        tx = FakeAlertTransaction({f: self.states[f] for f in wanted if f in self.states}, self)
        yield tx
        self.states.update(tx.states)


class FakeComplianceTimeline:
    def __init__(self) -> None:
        self.recorded: list[list[LimitResult]] = []

    def record(self, results: Sequence[LimitResult]) -> int:
        self.recorded.append(list(results))
        return len(results)


@dataclass
class FakeRiskStore:
    """``ports.RiskStore`` in memory."""

    equity: FakeEquityHistory = field(default_factory=FakeEquityHistory)
    risk_state: FakeEvaluationStore = field(default_factory=FakeEvaluationStore)
    alerts: FakeAlertStore = field(default_factory=FakeAlertStore)
    compliance: FakeComplianceTimeline = field(default_factory=FakeComplianceTimeline)


class FakeNotifier:
    """``ports.Notifier``: records what it delivered; fails while ``down``."""

    def __init__(self) -> None:
        self.sent: list[Notification] = []
        self.down = False

    def send(self, notification: Notification, previous_ref: str | None) -> str:
        if self.down:
            from risk_monitor.platform.errors import NotificationError

            raise NotificationError("fake notifier down", source="fake")
        self.sent.append(notification)
        return f"fake:{len(self.sent)}"


class FakeConfigSource:
    """``ports.ConfigSource``: serves ``documents[component]``; unreachable when None."""

    def __init__(self, documents: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.documents = dict(documents or {})

    def fetch(self, component: str) -> tuple[str, Mapping[str, Any]]:
        if component not in self.documents:
            raise ConfigError(f"no document for {component}", source="fake_config")
        document = self.documents[component]
        canonical = json.dumps(document, sort_keys=True, default=str).encode()
        return hashlib.sha256(canonical).hexdigest()[:16], document

    async def poll(self, component: str, *, after: str | None,
                   wait_s: float) -> tuple[str, Mapping[str, Any]] | None:
        """Answers at once (no long poll): the document when its version is not ``after``."""
        if component not in self.documents:
            return None
        found = self.fetch(component)
        return None if found[0] == after else found
