"""Alert lifecycle: from limit results and the stored series states to notifications.

Semantics follow Prometheus Alertmanager where they apply: one series per fingerprint
(limit, scope); a new episode waits ``group_wait`` before its first notice (and sends nothing if
it clears before); an unchanged firing series is re-notified only after ``repeat_interval``;
resolve notices go out only for episodes that notified something. Against noise, as Prometheus
does: ``for_s`` keeps a new episode pending before it fires, ``keep_firing_for_s`` keeps a
notified episode open until it has been OK that long (a flapping source gives one episode), and
``hysteresis`` holds a notified status until the value has moved that fraction of the breach
level past the level (no WARN/OK ping-pong at the line). ``warm_up`` (after a start) holds back an
UNKNOWN caused only by sources that have not answered since the start, at most for the grace: a
source that has not answered yet pages nobody, one that answered and failed again pages as usual.
Per-limit ``rules`` (from the limits YAML) override the first three. Pure and deterministic:
re-planning the same results against the returned states yields no new notification, and the
correlation id of an episode is derived from its fingerprint, number and start time.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from risk_monitor.domain.aggregation import Needs, problem_affects
from risk_monitor.domain.coverage import ALL_ACCOUNTS, SourceProblem
from risk_monitor.domain.limit_config import KIND_SPECS
from risk_monitor.domain.limits import LimitConfig
from risk_monitor.domain.model import (
    AlertSeverity,
    AlertState,
    LimitResult,
    LimitStatus,
    Notification,
    NotificationKind,
    SourceKind,
    SourceStatus,
)
from risk_monitor.domain.scopes import Scope, parse_scope_key

_SEVERITY = {
    LimitStatus.OK: AlertSeverity.INFO,
    LimitStatus.WARN: AlertSeverity.WARNING,
    LimitStatus.BREACH: AlertSeverity.CRITICAL,
    LimitStatus.UNKNOWN: AlertSeverity.CRITICAL,
}
_SEVERITY_RANK = {AlertSeverity.INFO: 0, AlertSeverity.WARNING: 1, AlertSeverity.CRITICAL: 2}


@dataclass(frozen=True)
class AlertRule:
    """One limit's overrides of the policy's noise controls (None = the policy's value)."""

    for_s: float | None = None
    keep_firing_for_s: float | None = None
    hysteresis: float | None = None
    owner: str = ""  # carried into every notification of the limit (who acts)
    runbook_url: str = ""  # what to do
    group: str = ""  # routing / silence label ``group``


#: what each limit kind reads (which silent or failing sources can make it UNKNOWN)
_NEEDS: dict[str, Needs] = {kind.value: spec.needs for kind, spec in KIND_SPECS.items()}

#: one source as the warm-up tracks it: (kind, venue, account; None = the whole venue)
SourceRef = tuple[SourceKind, str, str | None]


@dataclass(frozen=True)
class WarmUp:
    """The warm-up grace after a start (issue 12): an UNKNOWN is recorded but not notified
    while every source behind it has not answered since the start, and never after ``until``.

    A source that answered once and then failed or went stale is a real failure: the UNKNOWNs
    it can cause page as usual (after ``unknown_for_s``), even within the grace. Fed with each
    evaluation's sources and problems (:meth:`seen`); a bare WarmUp holds nothing."""

    until: datetime
    answered: frozenset[SourceRef] = frozenset()  # sources that delivered since the start
    waiting: tuple[SourceProblem, ...] = ()  # problems of sources not answered since the start
    failing: tuple[SourceProblem, ...] = ()  # problems of sources that answered, then failed

    def seen(self, sources: Iterable[SourceStatus],
             problems: Iterable[SourceProblem]) -> WarmUp:
        """The warm-up after one evaluation: its healthy sources have answered; its problems
        split into waiting (never answered since the start) and failing (answered before)."""
        answered = self.answered | {
            (s.kind, s.venue, None if s.account in (ALL_ACCOUNTS, "") else s.account)
            for s in sources if s.ok and s.instrument is None and s.asset is None}
        waiting: list[SourceProblem] = []
        failing: list[SourceProblem] = []
        for problem in problems:
            (failing if _has_answered(problem, answered) else waiting).append(problem)
        return replace(self, answered=frozenset(answered), waiting=tuple(waiting),
                       failing=tuple(failing))

    def holds(self, result: LimitResult, now: datetime) -> bool:
        """True when ``result`` is an UNKNOWN that only sources still silent since the start
        can explain (and the grace has not ended)."""
        if now >= self.until or result.status is not LimitStatus.UNKNOWN or not self.waiting:
            return False
        try:
            scope = parse_scope_key(result.scope)
        except ValueError:
            return False  # not a limit scope: nothing to tie it to a silent source
        needs = _NEEDS.get(result.limit_kind)
        return not any(_touches(p, needs, scope) for p in self.failing) \
            and any(_touches(p, needs, scope) for p in self.waiting)


def _has_answered(problem: SourceProblem, answered: frozenset[SourceRef]) -> bool:
    if problem.kind is None:  # no source reported for the venue at all
        return any(venue == problem.venue for _, venue, _ in answered)
    if problem.account is None:
        return any(kind is problem.kind and venue == problem.venue
                   for kind, venue, _ in answered)
    return bool({(problem.kind, problem.venue, problem.account),
                 (problem.kind, problem.venue, None)} & answered)


def _touches(problem: SourceProblem, needs: Needs | None, scope: Scope) -> bool:
    """Could ``problem`` make a limit with these needs UNKNOWN at ``scope``? Errs towards yes
    (a failing source then pages; a silent one only holds within the grace)."""
    if needs is None or needs == Needs():  # unknown kind, data age: the venue's own sources
        return problem.matches(scope.venue, scope.account)
    if problem.kind is SourceKind.MARKET:  # missing marks on the venue, missing asset prices
        return problem.matches(scope.venue, None) or needs.holdings or needs.scope_equity \
            or needs.portfolio_equity
    return problem_affects(problem, needs, scope)


#: alert series raised by another evaluator than the limits' (reconciliation breaks): a limit
#: evaluation never resolves them as "missing"; their own evaluator resolves them
OWN_LIFECYCLE = frozenset({"reconciliation"})


@dataclass(frozen=True)
class AlertPolicy:
    """Lifecycle timing (see AlertSettings: group_wait_s, repeat_interval_s, send_resolved,
    keep_firing_for_s, hysteresis, warm-up grace). Bare, every control is 0; the settings'
    defaults against flapping come from ``application.alert_policy``."""

    group_wait_s: float = 0.0  # the default ``for``: pending before the first notice
    repeat_interval_s: float = 3600.0
    send_resolved: bool = True
    #: resolve series that are firing but absent from the results (limit removed, wildcard
    #: scope vanished). Only for callers that evaluate every limit, never for partial updates.
    resolve_missing: bool = False
    keep_firing_for_s: float = 0.0
    hysteresis: float = 0.0  # fraction of the breach level
    warm_up: WarmUp | None = None  # after a service start (see WarmUp)
    rules: Mapping[str, AlertRule] = field(default_factory=dict)  # by limit id
    #: an UNKNOWN episode waits at least this long before firing (one missed poll is no page)
    unknown_for_s: float = 0.0
    #: a WARN episode waits at least this long before firing; BREACH never waits for it
    warn_for_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("group_wait_s", "keep_firing_for_s", "unknown_for_s", "warn_for_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.repeat_interval_s <= 0:
            raise ValueError("repeat_interval_s must be > 0")
        if not 0 <= self.hysteresis < 1:
            raise ValueError("hysteresis must be in [0, 1)")

    def for_s(self, limit_id: str, status: LimitStatus | None = None) -> float:
        """Pending time before a new episode fires (at least ``unknown_for_s`` for UNKNOWN and
        ``warn_for_s`` for WARN: a pending WARN that turns BREACH fires at once)."""
        wait = self._own(limit_id, "for_s", self.group_wait_s)
        if status is LimitStatus.UNKNOWN:
            return max(wait, self.unknown_for_s)
        if status is LimitStatus.WARN:
            return max(wait, self.warn_for_s)
        return wait

    def keep_firing_s(self, limit_id: str) -> float:
        return self._own(limit_id, "keep_firing_for_s", self.keep_firing_for_s)

    def hysteresis_of(self, limit_id: str) -> float:
        return self._own(limit_id, "hysteresis", self.hysteresis)

    def _own(self, limit_id: str, control: str, default: float) -> float:
        """The limit's own value of a noise control (its rule), else the policy's."""
        value: float | None = getattr(self.rules.get(limit_id), control, None)
        return default if value is None else value


@dataclass(frozen=True)
class AlertPlan:
    """New states to persist and notifications to enqueue, in one transaction."""

    states: list[AlertState] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)


def alert_rules(config: LimitConfig | None) -> dict[str, AlertRule]:
    """Per-limit noise controls from the limits YAML (``for_s``, ``keep_firing_for_s``,
    ``hysteresis``); limits that set none are left to the policy."""
    if config is None:
        return {}
    return {d.id: AlertRule(for_s=d.for_s, keep_firing_for_s=d.keep_firing_for_s,
                            hysteresis=d.hysteresis, owner=d.owner, runbook_url=d.runbook_url,
                            group=d.group)
            for d in config.limits
            if (d.for_s, d.keep_firing_for_s, d.hysteresis, d.owner, d.runbook_url, d.group)
            != (None, None, None, "", "", "")}


def with_limit_rules(policy: AlertPolicy, config: LimitConfig | None) -> AlertPolicy:
    """The policy with the configuration's per-limit rules (the same policy if it has none)."""
    rules = alert_rules(config)
    return replace(policy, rules=rules) if rules != dict(policy.rules) else policy


def warmup_grace_s(poll_intervals_s: Sequence[float], data_age_budget_s: float) -> float:
    """Default warm-up grace: the slowest source's first answer, plus one data-age budget."""
    return max(poll_intervals_s, default=0.0) + data_age_budget_s


def severity_of(status: LimitStatus) -> AlertSeverity:
    """WARN → warning; BREACH and UNKNOWN → critical (blind is as bad as breached)."""
    return _SEVERITY[status]


def episode_key_prefix(fingerprint: str, episode: int) -> str:
    """What every idempotency key of one episode starts with (``fp:episode:sequence``), so a
    channel can be searched for any message of the episode."""
    return f"{fingerprint}:{episode}:"


def correlation_id_for(fingerprint: str, episode: int, started_at: datetime) -> str:
    """Deterministic id of one firing episode (same inputs → same id, no randomness)."""
    raw = f"{fingerprint}:{episode}:{started_at.isoformat()}"
    return "rm-" + hashlib.sha256(raw.encode()).hexdigest()[:20]


def held_status(result: LimitResult, notified: LimitStatus | None, hysteresis: float
                ) -> LimitStatus:
    """The status to alert on: a notified WARN/BREACH holds until the value has moved
    ``hysteresis`` x breach level past its level (the raw status still goes to compliance)."""
    status = result.status
    if notified not in (LimitStatus.WARN, LimitStatus.BREACH) or hysteresis <= 0 \
            or status is LimitStatus.UNKNOWN or status.rank >= notified.rank \
            or result.value is None or not math.isfinite(result.value):
        return status
    level = result.breach_level if notified is LimitStatus.BREACH else result.warn_level
    if level is None or not math.isfinite(level):
        return status
    warn = result.warn_level
    higher_is_worse = warn is None or warn == result.breach_level or result.breach_level > warn
    margin = hysteresis * abs(result.breach_level)
    inside = result.value > level - margin if higher_is_worse else result.value < level + margin
    return notified if inside else status


def _status_change(before: LimitStatus, after: LimitStatus) -> NotificationKind:
    """ESCALATED when worse; DEESCALATED when better but not OK. BREACH ↔ UNKNOWN (same rank,
    both critical) counts as ESCALATED: the nature of a critical alert changed, nothing improved."""
    if after.rank < before.rank:
        return NotificationKind.DEESCALATED
    return NotificationKind.ESCALATED


def plan_alerts(previous: Mapping[str, AlertState], results: Sequence[LimitResult],
                now: datetime, policy: AlertPolicy | None = None, *,
                context: Mapping[str, Any] | None = None) -> AlertPlan:
    """Advance every series named by ``results`` and say what to notify.

    Results evaluated before a series' ``last_evaluated_at`` are ignored: the hot path and the
    Dagster path share one store, and a late, older evaluation must not undo a newer one.
    """
    policy = policy or AlertPolicy()
    ctx = dict(context or {})
    plan = AlertPlan()
    seen: set[str] = set()
    due: list[tuple[AlertState | None, LimitResult]] = []
    for result in results:
        fp = result.fingerprint
        if fp in seen:
            raise ValueError(f"two results for one series: {result.limit_id} {result.scope}")
        seen.add(fp)
        prev = previous.get(fp)
        if prev is None or result.as_of >= prev.last_evaluated_at:
            due.append((prev, result))
    if policy.resolve_missing:
        version = results[0].config_version if results else ""
        due += [(prev, LimitResult(
                    limit_id=prev.limit_id, limit_kind="", scope=prev.scope,
                    status=LimitStatus.OK, value=None, warn_level=None, breach_level=0.0,
                    utilisation=None, as_of=now, config_version=version,
                    reason="no longer evaluated (limit removed or scope vanished)"))
                for fp, prev in sorted(previous.items())
                if fp not in seen and prev.status is not LimitStatus.OK
                and prev.limit_id not in OWN_LIFECYCLE]
    for prev, result in due:
        state, note = _advance(prev, result, now, policy, ctx)
        plan.states.append(state)
        if note is not None:
            plan.notifications.append(note)
    return plan


def _advance(prev: AlertState | None, result: LimitResult, now: datetime, policy: AlertPolicy,
             context: dict[str, Any]) -> tuple[AlertState, Notification | None]:
    fp = result.fingerprint
    context = {**context, **_explain(policy.rules.get(result.limit_id), prev)}
    notified = prev.last_notified_status if prev is not None else None
    status = held_status(result, notified, policy.hysteresis_of(result.limit_id))
    if status is not result.status:
        result = replace(result, status=status)
    was_firing = prev is not None and prev.status is not LimitStatus.OK
    episode = prev.episode if prev is not None else 0
    sequence = prev.sequence if prev is not None else 0

    if status is LimitStatus.OK:
        base = AlertState(
            fingerprint=fp, limit_id=result.limit_id, scope=result.scope,
            status=LimitStatus.OK, severity=AlertSeverity.INFO, started_at=None,
            last_evaluated_at=now, last_notified_at=prev.last_notified_at if prev else None,
            last_notified_status=prev.last_notified_status if prev else None,
            episode=episode, sequence=sequence, value=result.value,
            utilisation=result.utilisation, correlation_id=None)
        if not (was_firing and prev is not None):
            return base, None
        notified_in_episode = prev.last_notified_status is not None
        if not (policy.send_resolved and notified_in_episode):
            return replace(base, last_notified_status=None), None
        clearing_since = prev.clearing_since or now
        if (now - clearing_since).total_seconds() < policy.keep_firing_s(result.limit_id):
            # keep firing: a source that flaps back within keep_firing_for stays one episode
            return replace(prev, last_evaluated_at=now, value=result.value,
                           utilisation=result.utilisation, clearing_since=clearing_since), None
        note = _notification(
            result, NotificationKind.RESOLVED, severity=prev.severity, episode=episode,
            sequence=sequence + 1, context=context, correlation_id=prev.correlation_id
            or correlation_id_for(fp, episode, prev.started_at or now))
        return replace(base, sequence=sequence + 1, last_notified_at=now,
                       last_notified_status=LimitStatus.OK), note

    severity = severity_of(status)
    held = policy.warm_up is not None and policy.warm_up.holds(result, now)  # recorded only
    wait_s = policy.for_s(result.limit_id, status)
    if not was_firing or prev is None:  # a new episode opens
        episode += 1
        state = AlertState(
            fingerprint=fp, limit_id=result.limit_id, scope=result.scope, status=status,
            severity=severity, started_at=now, last_evaluated_at=now,
            last_notified_at=prev.last_notified_at if prev else None, last_notified_status=None,
            episode=episode, sequence=sequence, value=result.value,
            utilisation=result.utilisation, correlation_id=correlation_id_for(fp, episode, now))
        if wait_s > 0 or held:
            return state, None  # pending: notified once it has lasted ``for`` (and warm-up)
        return _notify(state, result, NotificationKind.FIRING, now, context)

    # the episode continues
    highest = prev.severity if _SEVERITY_RANK[prev.severity] >= _SEVERITY_RANK[severity] else severity
    state = replace(
        prev, limit_id=result.limit_id, scope=result.scope, status=status, severity=highest,
        last_evaluated_at=now, value=result.value, utilisation=result.utilisation,
        clearing_since=None, correlation_id=prev.correlation_id
        or correlation_id_for(fp, prev.episode, prev.started_at or now))
    if held:
        return state, None  # warm-up: an UNKNOWN neither fires nor changes what was paged
    if prev.last_notified_status is None:  # still pending in ``for``
        started = prev.started_at or now
        if (now - started).total_seconds() >= wait_s:
            return _notify(state, result, NotificationKind.FIRING, now, context)
        return state, None
    if status is not prev.last_notified_status:
        return _notify(state, result, _status_change(prev.last_notified_status, status), now,
                       context)
    last = prev.last_notified_at or prev.started_at or now
    if (now - last).total_seconds() >= policy.repeat_interval_s:
        return _notify(state, result, NotificationKind.REPEAT, now, context)
    return state, None


def _explain(rule: AlertRule | None, prev: AlertState | None) -> dict[str, Any]:
    """What a message needs beyond the result: owner, runbook, when the status began."""
    extra: dict[str, Any] = {name: getattr(rule, name) for name in ("owner", "runbook_url", "group")
                             if rule is not None and getattr(rule, name)}
    if prev is not None and prev.started_at is not None and prev.status is not LimitStatus.OK:
        extra["episode_started_at"] = prev.started_at.isoformat()
    return extra


def _notify(state: AlertState, result: LimitResult, kind: NotificationKind, now: datetime,
            context: dict[str, Any]) -> tuple[AlertState, Notification]:
    sequence = state.sequence + 1
    correlation = state.correlation_id or correlation_id_for(
        state.fingerprint, state.episode, state.started_at or now)
    if state.started_at is not None:
        context = {**context, "episode_started_at": state.started_at.isoformat()}
    note = _notification(result, kind, severity=severity_of(result.status), episode=state.episode,
                         sequence=sequence, correlation_id=correlation, context=context)
    return replace(state, sequence=sequence, last_notified_at=now,
                   last_notified_status=result.status), note


def _notification(result: LimitResult, kind: NotificationKind, *, severity: AlertSeverity,
                  episode: int, sequence: int, correlation_id: str,
                  context: dict[str, Any]) -> Notification:
    fp = result.fingerprint
    return Notification(
        idempotency_key=f"{episode_key_prefix(fp, episode)}{sequence}", fingerprint=fp, kind=kind,
        status=result.status, severity=severity, limit_id=result.limit_id,
        limit_kind=result.limit_kind, scope=result.scope, value=result.value,
        warn_level=result.warn_level, breach_level=result.breach_level,
        utilisation=result.utilisation, config_version=result.config_version,
        correlation_id=correlation_id, episode=episode, detected_at=result.as_of,
        source_event_time=result.source_event_time, reason=result.reason,
        context=dict(context), usd_per_unit=result.usd_per_unit)
