"""The prepared risk state and fast per-scope sums over it.

Everything a limit needs is a sum (gross, net, unrealized P&L, holdings, balances) or a minimum
(liquidation distance, oldest input time) over the rows inside a scope, plus whether any row or
source behind it is unusable. :class:`~risk_monitor.domain.frame_index.FrameIndex` answers the
sums; this module turns them into :class:`ScopeInputs` per concrete scope (cached on the
:class:`PreparedInputs`), failing closed on bad rows and failed sources.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from risk_monitor.domain.coverage import SourceProblem
from risk_monitor.domain.frame_index import FrameIndex
from risk_monitor.domain.model import SourceKind, SourceStatus
from risk_monitor.domain.pnl import (
    PortfolioPnl,
    describe_balance_problem,
    describe_position_problem,
)
from risk_monitor.domain.scopes import SCOPE_DIMS, WILDCARD, Scope, scope_builder
from risk_monitor.domain.valuation import NAT, AssetPrices, Freshness, column_ns, min_ns, ns_of


@dataclass(frozen=True)
class Needs:
    """Which inputs a limit kind reads; decides which missing sources make it UNKNOWN."""

    positions: bool = False  # derivative positions inside the scope
    holdings: bool = False  # non-stable balances inside the scope (spot / custody)
    scope_equity: bool = False  # equity of the accounts inside the scope
    portfolio_equity: bool = False  # equity of the whole portfolio


class ScopeInputs(NamedTuple):
    """Everything any limit kind needs about one concrete scope.

    A named tuple, not a frozen dataclass: one is built per concrete scope (4k+ per full
    evaluation) and a tuple costs a quarter of the frozen dataclass's ``__init__``. Immutable
    alike; change a copy with ``_replace``."""

    derivatives_gross_usd: float = 0.0
    derivatives_net_usd: float = 0.0
    holdings_usd: float = 0.0  # non-stable balances (spot / custody), USD
    equity_usd: float = math.nan  # equity of the accounts in scope (when needed)
    portfolio_equity_usd: float = math.nan  # (when needed)
    min_liquidation_distance_pct: float = math.nan
    positions: int = 0
    problems: tuple[str, ...] = ()  # non-empty → UNKNOWN
    oldest_ns: int = NAT
    problem_as_of_ns: int = NAT  # oldest failure time behind ``problems``

    @property
    def known(self) -> bool:
        return not self.problems

    @property
    def gross_usd(self) -> float:
        return self.derivatives_gross_usd + abs(self.holdings_usd)

    @property
    def net_usd(self) -> float:
        return self.derivatives_net_usd + self.holdings_usd


@dataclass
class PreparedInputs:
    """Prepared inputs of one evaluation: valued frames, coverage and the scope indexes."""

    freshness: Freshness
    valuation: AssetPrices
    quotes: pd.DataFrame  # latest fresh quote per (venue, instrument): LATEST_QUOTE_COLUMNS
    pnl: pd.DataFrame
    balances: pd.DataFrame
    equity: pd.DataFrame
    portfolio: PortfolioPnl
    sources: list[SourceStatus]
    problems: list[SourceProblem]
    positions_index: FrameIndex
    balances_index: FrameIndex
    quotes_index: FrameIndex
    expected_venues: frozenset[str]
    portfolio_oldest_ns: int = NAT
    #: inputs behind each evaluated (limit_id, scope key); reused by the pre-trade check
    inputs: dict[tuple[str, str], ScopeInputs] = field(default_factory=dict)
    #: lazily built lookups (quote by instrument, oldest input per venue, ...)
    cache: dict[Any, Any] = field(default_factory=dict)

    def venue_oldest_ns(self) -> dict[str, int]:
        """Oldest input time per venue: row times, or the attempt time of a source that
        delivered no rows (an empty answer is as old as the request that got it)."""
        cached = self.cache.get("venue_oldest")
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        oldest: dict[str, int] = {}
        with_rows: set[tuple[str, str, str]] = set()
        for kind, index in (("account", self.positions_index), ("account", self.balances_index)):
            for key, agg in index.groups({}, ["venue", "account"]).items():
                with_rows.add((kind, key[0], key[1]))
                oldest[key[0]] = min_ns(oldest.get(key[0], NAT), agg.oldest_ns)
        for key, agg in self.quotes_index.groups({}, ["venue"]).items():
            with_rows.add(("market", key[0], ""))
            oldest[key[0]] = min_ns(oldest.get(key[0], NAT), agg.oldest_ns)
        for status in self.sources:
            kind = "market" if status.kind is SourceKind.MARKET else "account"
            account = "" if kind == "market" else status.account
            if (kind, status.venue, account) not in with_rows:
                oldest[status.venue] = min_ns(oldest.get(status.venue, NAT), ns_of(status.as_of))
        self.cache["venue_oldest"] = oldest
        return oldest

    def venues(self, kinds: set[SourceKind]) -> set[str]:
        """Venues with a source of one of ``kinds`` or rows in the matching frames."""
        found = {s.venue for s in self.sources if s.kind in kinds}
        if SourceKind.EXCHANGE in kinds:
            found.update(self.positions_index.uniques("venue"))
        if kinds & {SourceKind.EXCHANGE, SourceKind.CUSTODIAN}:
            found.update(self.balances_index.uniques("venue"))
        if SourceKind.MARKET in kinds:
            found.update(self.quotes_index.uniques("venue"))
        found.update(p.venue for p in self.problems if p.kind is None)
        return found


def problem_affects(problem: SourceProblem, needs: Needs, scope: Scope) -> bool:
    """Could the data a failed/stale source did not deliver fall inside this scope's inputs?"""
    if problem.kind is SourceKind.MARKET:
        return False  # missing quotes show up row by row as missing marks / prices
    if needs.portfolio_equity and problem.affects_equity:
        return True
    if not problem.matches(scope.venue, scope.account):
        return False
    if needs.scope_equity and problem.affects_equity:
        return True
    if not problem.covers(scope.instrument, scope.asset):
        return False  # one bad row of another instrument / asset
    if needs.positions and problem.affects_positions:
        return True
    return needs.holdings and problem.affects_balances and scope.instrument is None


