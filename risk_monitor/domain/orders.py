"""Pre-trade check: would this order keep the desk inside its limits?

The order is applied to the evaluated state as a delta — never by re-running the whole
evaluation — so a check costs microseconds for cached scopes: the order only moves the
derivative gross/net of the scopes that contain it and the equity by (mark - price) * dq.
Fail closed: any projected UNKNOWN (stale or missing data, unknown venue, no price) denies.
Orders allowed earlier whose fills the evaluated positions do not show yet (``pending``,
``domain/pending_orders.py``) count as exposure on top of the evaluated positions.
Netting rules are in docs/risk-math.md ("Pre-trade check").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

import numpy as np

from risk_monitor.domain.aggregation import PreparedInputs, ScopeInputs, scope_inputs
from risk_monitor.domain.engine import RiskReport, RiskSnapshot, prepare
from risk_monitor.domain.limits import (
    LimitConfig,
    LimitDefinition,
    LimitKind,
    Measured,
    data_age_inputs,
    evaluate_limits,
    measure,
    result_of,
)
from risk_monitor.domain.model import LimitResult, LimitStatus, SourceKind
from risk_monitor.domain.pending_orders import Leg, LegExposure, PendingExposure, PendingOrder
from risk_monitor.domain.pnl import PortfolioPnl, project_portfolio
from risk_monitor.domain.scopes import SCOPE_DIMS, WILDCARD, Scope
from risk_monitor.domain.trading_state import (
    ACTIVE_VERDICT,
    ReasonCode,
    TradingState,
    TradingVerdict,
    gate,
)
from risk_monitor.domain.valuation import NAT, Freshness, ns_of


class OrderSide(StrEnum):
    BUY = "buy"
    SELL = "sell"


@dataclass(frozen=True)
class OrderRequest:
    """A prospective order; quantity in base units (> 0), price None = at the mark."""

    venue: str
    account: str
    instrument: str  # ccxt unified symbol, e.g. "BTC/USDT:USDT"
    side: OrderSide | str
    quantity: float
    price: float | None = None
    position_side: str | None = None  # hedge mode: "long" | "short"; None = one-way netting
    client_order_id: str = ""  # the id the desk sends the venue: matches its fills later


@dataclass(frozen=True)
class OrderCheck:
    """Verdict: ``allowed`` False on any projected BREACH (unless the order only reduces it)
    or UNKNOWN; ``reasons`` says why, incl. warnings when allowed."""

    allowed: bool
    reasons: list[str]
    projected: list[LimitResult]
    #: machine-readable reasons (``ReasonCode`` values), one per distinct cause, in order
    codes: tuple[str, ...] = ()
    trading_state: TradingState = TradingState.ACTIVE
    reducing: bool = False
    #: the exposure the order itself adds (USD, on top of the pending orders ahead of it on its
    #: leg) and its base currency: what it weighs while pending once allowed
    added_gross_usd: float = 0.0
    added_net_usd: float = 0.0
    base: str = ""


def _codes(*codes: ReasonCode) -> tuple[str, ...]:
    return tuple(dict.fromkeys(c.value for c in codes))


@dataclass(frozen=True)
class _Delta:
    gross_usd: float  # from the evaluated leg to after the order (incl. pending ahead)
    net_usd: float
    equity_usd: float
    reducing: bool
    own_gross_usd: float = 0.0  # the order's own increment, after the pending ahead
    own_net_usd: float = 0.0


def _prepared(source: RiskSnapshot | RiskReport | PreparedInputs,
              config: LimitConfig) -> PreparedInputs:
    if isinstance(source, PreparedInputs):
        return source
    if isinstance(source, RiskReport):
        if source.config_version == config.version:
            return source.state
        source = source.snapshot
    state = prepare(source, config)
    evaluate_limits(state, config)
    return state


def check_order(snapshot: RiskSnapshot | RiskReport | PreparedInputs, config: LimitConfig,
                order: OrderRequest, now: datetime,
                trading: TradingVerdict = ACTIVE_VERDICT,
                pending: PendingExposure | Sequence[PendingOrder] = ()) -> OrderCheck:
    """Project the limits an order touches and allow or deny it.

    Pass the RiskReport of the latest evaluation (or its ``state``) to reuse its work; a bare
    RiskSnapshot is evaluated first (fine for small books, costly per order for large ones).
    ``trading`` is the trading state in force on the order's venue: HALTED denies everything,
    REDUCING every order that does not reduce the position it trades (checked first).
    ``pending``: orders allowed earlier that the evaluated positions do not show yet. Those on
    the order's leg in its direction move its starting position (a reduction must still reduce
    once they fill); those elsewhere that added exposure count in every limit scope they share.
    """
    state = _prepared(snapshot, config)
    invalid = _validate(order)
    if invalid:
        return OrderCheck(False, [f"DENY invalid order: {invalid}"], [],
                          codes=_codes(ReasonCode.INVALID_ORDER), trading_state=trading.state)
    side = OrderSide(order.side)
    reasons: list[str] = []

    legs = _legs(state, order)
    base, quote_ccy = _currencies(state, order, legs)
    mark, mark_ns = _mark(state, order, legs)
    rate = state.valuation.price(quote_ccy)
    blind = _blind_reason(state, order, now, mark=mark, mark_ns=mark_ns, rate=rate)

    signed_qty = order.quantity if side is OrderSide.BUY else -order.quantity
    leg: Leg = (order.venue, order.account, order.instrument, order.position_side)
    if not isinstance(pending, PendingExposure):
        pending = PendingExposure.of(pending)
    ahead = pending.ahead(leg, signed_qty) if pending else 0.0
    delta, leg_problem = _delta(legs, order, signed_qty, mark, rate, ahead)
    if leg_problem:
        return OrderCheck(False, [f"DENY {leg_problem}"], [],
                          codes=_codes(ReasonCode.INVALID_ORDER), trading_state=trading.state)
    # the trading state speaks first; the limits are still projected so the desk sees them
    gated = gate(trading, reducing=delta.reducing)
    codes: list[ReasonCode] = [gated.code] if gated.code is not None else []
    if gated.reason:
        reasons.append(gated.reason)

    projected: list[LimitResult] = []
    allowed = gated.allowed
    elapsed_s = max(0.0, (ns_of(now) - state.freshness.now_ns) / 1e9)
    portfolio_after = project_portfolio(state.portfolio, delta.equity_usd)
    version = config.version  # a pydantic private attribute: slow to read per limit
    elsewhere = pending.elsewhere(leg) if pending else []
    for definition in config.limits:
        scope = _order_scope(definition, order.venue, order.account, order.instrument, base)
        if scope is None:
            continue
        if definition.kind is LimitKind.LIQUIDATION_DISTANCE and delta.reducing:
            continue  # reducing a position never brings its liquidation closer
        scoped = _with_pending(delta, definition, scope, others=elsewhere) if elsewhere \
            else delta
        current, after = _project(state, definition, scope, delta=scoped, blind=blind, now=now,
                                  elapsed_s=elapsed_s, portfolio_after=portfolio_after)
        inputs = state.inputs.get((definition.id, scope.key))
        result = result_of(definition, scope, after, as_of=now, config_version=version,
                           source_ns=inputs.oldest_ns if inputs is not None else NAT)
        projected.append(result)
        if result.status is LimitStatus.UNKNOWN:
            allowed = False
            codes.append(ReasonCode.LIMIT_UNKNOWN)
            reasons.append(f"DENY {definition.id} on {scope.key}: UNKNOWN ({result.reason})")
        elif result.status is LimitStatus.BREACH:
            before, after_value = current.value, after.value
            not_worse = (delta.reducing and before is not None and after_value is not None
                         and _no_worse(definition, before, after_value))
            text = f"{definition.id} on {scope.key}: projected BREACH ({_describe(result)})"
            if not_worse:
                codes.append(ReasonCode.REDUCES_BREACH)
                reasons.append(f"WARN {text}; allowed because the order reduces it")
            else:
                allowed = False
                codes.append(ReasonCode.LIMIT_BREACH)
                reasons.append(f"DENY {text}")
        elif result.status is LimitStatus.WARN:
            codes.append(ReasonCode.LIMIT_WARN)
            reasons.append(f"WARN {definition.id} on {scope.key}: projected WARN ({_describe(result)})")
    if blind and allowed:  # no limit covered the problem: still fail closed
        allowed = False
        codes.append(ReasonCode.DATA_BLIND)
        reasons.append(f"DENY {blind}")
    return OrderCheck(allowed, reasons, projected, codes=_codes(*codes),
                      trading_state=trading.state, reducing=delta.reducing,
                      added_gross_usd=delta.own_gross_usd, added_net_usd=delta.own_net_usd,
                      base=base)


def _with_pending(delta: _Delta, definition: LimitDefinition, scope: Scope, *,
                  others: Sequence[tuple[Leg, LegExposure]]) -> _Delta:
    """The order's delta plus the exposure pending on other legs of the same scope."""
    gross = net = 0.0
    for (venue, account, instrument, _), exposure in others:
        theirs = _order_scope(definition, venue, account, instrument, exposure.base)
        if theirs is not None and theirs.key == scope.key:
            gross += exposure.gross_usd
            net += exposure.net_usd
    if gross == 0.0 and net == 0.0:
        return delta
    return replace(delta, gross_usd=delta.gross_usd + gross, net_usd=delta.net_usd + net)


