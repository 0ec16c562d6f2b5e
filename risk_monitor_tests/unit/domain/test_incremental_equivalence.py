"""The per-tick evaluator and the batch engine, given the same quotes, give the same answer.

Hypothesis generates a desk (positions with and without liquidation prices on two or three
venues, exchange balances, custody, sometimes a held non-stable asset), quotes that are fresh,
stale, missing or absurd, a limit document covering every kind (or only the desk-wide ones:
daily loss, drawdown, data age), and then a stream of ticks (some
stale, some absurd). After every tick the incremental evaluator's results must equal a full
batch evaluation of the same quote book: status, value, utilisation and source event time of
every limit. A tick the evaluator cannot decide alone (it says why) is answered by the full
evaluation and the evaluator rebases on it, as the service does. ``data_age`` is the
heartbeat's (a tick only makes data younger), so it is compared only against its baseline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from risk_monitor.domain.engine import RiskReport, RiskSnapshot, evaluate
from risk_monitor.domain.incremental import IncrementalEvaluator, Tick
from risk_monitor.domain.limits import LimitConfig, load_limit_config
from risk_monitor.domain.model import (
    BALANCE_COLUMNS,
    POSITION_COLUMNS,
    Collected,
    LimitResult,
    SourceKind,
    SourceStatus,
)
from risk_monitor.domain.quotes import QuotePolicy, quotes_from_rows
from risk_monitor.domain.valuation import ns_of
from risk_monitor_tests.unit.domain.builders import balance, frame, position

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
VENUES = ("binance", "okx", "bybit")
PRICES = {"BTC/USDT:USDT": 60_000.0, "ETH/USDT:USDT": 3_000.0, "SOL/USDT:USDT": 150.0}
QUOTE_KINDS = ("fresh",) * 24 + ("stale", "missing", "absurd")
POLICY = QuotePolicy(max_age_s=60.0, max_future_skew_s=5.0, max_deviation=0.25)


def quote(venue: str, instrument: str, last: float, at: datetime) -> dict[str, Any]:
    return {"venue": venue, "instrument": instrument, "base": instrument.partition("/")[0],
            "quote": "USDT", "bid": last * 0.9999, "ask": last * 1.0001, "last": last,
            "mark": last, "timestamp": at, "received_at": at}


@st.composite
def desks(draw: st.DrawFn, *, desk_wide_only: bool = False) -> dict[str, Any]:
    venues = draw(st.sampled_from([VENUES[:2], VENUES]))
    book: dict[tuple[str, str], dict[str, Any]] = {}
    positions, balances = [], []
    for venue in venues:
        for instrument, price in PRICES.items():
            kind = draw(st.sampled_from(QUOTE_KINDS))
            last = price * (1 + draw(st.floats(-0.01, 0.01))) * (1000 if kind == "absurd" else 1)
            at = NOW - timedelta(seconds=600 if kind == "stale" else 2)
            if kind != "missing":
                book[(venue, instrument)] = quote(venue, instrument, last, at)
            for account in draw(st.sampled_from([("main",), ("main", "sub")])):
                size = draw(st.floats(0.02, 20)) * draw(st.sampled_from([1, -1]))
                liq = draw(st.sampled_from([math.nan, price * (0.5 if size > 0 else 1.5)]))
                positions.append(position(venue, instrument, size,
                                          price * (1 + draw(st.floats(-0.05, 0.05))), price,
                                          account=account, liquidation=liq, received=NOW))
        balances.append(balance(venue, "USDT", draw(st.floats(1e5, 5e6)), received=NOW))
    custody = [balance("fireblocks", "USDT", draw(st.floats(0, 5e6)), account="vault-1",
                       source_type="custodian", received=NOW)]
    if draw(st.booleans()):
        custody.append(balance("fireblocks", "SOL", draw(st.floats(0, 1e4)), account="vault-1",
                               source_type="custodian", received=NOW))
    notional = draw(st.floats(1e4, 2e6))
    level = lambda lo, hi: draw(st.floats(lo, hi))  # noqa: E731
    limits = {"venues": [*venues, "fireblocks"], "limits": [
        {"id": "notional", "kind": "max_notional", "scope": {"venue": "*", "instrument": "*"},
         "warn": notional * 0.8, "breach": notional},
        {"id": "notional-acct", "kind": "max_notional",
         "scope": {"venue": "*", "account": "*"}, "breach": level(1e5, 5e6)},
        {"id": "gross", "kind": "gross_exposure", "scope": {"venue": "*"},
         "warn": level(1e5, 1e6), "breach": 2e6},
        {"id": "net", "kind": "net_exposure", "scope": {"asset": "*"}, "breach": level(1e4, 2e6)},
        {"id": "cpty", "kind": "counterparty", "scope": {"venue": "*"}, "breach": level(1e5, 8e6)},
        {"id": "lev", "kind": "leverage", "scope": {"venue": "*"}, "warn": 0.5,
         "breach": level(0.6, 5)},
        {"id": "conc", "kind": "concentration", "scope": {"asset": "*"}, "breach": level(5, 80)},
        {"id": "loss", "kind": "daily_loss", "breach": level(1e3, 1e5)},
        {"id": "dd", "kind": "drawdown", "breach": level(0.5, 20)},
        {"id": "liq", "kind": "liquidation_distance", "scope": {"venue": "*", "asset": "*"},
         "warn": 45.0, "breach": level(10, 40)},
        {"id": "age", "kind": "data_age", "scope": {"venue": "*"}, "warn": 30, "breach": 50},
    ]}
    if desk_wide_only:  # its positions sit in no limit's scope, yet a tick moves equity
        limits["limits"] = [x for x in limits["limits"] if x["id"] in {"loss", "dd", "age"}]
    ticks = draw(st.lists(st.tuples(
        st.sampled_from(venues), st.sampled_from(list(PRICES)),
        st.one_of(st.floats(0.9, 1.1), st.floats(0.5, 2.0)),
        st.sampled_from([0.5, 1.0, 1.5, 3.0, 120.0]),
        st.sampled_from([1.0, 1.0, 1.0, 2.0])), min_size=1, max_size=15))
    return {"venues": venues, "book": book, "positions": positions, "balances": balances,
            "custody": custody, "limits": limits, "sod": draw(st.sampled_from([None, 5e6])),
            "peak": draw(st.sampled_from([None, 9e6])), "ticks": ticks}


def full(desk: Mapping[str, Any], config: LimitConfig,
         book: Mapping[tuple[str, str], Mapping[str, Any]]) -> RiskReport:
    """The batch path: quote book → admission → snapshot → engine."""
    symbols = {v: list(PRICES) for v in desk["venues"]}
    ok = lambda kind, venue, account, rows: SourceStatus(  # noqa: E731
        kind, venue, account, True, NOW, rows=rows)
    positions = Collected(frame(desk["positions"], POSITION_COLUMNS), tuple(
        ok(SourceKind.EXCHANGE, v, "main", 1) for v in desk["venues"]))
    balances = Collected(
        frame(desk["balances"] + desk["custody"], BALANCE_COLUMNS),
        (*positions.sources, ok(SourceKind.CUSTODIAN, "fireblocks", "*", 1)))
    prices = quotes_from_rows(list(book.values()), symbols, NOW, POLICY)
    snapshot = RiskSnapshot(positions=positions, balances=balances, prices=prices, now=NOW,
                            start_of_day_equity=desk["sod"], peak_equity=desk["peak"],
                            max_age_s=POLICY.max_age_s,
                            max_future_skew_s=POLICY.max_future_skew_s)
    return evaluate(snapshot, config)


def same(a: float | None, b: float | None) -> bool:
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return (a is None or math.isnan(a)) and (b is None or math.isnan(b))
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


def assert_equal(incremental: list[LimitResult], batch: list[LimitResult],
                 baseline: Mapping[str, LimitResult]) -> None:
    assert [r.fingerprint for r in incremental] == [r.fingerprint for r in batch]
    for mine, theirs in zip(incremental, batch, strict=True):
        if mine.limit_kind == "data_age":
            assert mine == baseline[mine.fingerprint]
            continue
        where = f"{mine.limit_id} {mine.scope}: {mine} != {theirs}"
        assert mine.status is theirs.status, where
        assert same(mine.value, theirs.value), where
        assert same(mine.utilisation, theirs.utilisation), where
        assert mine.source_event_time == theirs.source_event_time, where


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(desk=desks())
def test_every_tick_gives_the_batch_engines_statuses_and_values(desk: dict[str, Any]) -> None:
    ticks_match_the_batch(desk)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(desk=desks(desk_wide_only=True))
def test_desk_wide_limits_follow_every_tick(desk: dict[str, Any]) -> None:
    """No limit's scope holds the ticked position, yet its move is the portfolio's."""
    ticks_match_the_batch(desk)


def ticks_match_the_batch(desk: dict[str, Any]) -> None:
    config = load_limit_config(desk["limits"])
    book = dict(desk["book"])
    report = full(desk, config, book)
    evaluator = IncrementalEvaluator(report, config, POLICY)
    baseline = {r.fingerprint: r for r in report.results}
    for venue, instrument, move, age_s, mark_ratio in desk["ticks"]:
        last = PRICES[instrument] * move
        at = NOW - timedelta(seconds=age_s)
        row = quote(venue, instrument, last, at)
        row["mark"] = last * mark_ratio
        book[(venue, instrument)] = row
        decision = evaluator.on_tick(Tick(venue, instrument, last, ns_of(at), mark=row["mark"],
                                          bid=row["bid"], ask=row["ask"]), NOW)
        report = full(desk, config, book)
        if decision.full_reason:
            event("full evaluation")
            evaluator = IncrementalEvaluator(report, config, POLICY)
            baseline = {r.fingerprint: r for r in report.results}
            continue
        event("decided per tick")
        assert_equal(evaluator.results(), report.results, baseline)
        moved = {r.fingerprint for r in decision.changed}
        assert moved <= {r.fingerprint for r in decision.updated}