@dataclass
class Expansion:
    """One scope template's concrete scopes and their inputs, entry by entry (cached on the
    state per (needs, template)). The mapping and the key order are built on first use: a
    frozen dataclass hashes in Python, and most readers only walk the sorted pairs."""

    scopes: list[Scope]
    inputs: list[ScopeInputs]
    _mapping: dict[Scope, ScopeInputs] | None = None
    _sorted: list[tuple[Scope, ScopeInputs]] | None = None

    def mapping(self) -> dict[Scope, ScopeInputs]:
        if self._mapping is None:
            self._mapping = dict(zip(self.scopes, self.inputs, strict=True))
        return self._mapping

    def sorted_pairs(self) -> list[tuple[Scope, ScopeInputs]]:
        """(scope, inputs) in canonical key order (keys are unique within a template)."""
        if self._sorted is None:
            scopes, inputs = self.scopes, self.inputs
            order = sorted(range(len(scopes)), key=[s.key for s in scopes].__getitem__)
            self._sorted = [(scopes[i], inputs[i]) for i in order]
        return self._sorted


def _expansion(
    state: PreparedInputs, needs: Needs, template: Mapping[str, str | None]
) -> Expansion:
    fixed = {d: v for d in SCOPE_DIMS if (v := template.get(d)) is not None and v != WILDCARD}
    wild = [d for d in SCOPE_DIMS if template.get(d) == WILDCARD]
    cache_key = ("scope_inputs", needs, tuple(fixed.items()), tuple(wild))
    cached = state.cache.get(cache_key)
    if cached is None:
        cached = state.cache[cache_key] = _scope_inputs(state, needs, fixed, wild)
    return cached  # type: ignore[no-any-return]


def scope_inputs(
    state: PreparedInputs, needs: Needs, template: Mapping[str, str | None]
) -> dict[Scope, ScopeInputs]:
    """Inputs per concrete scope of a scope template ('*' values expand to one scope each).

    Cached on the state per (needs, template): limits that share a template, the exposure
    table and the pre-trade check read the same inputs without recomputing them (the returned
    mapping is shared: read it, do not change it)."""
    return _expansion(state, needs, template).mapping()