def evaluated_position(source: RiskReport | PreparedInputs, venue: str, account: str,
                       instrument: str) -> float:
    """The evaluated signed base quantity of one instrument (all legs netted), from the same
    cached legs the check reads (a dict read after the first)."""
    state = source.state if isinstance(source, RiskReport) else source
    legs = _legs(state, OrderRequest(venue, account, instrument, OrderSide.BUY, 1.0))
    return float(sum(legs.quantity))


def _validate(order: OrderRequest) -> str:
    if str(order.side) not in {s.value for s in OrderSide}:
        return f"side must be buy or sell, got {order.side!r}"
    if not (isinstance(order.quantity, int | float) and math.isfinite(order.quantity)
            and order.quantity > 0):
        return f"quantity must be a positive number of base units, got {order.quantity!r}"
    if order.price is not None and not (math.isfinite(order.price) and order.price > 0):
        return f"price must be positive when given, got {order.price!r}"
    if order.position_side not in (None, "long", "short"):
        return f"position_side must be long, short or absent, got {order.position_side!r}"
    return ""


def _quote_lookup(state: PreparedInputs) -> dict[tuple[str, str], tuple[float, int, str, str]]:
    cached = state.cache.get("quote_lookup")
    if cached is None:
        q = state.quotes
        cached = {
            (str(v), str(i)): (float(m), int(t), str(b), str(c))
            for v, i, m, t, b, c in zip(
                q["venue"], q["instrument"], q["mark"], q["t_ns"], q["base"], q["quote"],
                strict=True,
            )
        }
        state.cache["quote_lookup"] = cached
    return cached  # type: ignore[no-any-return]


