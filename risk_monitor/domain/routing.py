"""Alert routing tree with Alertmanager's semantics (pure; no I/O).

The root route matches every alert and sends it to the channel of its severity (the default
route). Its child routes are tried in order; a child whose matchers all match takes the alert
(and its own children are tried in turn, depth first). A matching route with ``continue`` false
stops the search among its siblings; with ``continue`` true the next siblings are tried too, so
one alert may go to several channels. When no child matches, the route itself is the result.
A route without a channel inherits its parent's (the root's is per severity).

A channel that received an episode's first message (a ``continue`` copy) also hears how the
episode goes on: its changes of status (escalated, de-escalated) and its resolve
(:func:`episode_copy_channels`); repeats stay in the thread. So does a channel that got a copy
of the episode's escalation (the critical route, :func:`escalation_channels`).

Labels are those of silences (:func:`risk_monitor.domain.silences.labels_of`): ``limit_id``,
``scope``, ``venue``, ``severity``, ``status``, ``group`` (the limit's group from the limits
document) and ``kind`` (the limit kind).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from risk_monitor.domain.alerts import severity_of
from risk_monitor.domain.model import AlertSeverity, LimitStatus, Notification, NotificationKind
from risk_monitor.domain.silences import Matcher, labels_of


@dataclass(frozen=True)
class Route:
    """One node of the tree: matchers (all must match), a channel (None = the parent's),
    ``continue`` and child routes."""

    matchers: tuple[Matcher, ...] = ()
    channel: str | None = None
    continue_: bool = False
    routes: tuple[Route, ...] = field(default_factory=tuple)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


def parse_routes(raw: Sequence[Mapping[str, Any]], *, where: str = "routes") -> tuple[Route, ...]:
    """Routes from settings-shaped mappings (``matchers`` as ``label=value`` strings,
    ``channel``, ``continue``, ``routes``), as the ``SlackRoute`` settings model validated
    their shape (at least one matcher, a non-blank channel); what only the domain knows, the
    matchers' labels and regexes, is checked here: ValueError names the route that is wrong."""
    parsed = []
    for i, item in enumerate(raw):
        here = f"{where}[{i}]"
        try:
            found = tuple(Matcher.parse(str(m)) for m in item.get("matchers") or [])
        except ValueError as exc:
            raise ValueError(f"{here}.matchers: {exc}") from exc
        channel = item.get("channel")
        children = parse_routes(item.get("routes") or [], where=f"{here}.routes")
        parsed.append(Route(matchers=found, channel=None if channel is None else str(channel),
                            continue_=bool(item.get("continue", False)), routes=children))
    return tuple(parsed)


def _walk(route: Route, labels: Mapping[str, str], inherited: str) -> list[str]:
    channel = route.channel or inherited
    found: list[str] = []
    for child in route.routes:
        if not child.matches(labels):
            continue
        found.extend(_walk(child, labels, channel))
        if not child.continue_:
            break
    return found or [channel]


def route_channels(routes: Sequence[Route], default_channel: str,
                   labels: Mapping[str, str]) -> list[str]:
    """Every channel the alert goes to, first the primary (where its thread lives); no
    duplicates. ``default_channel`` is the root route's channel (by severity)."""
    channels = _walk(Route(routes=tuple(routes)), labels, default_channel)
    return list(dict.fromkeys(channels))


def channels_for(n: Notification, routes: Sequence[Route],
                 by_severity: Mapping[str, str]) -> list[str]:
    """The channels of one notification (labels from :func:`labels_of`)."""
    return route_channels(routes, by_severity[n.severity.value], labels_of(n))


#: later states of an episode that every channel of its first message hears (not repeats)
STATUS_CHANGES = frozenset({NotificationKind.ESCALATED, NotificationKind.DEESCALATED,
                            NotificationKind.RESOLVED})


def has_continue(routes: Sequence[Route]) -> bool:
    """True when some route sends an alert on to further channels (``continue``)."""
    return any(r.continue_ or has_continue(r.routes) for r in routes)


def episode_copy_channels(n: Notification, first_status: LimitStatus,
                          first_severity: AlertSeverity, routes: Sequence[Route],
                          by_severity: Mapping[str, str]) -> list[str]:
    """The further channels (not the thread's) that got a copy of the episode's first message,
    which had ``first_status`` and ``first_severity``: where a later status change of ``n``'s
    episode is copied too. Empty for repeats (they stay in the thread)."""
    if n.kind not in STATUS_CHANGES:
        return []
    first = replace(n, status=first_status, severity=first_severity)
    return channels_for(first, routes, by_severity)[1:]


#: the statuses an escalation reaches (WARN -> BREACH, ... -> UNKNOWN)
ESCALATED_TO = (LimitStatus.BREACH, LimitStatus.UNKNOWN)


def escalation_channels(n: Notification, routes: Sequence[Route],
                        by_severity: Mapping[str, str]) -> list[str]:
    """The channels an escalation of ``n``'s series is routed to (the primary channel of a
    BREACH or UNKNOWN, by its severity): a later de-escalation or resolve of an episode whose
    escalation was copied to one of them is copied there too. Empty for the other kinds (an
    escalation makes its own copy, repeats stay in the thread)."""
    if n.kind not in (NotificationKind.DEESCALATED, NotificationKind.RESOLVED):
        return []
    found = (channels_for(replace(n, status=s, severity=severity_of(s)), routes, by_severity)[0]
             for s in ESCALATED_TO)
    return list(dict.fromkeys(found))