def sorted_scope_inputs(
    state: PreparedInputs, needs: Needs, template: Mapping[str, str | None]
) -> list[tuple[Scope, ScopeInputs]]:
    """:func:`scope_inputs` as (scope, inputs) pairs in canonical key order, the order results
    and tables list them in; cached alike (limits sharing a template sort once)."""
    return _expansion(state, needs, template).sorted_pairs()


def _scope_inputs(
    state: PreparedInputs, needs: Needs, fixed: dict[str, str], wild: list[str]
) -> Expansion:
    instrument_scoped = "instrument" in fixed or "instrument" in wild

    no_groups = FrameIndex.NO_GROUPS
    pos = (
        state.positions_index.columns(fixed, wild, _POSITION_SUMS)
        if needs.positions or needs.scope_equity
        else no_groups
    )
    hold = (
        state.balances_index.columns({**fixed, "class": "asset"}, wild, ("holding",))
        if needs.holdings and not instrument_scoped
        else no_groups
    )
    bal = state.balances_index.columns(fixed, wild, ("value",)) if needs.scope_equity \
        else no_groups
    pos_at, hold_at, bal_at = pos.at(), hold.at(), bal.at()
    keys: set[tuple[str, ...]] = set(pos_at) | set(hold_at) | set(bal_at)
    keys |= _source_keys(state, needs, fixed, wild)
    if needs.positions:
        keys |= _quote_keys(state, fixed, wild)
    if not wild:
        keys.add(())  # a fixed scope always has a result, even with no rows (value 0)

    if not keys:
        return Expansion([], [])
    # only problems that can touch some scope of this kind (market problems never do)
    problems = [p for p in state.problems if p.kind is not SourceKind.MARKET]
    portfolio = state.portfolio
    portfolio_equity = portfolio.equity_usd if needs.portfolio_equity else math.nan
    portfolio_reason = portfolio.reason if needs.portfolio_equity and not portfolio.known else ""
    portfolio_oldest = state.portfolio_oldest_ns if needs.portfolio_equity else NAT
    make_scope = scope_builder(fixed, wild)
    order = list(keys)
    scopes = [make_scope(key) for key in order]
    # column by column (5k+ scopes per evaluation): each scope's group position in the
    # position / holding / balance groupings, -1 for none, which picks the appended default
    p_at = [pos_at.get(key, -1) for key in order]
    h_at = [hold_at.get(key, -1) for key in order] if hold_at else [-1] * len(order)
    b_at = [bal_at.get(key, -1) for key in order] if bal_at else [-1] * len(order)
    nan = math.nan
    upnl = _picked(pos.sums.get("upnl", []), p_at, 0.0)
    equity = ([b + u for b, u in zip(_picked(bal.sums.get("value", []), b_at, 0.0), upnl,
                                     strict=True)]
              if needs.scope_equity else [nan] * len(order))
    oldest = _oldest(portfolio_oldest, (pos.oldest_ns, p_at), (hold.oldest_ns, h_at),
                     (bal.oldest_ns, b_at))
    reasons_of: list[tuple[str, ...]] = [()] * len(order)
    problem_ns_of: list[int] = [NAT] * len(order)
    if problems or portfolio_reason:
        flagged: Iterable[int] = range(len(order))
    else:  # the usual case: only scopes with an unusable row need a reason
        flagged = [i for i, (p, h, b) in enumerate(zip(p_at, h_at, b_at, strict=True))
                   if (p >= 0 and pos.bad[p]) or (h >= 0 and hold.bad[h])
                   or (b >= 0 and bal.bad[b])]
    for i in flagged:
        p, h, b = p_at[i], h_at[i], b_at[i]
        reasons: list[str] = []
        if p >= 0 and pos.bad[p]:
            reasons.append(describe_position_problem(state.pnl.iloc[pos.first_bad[p]]))
        if h >= 0 and hold.bad[h]:
            reasons.append(describe_balance_problem(state.balances.iloc[hold.first_bad[h]]))
        if b >= 0 and bal.bad[b]:
            reasons.append(describe_balance_problem(state.balances.iloc[bal.first_bad[b]]))
        if portfolio_reason:
            reasons.append(portfolio_reason)
        problem_ns = NAT
        for problem in problems:
            if problem_affects(problem, needs, scopes[i]):
                reasons.append(problem.reason)
                if problem.as_of is not None:
                    problem_ns = min_ns(problem_ns, ns_of(problem.as_of))
        reasons_of[i] = tuple(dict.fromkeys(reasons))
        problem_ns_of[i] = problem_ns
    inputs = map(ScopeInputs._make, zip(
        _picked(pos.sums.get("gross", []), p_at, 0.0),
        _picked(pos.sums.get("net", []), p_at, 0.0),
        _picked(hold.sums.get("holding", []), h_at, 0.0),
        equity,
        [portfolio_equity] * len(order),
        _picked(pos.mins.get("liq", []), p_at, nan),
        _picked(pos.rows, p_at, 0),
        reasons_of,
        oldest,
        problem_ns_of,
        strict=True,
    ))
    return Expansion(scopes, list(inputs))