@dataclass(frozen=True)
class _Legs:
    """The positions of one (venue, account, instrument), as plain values."""

    side: tuple[str, ...]
    quantity: tuple[float, ...]
    base: str | None
    quote: str | None
    mark: float  # NaN unless a usable row has one
    mark_ns: int


_LEG_COLUMNS = ("position_side", "quantity", "base", "quote", "mark", "ok")


def _legs(state: PreparedInputs, order: OrderRequest) -> _Legs:
    """The order's legs, read from the frame once per evaluation and (venue, account,
    instrument): later checks on the same book are dict reads, no pandas (CheckOrder's p99)."""
    key = ("order_legs", order.venue, order.account, order.instrument)
    legs = state.cache.get(key)
    if legs is None:
        legs = _read_legs(state, order)
        state.cache[key] = legs  # idempotent: a racing check computes the same value
    return legs  # type: ignore[no-any-return]


def _read_legs(state: PreparedInputs, order: OrderRequest) -> _Legs:
    idx = state.positions_index.lookup(
        {"venue": order.venue, "account": order.account, "instrument": order.instrument}
    )
    if len(idx) == 0:
        return _Legs((), (), None, None, math.nan, NAT)
    col = {c: list(np.asarray(state.pnl[c].array[idx], dtype=object)) for c in _LEG_COLUMNS}
    ok = [bool(v) for v in col["ok"]]
    times = state.positions_index.t_ns[idx]
    marks = [float(m) for m, good in zip(col["mark"], ok, strict=True) if good]
    good_times = [int(t) for t, good in zip(times, ok, strict=True) if good]
    return _Legs(
        side=tuple(str(v) for v in col["position_side"]),
        quantity=tuple(float(v) for v in col["quantity"]),
        base=str(col["base"][0]),
        quote=str(col["quote"][0]),
        mark=marks[0] if marks else math.nan,
        mark_ns=min(good_times) if good_times else NAT,
    )


