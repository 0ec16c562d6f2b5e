"""Limit evaluation: measure each (limit, concrete scope) from the prepared state and turn the
value into a :class:`LimitResult`, failing closed.

The limit document itself (kinds, schema, version, classification) lives in
:mod:`risk_monitor.domain.limit_config`; its most used names are re-exported here. The
incremental evaluator reuses :func:`measure` and :func:`result_of`: one implementation per rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import NamedTuple

from risk_monitor.domain.aggregation import PreparedInputs, ScopeInputs, sorted_scope_inputs
from risk_monitor.domain.limit_config import (
    KIND_SPECS,
    LimitConfig,
    LimitDefinition,
    LimitKind,
    classify,
    load_limit_config,
)
from risk_monitor.domain.model import LimitResult, LimitStatus, SourceKind, limit_result
from risk_monitor.domain.pnl import PortfolioPnl
from risk_monitor.domain.scopes import WILDCARD, Scope
from risk_monitor.domain.valuation import NAT, datetime_of, ns_of

__all__ = ["KIND_SPECS", "LimitConfig", "LimitDefinition", "LimitKind", "Measured",
           "data_age_inputs", "evaluate_limits", "load_limit_config", "measure", "result_of"]


# --- evaluation --------------------------------------------------------------------------------
class Measured(NamedTuple):
    """A measured value, or why there is none (a named tuple: one per limit result, and it
    builds in half the time of a frozen dataclass; change a copy with ``_replace``)."""

    value: float | None
    unknown: str = ""  # non-empty → UNKNOWN
    forced_breach: str = ""  # non-empty → BREACH without a finite value (equity <= 0)
    detail: str = ""
    usd_per_unit: float | None = None  # see LimitResult.usd_per_unit


def measure(definition: LimitDefinition, inputs: ScopeInputs, portfolio: PortfolioPnl) -> Measured:
    """The value a limit compares against its levels, from a scope's inputs."""
    kind = definition.kind
    if inputs.problems:
        return Measured(None, unknown="; ".join(inputs.problems))
    if kind is LimitKind.MAX_NOTIONAL:
        return Measured(inputs.derivatives_gross_usd, usd_per_unit=1.0)
    if kind is LimitKind.GROSS_EXPOSURE:
        return Measured(inputs.gross_usd, usd_per_unit=1.0)
    if kind is LimitKind.NET_EXPOSURE:
        return Measured(abs(inputs.net_usd), detail=f"net {inputs.net_usd:,.0f} USD",
                        usd_per_unit=1.0)
    if kind is LimitKind.COUNTERPARTY:
        return Measured(inputs.equity_usd, usd_per_unit=1.0)
    if kind is LimitKind.CONCENTRATION:
        return _ratio(inputs.gross_usd, inputs.portfolio_equity_usd, 100.0, "portfolio equity")
    if kind is LimitKind.LEVERAGE:
        return _ratio(inputs.gross_usd, inputs.equity_usd, 1.0, "equity")
    if kind is LimitKind.DAILY_LOSS:
        pnl = portfolio
        if not pnl.known:
            return Measured(None, unknown=pnl.reason)
        note = "start-of-day equity established by this evaluation" if pnl.start_of_day_established else ""
        return Measured(max(0.0, -pnl.daily_pnl_usd), detail=note, usd_per_unit=1.0)
    if kind is LimitKind.DRAWDOWN:
        pnl = portfolio
        if not pnl.known or not math.isfinite(pnl.drawdown_pct):
            return Measured(None, unknown=pnl.reason or "drawdown undefined")
        peak = pnl.peak_equity_usd
        return Measured(max(0.0, pnl.drawdown_pct), usd_per_unit=peak / 100.0
                        if peak is not None and math.isfinite(peak) and peak > 0 else None)
    if kind is LimitKind.LIQUIDATION_DISTANCE:
        if not math.isfinite(inputs.min_liquidation_distance_pct):
            return Measured(None, detail="no position with a liquidation price in scope")
        return Measured(inputs.min_liquidation_distance_pct)
    raise ValueError(f"measure() does not handle {kind}")  # data_age: see data_age_inputs


def _ratio(numerator: float, denominator: float, scale: float, what: str) -> Measured:
    if not math.isfinite(denominator) or not math.isfinite(numerator):
        return Measured(None, unknown=f"{what} unknown")
    if denominator <= 0:
        if numerator == 0:
            return Measured(0.0)
        return Measured(
            None, forced_breach=f"{what} is not positive ({denominator:,.2f} USD): ratio unbounded"
        )
    # the denominator does not move when exposure is added: headroom x it / scale is in USD
    return Measured(numerator / denominator * scale, usd_per_unit=denominator / scale)