def _picked(values: Sequence[Any], at: list[int], default: Any) -> list[Any]:
    """``values[i]`` for each ``i`` of ``at``, ``default`` where ``i`` is -1 (the same
    objects: no conversion, so the figures are the groupings' own bits)."""
    padded = [*values, default]
    if len(at) == 1:
        return [padded[at[0]]]
    return list(itemgetter(*at)(padded))


def _oldest(start: int, *columns: tuple[list[int], list[int]]) -> list[int]:
    """Per scope the oldest of ``start`` and its group's time in each (times, positions)
    grouping, NAT counting as no time (``valuation.min_ns`` element-wise)."""
    oldest = np.full(len(columns[0][1]), _NO_TIME if start == NAT else start, dtype=np.int64)
    for times, at in columns:
        if not times:
            continue
        t = np.asarray(_picked(times, at, NAT), dtype=np.int64)
        np.minimum(oldest, np.where(t == NAT, _NO_TIME, t), out=oldest)
    return np.where(oldest == _NO_TIME, NAT, oldest).tolist()  # type: ignore[no-any-return]


#: no time yet, in a minimum (above every real ns time)
_NO_TIME = np.iinfo(np.int64).max


#: the position sums a scope reads (``realized`` is only for the per-account equity table)
_POSITION_SUMS = ("gross", "net", "upnl")


def _source_keys(
    state: PreparedInputs, needs: Needs, fixed: Mapping[str, str], wild: Sequence[str]
) -> set[tuple[str, ...]]:
    """Wildcard values that come from sources rather than rows: a venue that failed (or holds
    nothing) still gets its own scope, so a blind venue is reported, not skipped."""
    if not wild or not set(wild) <= {"venue", "account"}:
        return set()
    kinds = {SourceKind.EXCHANGE}
    if needs.holdings or needs.scope_equity:
        kinds.add(SourceKind.CUSTODIAN)
    found: set[tuple[str, ...]] = set()
    coordinates = [(s.venue, s.account) for s in state.sources if s.kind in kinds]
    if wild == ["venue"]:
        coordinates += [(p.venue, "") for p in state.problems if p.kind is None]
    for venue, account in coordinates:
        if fixed.get("venue", venue) != venue or fixed.get("account", account) != account:
            continue
        found.add(tuple(venue if d == "venue" else account for d in wild))
    return found


def _quote_keys(
    state: PreparedInputs, fixed: Mapping[str, str], wild: Sequence[str]
) -> frozenset[tuple[str, ...]]:
    """Wildcard values from the instruments we price: an instrument of a venue whose account
    data failed still gets its (UNKNOWN) scope as long as its quotes arrive; a flat one reads 0."""
    if not wild or "account" in wild or "account" in fixed or len(state.quotes) == 0:
        return frozenset()
    cache_key = ("quote_keys", tuple(fixed.items()), tuple(wild))
    cached = state.cache.get(cache_key)  # limits of one template with different needs share it
    if cached is None:
        cached = state.cache[cache_key] = frozenset(_quoted(state, fixed, wild))
    return cached  # type: ignore[no-any-return]


def _quoted(
    state: PreparedInputs, fixed: Mapping[str, str], wild: Sequence[str]
) -> set[tuple[str, ...]]:
    columns = {"venue": "venue", "instrument": "instrument", "asset": "base"}
    quotes = state.quotes
    mask = np.ones(len(quotes), dtype=bool)
    for dim, value in fixed.items():
        mask &= quotes[columns[dim]].to_numpy() == value
    if "asset" in wild:  # cash is no asset exposure
        mask &= ~np.isin(quotes["base"].to_numpy(), list(state.valuation.stablecoins))
    picked = [[str(v) for v in quotes[columns[d]].to_numpy()[mask].tolist()] for d in wild]
    return set(zip(*picked, strict=True))  # one tuple per combination