def _currencies(state: PreparedInputs, order: OrderRequest, legs: _Legs) -> tuple[str, str]:
    if legs.base is not None and legs.quote is not None:
        return legs.base, legs.quote
    for (_, instrument), (_, _, base, quote) in _quote_lookup(state).items():
        if instrument == order.instrument:
            return base, quote
    base, _, rest = order.instrument.partition("/")  # ccxt unified: BASE/QUOTE[:SETTLE]
    return base, rest.partition(":")[0]


def _mark(state: PreparedInputs, order: OrderRequest, legs: _Legs) -> tuple[float, int]:
    hit = _quote_lookup(state).get((order.venue, order.instrument))
    if hit is not None:
        return hit[0], hit[1]
    return legs.mark, legs.mark_ns


def _blind_reason(state: PreparedInputs, order: OrderRequest, now: datetime, *, mark: float,
                  mark_ns: int, rate: float) -> str:
    """Why the order cannot be judged at all (empty when it can)."""
    fresh_at_order = Freshness(now, state.freshness.max_age_s, state.freshness.max_future_skew_s)
    healthy = [
        s for s in state.sources
        if s.kind is SourceKind.EXCHANGE and s.venue == order.venue and s.account == order.account
    ]
    if not healthy:
        return f"no data source for {order.venue}/{order.account}: cannot judge the order"
    for problem in state.problems:
        if problem.matches(order.venue, order.account) and problem.affects_positions:
            return problem.reason
    if not math.isfinite(mark):
        return f"no fresh price for {order.instrument} on {order.venue}"
    if not math.isfinite(rate):
        return f"no fresh USD price for the quote currency of {order.instrument}"
    if not (mark_ns != NAT and fresh_at_order.oldest_ns <= mark_ns <= fresh_at_order.newest_ns):
        return f"price of {order.instrument} on {order.venue} is stale at order time"
    return ""


def _delta(legs: _Legs, order: OrderRequest, signed_qty: float, mark: float,
           rate: float, ahead: float = 0.0) -> tuple[_Delta, str]:
    """``ahead``: base units pending on the order's leg in its direction (they fill first)."""
    quantities: dict[str, float] = {}
    for side, quantity in zip(legs.side, legs.quantity, strict=True):
        quantities[side] = quantities.get(side, 0.0) + quantity
    if order.position_side is None:
        if len(legs.side) > 1 and {"long", "short"} <= set(quantities):
            return _Delta(0, 0, 0, False), (
                f"{order.venue}/{order.account} holds hedge-mode long and short legs of "
                f"{order.instrument}: give position_side"
            )
        old = sum(legs.quantity)
        start = old + ahead
        new = start + signed_qty
        old_abs_sum = sum(abs(q) for q in legs.quantity)
    else:
        old = quantities.get(order.position_side, 0.0)
        start = old + ahead
        new = start + signed_qty
        long = order.position_side == "long"
        if (new < -1e-12) if long else (new > 1e-12):  # the order would cross its leg's zero
            return _Delta(0, 0, 0, False), (
                f"{'sell' if long else 'buy'} {order.quantity} exceeds the "
                f"{order.position_side} leg ({start:g}"
                f"{'' if ahead == 0 else ' after pending orders'}) of {order.instrument}"
            )
        old_abs_sum = abs(old)
    price = order.price if order.price is not None else mark
    # judged from where the pending orders ahead leave the leg: a reduction that they would
    # turn into a flip is no reduction
    reducing = abs(new) <= abs(start) and (
        new == 0 or math.copysign(1, new) == math.copysign(1, start))
    scale = mark * rate
    return _Delta(
        gross_usd=(abs(new) - old_abs_sum) * scale if order.position_side is None
        else (abs(new) - abs(old)) * scale,
        net_usd=(ahead + signed_qty) * scale,
        equity_usd=(mark - price) * signed_qty * rate,
        reducing=reducing,
        own_gross_usd=(abs(new) - abs(start)) * scale,
        own_net_usd=signed_qty * scale,
    ), ""