def result_of(
    definition: LimitDefinition,
    scope: Scope,
    measured: Measured,
    *,
    as_of: datetime,
    config_version: str,
    source_ns: int,
) -> LimitResult:
    """Turn a measured value into the LimitResult contract."""
    if measured.unknown:
        status, used, reason = LimitStatus.UNKNOWN, None, measured.unknown
    elif measured.forced_breach:
        status, used, reason = LimitStatus.BREACH, None, measured.forced_breach
    elif measured.value is None:  # nothing to measure (no liquidation price): nothing at risk
        status, used, reason = LimitStatus.OK, 0.0, measured.detail
    else:
        status, used = classify(definition.kind, measured.value, definition.warn,
                                definition.breach)
        reason = (measured.detail if status is LimitStatus.OK
                  else _reason(definition, scope, measured.value, status, measured.detail))
    # positional: thousands per evaluation (field order of LimitResult)
    return limit_result(
        definition.id,
        _KIND_TEXT[definition.kind],
        scope.key,
        status,
        None if status is LimitStatus.UNKNOWN else measured.value,
        definition.warn,
        definition.breach,
        used,
        as_of,
        config_version,
        reason,
        datetime_of(source_ns),
        None if status is LimitStatus.UNKNOWN else measured.usd_per_unit,
    )


#: a kind's text as a plain str (``LimitKind.value`` goes through the enum's descriptor: ~0.8 µs
#: per result)
_KIND_TEXT: dict[LimitKind, str] = {kind: kind.value for kind in LimitKind}


def _reason(
    definition: LimitDefinition, scope: Scope, value: float, status: LimitStatus, detail: str
) -> str:
    spec = definition.spec
    level = definition.breach if status is LimitStatus.BREACH else definition.warn
    head, tail = _reason_frame(definition.kind, scope.key, status, level or 0.0, spec.unit,
                               spec.lower_is_worse)
    text = head + _fmt(value, spec.unit) + tail
    return f"{text} ({detail})" if detail else text


@lru_cache(maxsize=1 << 14)
def _reason_frame(kind: LimitKind, scope_key: str, status: LimitStatus, level: float, unit: str,
                  lower_is_worse: bool) -> tuple[str, str]:
    """The text of a reason around its value: the same for every tick of a (limit, scope,
    status), so memoised (formatting it was a few µs per re-measured result per tick)."""
    cmp = "<=" if lower_is_worse else ">="
    return (f"{kind.value} on {scope_key}: ",
            f" {cmp} {status.value.lower()} level {_fmt(level, unit)}")


def _fmt(value: float, unit: str) -> str:
    if unit == "USD":
        return f"{value:,.0f} USD"
    if unit == "%":
        return f"{value:.2f}%"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:.1f}{unit}"


def evaluate_limits(state: PreparedInputs, config: LimitConfig) -> list[LimitResult]:
    """One LimitResult per (limit, concrete scope), fail closed; remembers the inputs in
    ``state.inputs`` so a pre-trade check can project them without recomputing."""
    now = state.freshness.now
    version, unavailable = config.version, config.unavailable  # pydantic private attrs: slow
    results: list[LimitResult] = []
    for definition in config.limits:
        if definition.kind is LimitKind.DATA_AGE:
            for scope, (age, source_ns) in data_age_inputs(state, definition.scope.items()).items():
                measured = Measured(None, unknown=unavailable) if unavailable else age
                results.append(result_of(definition, scope, measured, as_of=now,
                                         config_version=version, source_ns=source_ns))
            continue
        limit_id, portfolio, remembered = definition.id, state.portfolio, state.inputs
        for scope, inputs in sorted_scope_inputs(state, definition.spec.needs,
                                                 definition.scope.items()):
            remembered[(limit_id, scope.key)] = inputs
            measured = (Measured(None, unknown=unavailable) if unavailable
                        else measure(definition, inputs, portfolio))
            source_ns = inputs.oldest_ns
            if measured.unknown and inputs.problem_as_of_ns != NAT:
                source_ns = inputs.problem_as_of_ns
            results.append(result_of(definition, scope, measured, as_of=now,
                                     config_version=version, source_ns=source_ns))
    return results


def data_age_inputs(
    state: PreparedInputs, template: Mapping[str, str]
) -> dict[Scope, tuple[Measured, int]]:
    """Age of the oldest input per venue; a failed or never-reporting source → UNKNOWN."""
    venue = template.get("venue")
    if venue == WILDCARD or venue is None:
        venues = sorted(state.venues({SourceKind.EXCHANGE, SourceKind.CUSTODIAN, SourceKind.MARKET}))
    else:
        venues = [venue]
    out: dict[Scope, tuple[Measured, int]] = {}
    oldest_by_venue = state.venue_oldest_ns()
    now_ns = state.freshness.now_ns
    for name in venues:
        blind = [p for p in state.problems if p.venue == name and p.stale_age_s is None]
        if blind:
            as_of = min((ns_of(p.as_of) for p in blind if p.as_of), default=NAT)
            reason = "risk monitor blind on " + "; ".join(p.reason for p in blind)
            out[Scope(venue=name)] = (Measured(None, unknown=reason), as_of)
            continue
        oldest = oldest_by_venue.get(name, NAT)
        if oldest == NAT:
            reason = f"risk monitor blind on {name}: no data and no source status"
            out[Scope(venue=name)] = (Measured(None, unknown=reason), NAT)
            continue
        out[Scope(venue=name)] = (Measured(max(0.0, (now_ns - oldest) / 1e9)), oldest)
    return out