def index_positions(pnl: pd.DataFrame) -> FrameIndex:
    return FrameIndex(
        dims={
            "venue": _keys(pnl["venue"]),
            "account": _keys(pnl["account"]),
            "instrument": _keys(pnl["instrument"]),
            "asset": _keys(pnl["base"]),
        },
        values={
            "gross": pnl["notional_usd"].to_numpy(dtype=np.float64),
            "net": pnl["signed_notional_usd"].to_numpy(dtype=np.float64),
            "upnl": pnl["unrealized_pnl_usd"].to_numpy(dtype=np.float64),
            "realized": _RealizedUsd(pnl),
        },
        mins={"liq": pnl["liquidation_distance_pct"].to_numpy(dtype=np.float64)},
        bad=~pnl["ok"].to_numpy(dtype=bool),
        t_ns=column_ns(pnl["source_time"]),
    )


@dataclass(frozen=True)
class _RealizedUsd:
    """Realised P&L in USD (NaN as 0) of a slice of rows: only the per-account equity reads
    it, so it is summed slice by slice instead of held as a column. An object holding the P&L
    frame, not a closure: the prepared inputs are pickled between Dagster steps (and the frame
    they already hold is pickled once)."""

    pnl: pd.DataFrame

    def __call__(self, rows: slice) -> np.ndarray:
        realized = self.pnl["realized_pnl"].to_numpy(dtype=np.float64)[rows]
        quote_usd = self.pnl["quote_usd"].to_numpy(dtype=np.float64)[rows]
        return np.nan_to_num(realized * quote_usd, copy=False)


def index_balances(valued: pd.DataFrame) -> FrameIndex:
    return FrameIndex(
        dims={
            "source_type": valued["source_type"].to_numpy(),
            "venue": valued["venue"].to_numpy(),
            "account": valued["account"].to_numpy(),
            "asset": valued["currency"].to_numpy(),
            "class": np.where(valued["is_stable"].to_numpy(dtype=bool), "stable", "asset"),
        },
        values={
            "value": valued["value_usd"].to_numpy(dtype=np.float64),
            "holding": valued["holding_usd"].to_numpy(dtype=np.float64),
        },
        mins={},
        bad=~valued["ok"].to_numpy(dtype=bool),
        t_ns=column_ns(valued["source_time"]),
    )


def index_quotes(venues: np.ndarray, t_ns: np.ndarray) -> FrameIndex:
    return FrameIndex(
        dims={"venue": venues},
        values={},
        mins={},
        bad=np.zeros(len(venues), dtype=bool),
        t_ns=t_ns,
    )


def _keys(series: pd.Series) -> np.ndarray | pd.Categorical:
    array = series.array
    return array if isinstance(array, pd.Categorical) else series.to_numpy()


def positions_by_account(pnl: pd.DataFrame, index: FrameIndex) -> list[dict[str, Any]]:
    """Per (venue, account) sums of the positions, for :func:`equity.equity_table`."""
    return [{"venue": key[0], "account": key[1], "upnl": agg.sums["upnl"],
             "realized": agg.sums["realized"], "count": agg.rows, "bad": agg.bad,
             "oldest_ns": agg.oldest_ns,
             "reason": describe_position_problem(pnl.iloc[agg.first_bad]) if agg.bad else ""}
            for key, agg in sorted(index.groups({}, ["venue", "account"]).items())]


def balances_by_account(valued: pd.DataFrame, index: FrameIndex) -> list[dict[str, Any]]:
    """Per (source_type, venue, account) sums of valued balances, for :func:`equity.equity_table`."""
    return [{"source_type": key[0], "venue": key[1], "account": key[2],
             "value": agg.sums["value"], "bad": agg.bad, "oldest_ns": agg.oldest_ns,
             "reason": describe_balance_problem(valued.iloc[agg.first_bad]) if agg.bad else ""}
            for key, agg in sorted(index.groups({}, ["source_type", "venue", "account"]).items())]