def _order_scope(definition: LimitDefinition, venue: str, account: str, instrument: str,
                 base: str) -> Scope | None:
    """The concrete scope of a limit that contains an order, or None if it does not."""
    coordinates = {"venue": venue, "account": account, "instrument": instrument, "asset": base}
    values: dict[str, str] = {}
    for dim in SCOPE_DIMS:
        wanted = getattr(definition.scope, dim)
        if wanted is None:
            continue
        if wanted != WILDCARD and wanted != coordinates[dim]:
            return None
        values[dim] = coordinates[dim]
    return Scope.of(values)


def _project(state: PreparedInputs, definition: LimitDefinition, scope: Scope, *, delta: _Delta,
             blind: str, now: datetime, elapsed_s: float,
             portfolio_after: PortfolioPnl) -> tuple[Measured, Measured]:
    """(current, projected) measurement of one limit scope."""
    if definition.kind is LimitKind.DATA_AGE:
        measured, _ = data_age_inputs(state, scope.items())[scope]
        if measured.value is None:
            return measured, measured
        return measured, measured._replace(value=measured.value + elapsed_s)
    inputs = state.inputs.get((definition.id, scope.key))
    if inputs is None:
        inputs = scope_inputs(state, definition.spec.needs, scope.items()).get(scope, ScopeInputs())
    current = measure(definition, inputs, state.portfolio)
    if blind:
        return current, Measured(None, unknown=blind)
    stale = _stale_at(state, inputs, now)
    if stale:
        return current, Measured(None, unknown=stale)
    needs = definition.spec.needs
    after = inputs._replace(
        derivatives_gross_usd=inputs.derivatives_gross_usd + delta.gross_usd,
        derivatives_net_usd=inputs.derivatives_net_usd + delta.net_usd,
        equity_usd=inputs.equity_usd + delta.equity_usd if needs.scope_equity else inputs.equity_usd,
        portfolio_equity_usd=inputs.portfolio_equity_usd + delta.equity_usd
        if needs.portfolio_equity
        else inputs.portfolio_equity_usd,
    )
    return current, measure(definition, after, portfolio_after)


def _stale_at(state: PreparedInputs, inputs: ScopeInputs, now: datetime) -> str:
    if inputs.oldest_ns == NAT:
        return ""
    age = (ns_of(now) - inputs.oldest_ns) / 1e9
    if age > state.freshness.max_age_s:
        return f"inputs are {age:.0f}s old at order time (> {state.freshness.max_age_s:.0f}s)"
    return ""


def _no_worse(definition: LimitDefinition, before: float, after: float) -> bool:
    if definition.spec.lower_is_worse:
        return after >= before
    return after <= before + 1e-9 * max(1.0, abs(before))


def _describe(result: LimitResult) -> str:
    used = "" if result.utilisation is None else f", {result.utilisation:.0%} of breach"
    value = "n/a" if result.value is None else f"{result.value:,.2f}"
    return f"value {value}{used}"
