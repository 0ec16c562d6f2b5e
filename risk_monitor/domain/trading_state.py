"""Trading state, as in NautilusTrader's risk engine: ACTIVE, REDUCING, HALTED.

- ``ACTIVE``: orders are judged by the limits only.
- ``REDUCING``: only orders that reduce the position they trade pass the pre-trade check.
- ``HALTED``: nothing passes.

A state applies globally (scope ``global``) or to one venue (``venue:<id>``). Each scope has a
manual state (set by an operator through CLI, REST or gRPC) and an automatic one (derived here
from the latest limit results and source status by configured rules). The state in force for an
order on a venue is the strictest of the four (manual/automatic x global/venue), so an operator's
``resume`` never hides a breach that still holds: the automatic state clears when the breach does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from risk_monitor.domain.model import LimitResult, LimitStatus, SourceKind, SourceStatus
from risk_monitor.domain.scopes import parse_scope_key

GLOBAL = "global"
_VENUE_PREFIX = "venue:"


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


class ReasonCode(StrEnum):
    """Machine-readable reasons of a pre-trade decision (CheckOrder ``reason_codes``)."""

    TRADING_HALTED = "TRADING_HALTED"
    TRADING_REDUCING = "TRADING_REDUCING"
    LIMIT_BREACH = "LIMIT_BREACH"
    LIMIT_UNKNOWN = "LIMIT_UNKNOWN"
    LIMIT_WARN = "LIMIT_WARN"
    REDUCES_BREACH = "REDUCES_BREACH"
    DATA_BLIND = "DATA_BLIND"
    INVALID_ORDER = "INVALID_ORDER"
    NO_EVALUATION = "NO_EVALUATION"


def venue_scope(venue: str) -> str:
    return f"{_VENUE_PREFIX}{venue}"


def validate_scope(scope: str) -> str:
    """``global`` or ``venue:<id>``; ValueError otherwise."""
    scope = scope.strip()
    if scope == GLOBAL:
        return scope
    if scope.startswith(_VENUE_PREFIX) and scope[len(_VENUE_PREFIX):].strip():
        venue = scope[len(_VENUE_PREFIX):]
        if all(c.isalnum() or c in "_-." for c in venue):
            return scope
    raise ValueError(f"trading-state scope must be 'global' or 'venue:<id>', got {scope!r}")


@dataclass(frozen=True)
class TradingRule:
    """Put a scope into ``state`` while a limit result matches.

    ``match`` is a limit kind or a limit id (``*``: any). ``per_venue``: only results whose scope
    names a venue count, and they set that venue's state (a blind venue halts itself, not the
    desk); otherwise a venue-scoped result sets its venue and any other result the global state.
    """

    match: str
    status: LimitStatus
    state: TradingState
    per_venue: bool = False

    def applies(self, result: LimitResult) -> bool:
        return (LimitStatus(result.status) is self.status
                and self.match in ("*", result.limit_kind, result.limit_id))


@dataclass(frozen=True)
class AutomaticState:
    state: TradingState
    cause: str  # the first limit (or source) that put the scope there


def automatic_states(results: Iterable[LimitResult], sources: Iterable[SourceStatus],
                     rules: Sequence[TradingRule], *,
                     halt_on_source_failure: bool = True) -> dict[str, AutomaticState]:
    """The automatic state of every scope that is not ACTIVE (absent scopes are ACTIVE)."""
    out: dict[str, AutomaticState] = {}

    def put(scope: str, state: TradingState, cause: str) -> None:
        current = out.get(scope)
        if current is None or state.rank > current.state.rank:
            out[scope] = AutomaticState(state, cause)

    if rules:
        for result in results:
            for rule in rules:
                if not rule.applies(result):
                    continue
                venue = _venue_of(result.scope)
                if venue is None and rule.per_venue:
                    continue
                scope = venue_scope(venue) if venue is not None else GLOBAL
                put(scope, rule.state,
                    f"{result.limit_id} {LimitStatus(result.status).value} on {result.scope}")
    if halt_on_source_failure:
        for source in sources:
            if source.kind is SourceKind.EXCHANGE and not source.ok:
                put(venue_scope(source.venue), TradingState.HALTED,
                    f"source {source.key} failed ({source.error_code or 'no data'})")
    return out


def _venue_of(scope_key: str) -> str | None:
    try:
        return parse_scope_key(scope_key).venue
    except ValueError:
        return None


@dataclass(frozen=True)
class ManualState:
    state: TradingState
    changed_by: str
    reason: str


@dataclass(frozen=True)
class TradingVerdict:
    """The state in force for one venue and why."""

    state: TradingState
    scope: str = GLOBAL  # the scope that set it
    origin: str = "none"  # manual | automatic | none
    cause: str = ""

    @property
    def describe(self) -> str:
        if self.state is TradingState.ACTIVE:
            return "trading ACTIVE"
        return f"trading {self.state.value} on {self.scope} ({self.origin}: {self.cause})"


ACTIVE_VERDICT = TradingVerdict(TradingState.ACTIVE)


def verdict_for(venue: str, manual: Mapping[str, ManualState],
                automatic: Mapping[str, AutomaticState]) -> TradingVerdict:
    """The strictest of manual/automatic x global/venue; ties favour manual, then global."""
    best = ACTIVE_VERDICT
    for scope in (GLOBAL, venue_scope(venue)):
        m = manual.get(scope)
        if m is not None and m.state.rank > best.state.rank:
            by = f"by {m.changed_by}" + (f": {m.reason}" if m.reason else "")
            best = TradingVerdict(m.state, scope, "manual", by)
        a = automatic.get(scope)
        if a is not None and a.state.rank > best.state.rank:
            best = TradingVerdict(a.state, scope, "automatic", a.cause)
    return best


def effective_states(manual: Mapping[str, ManualState],
                     automatic: Mapping[str, AutomaticState],
                     venues: Iterable[str] = ()) -> dict[str, TradingVerdict]:
    """The state in force of ``global`` and of every venue known to either side."""
    names = set(venues)
    names.update(s[len(_VENUE_PREFIX):] for s in (*manual, *automatic)
                 if s.startswith(_VENUE_PREFIX))
    out = {GLOBAL: verdict_for("", {GLOBAL: manual[GLOBAL]} if GLOBAL in manual else {},
                               {GLOBAL: automatic[GLOBAL]} if GLOBAL in automatic else {})}
    for venue in sorted(names):
        out[venue_scope(venue)] = verdict_for(venue, manual, automatic)
    return out


@dataclass(frozen=True)
class GateResult:
    allowed: bool
    code: ReasonCode | None
    reason: str


def gate(verdict: TradingVerdict, *, reducing: bool) -> GateResult:
    """Does the trading state let this order through (before any limit is looked at)?"""
    if verdict.state is TradingState.HALTED:
        return GateResult(False, ReasonCode.TRADING_HALTED, f"DENY {verdict.describe}")
    if verdict.state is TradingState.REDUCING and not reducing:
        return GateResult(False, ReasonCode.TRADING_REDUCING,
                          f"DENY {verdict.describe}: only orders that reduce a position pass")
    if verdict.state is TradingState.REDUCING:
        return GateResult(True, None, f"INFO {verdict.describe}: the order reduces a position")
    return GateResult(True, None, "")
