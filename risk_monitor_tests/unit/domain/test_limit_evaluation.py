"""Limit evaluation: statuses, utilisation, and failing closed on missing or stale inputs."""

from __future__ import annotations

import dataclasses
import math
import pickle
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from risk_monitor.domain.engine import evaluate
from risk_monitor.domain.limit_config import (
    KIND_SPECS,
    UTILISATION_CAP,
    LimitKind,
    classify,
    utilisation,
)
from risk_monitor.domain.model import LimitResult, LimitStatus, limit_result
from risk_monitor.domain.scopes import Scope
from risk_monitor_tests.unit.domain.builders import (
    NOW,
    ago,
    balance,
    by_scope,
    config,
    desk,
    desk_balances,
    desk_positions,
    desk_quotes,
    position,
    quote,
    snapshot,
)

BTC_BINANCE = "venue:binance|instrument:BTC/USDT:USDT"
ALL_KINDS_CONFIG = config(
    {"id": "btc", "kind": "max_notional", "scope": {"venue": "binance", "instrument": "BTC/USDT:USDT"},
     "warn": 800000, "breach": 1000000},
    {"id": "inst", "kind": "max_notional", "scope": {"venue": "*", "instrument": "*"}, "breach": 2e6},
    {"id": "btc-any", "kind": "max_notional", "scope": {"instrument": "BTC/USDT:USDT"}, "breach": 2e6},
    {"id": "asset-deriv", "kind": "max_notional", "scope": {"asset": "*"}, "breach": 5e6},
    {"id": "gross", "kind": "gross_exposure", "scope": {}, "breach": 1e7},
    {"id": "asset-gross", "kind": "gross_exposure", "scope": {"asset": "*"}, "breach": 1e7},
    {"id": "net", "kind": "net_exposure", "scope": {}, "breach": 1e7},
    {"id": "cp", "kind": "counterparty", "scope": {"venue": "*"}, "breach": 1e7},
    {"id": "conc", "kind": "concentration", "scope": {"asset": "*"}, "warn": 40, "breach": 80},
    {"id": "lev", "kind": "leverage", "scope": {}, "breach": 5},
    {"id": "venue-lev", "kind": "leverage", "scope": {"venue": "*"}, "breach": 5},
    {"id": "loss", "kind": "daily_loss", "warn": 100000, "breach": 200000},
    {"id": "dd", "kind": "drawdown", "warn": 10, "breach": 20},
    {"id": "liq", "kind": "liquidation_distance", "scope": {"venue": "*", "instrument": "*"},
     "warn": 20, "breach": 10},
    {"id": "age", "kind": "data_age", "scope": {"venue": "*"}, "warn": 30, "breach": 60},
    venues=["binance", "okx", "fireblocks"],
)


def test_hand_computed_values_on_the_desk() -> None:
    results = evaluate(desk(), ALL_KINDS_CONFIG).results
    btc = by_scope(results, "btc")[BTC_BINANCE]
    assert btc.status is LimitStatus.OK and btc.value == pytest.approx(610000)
    assert btc.utilisation == pytest.approx(0.61)
    assert by_scope(results, "btc-any")["instrument:BTC/USDT:USDT"].value == pytest.approx(854000)
    assert by_scope(results, "asset-deriv")["asset:BTC"].value == pytest.approx(854000)
    assert by_scope(results, "asset-gross")["asset:BTC"].value == pytest.approx(1_220_000)
    assert by_scope(results, "gross")["portfolio"].value == pytest.approx(1_771_000)
    assert by_scope(results, "net")["portfolio"].value == pytest.approx(877_000)
    cp = by_scope(results, "cp")
    assert cp["venue:binance"].value == pytest.approx(515000)
    assert cp["venue:fireblocks"].value == pytest.approx(1_595_000)
    conc = by_scope(results, "conc")["asset:BTC"]
    assert conc.status is LimitStatus.WARN
    assert conc.value == pytest.approx(1_220_000 / 2_481_000 * 100)
    assert "40.00%" in conc.reason and "asset:BTC" in conc.reason
    assert by_scope(results, "lev")["portfolio"].value == pytest.approx(1_771_000 / 2_481_000)
    liq = by_scope(results, "liq")[BTC_BINANCE]
    assert liq.value == pytest.approx(11000 / 61000 * 100)
    assert liq.status is LimitStatus.WARN  # 18.03% <= warn 20%
    assert liq.utilisation == pytest.approx(10 / (11000 / 61000 * 100))
    no_liq = by_scope(results, "liq")["venue:okx|instrument:BTC/USDT:USDT"]
    assert no_liq.status is LimitStatus.OK and no_liq.value is None
    assert by_scope(results, "loss")["portfolio"].value == 0.0
    ages = by_scope(results, "age")
    assert set(ages) == {"venue:binance", "venue:okx", "venue:fireblocks"}
    assert all(r.status is LimitStatus.OK for r in ages.values())
    assert all(r.config_version == ALL_KINDS_CONFIG.version for r in results)
    assert all(r.as_of == NOW for r in results)


@pytest.mark.parametrize(
    ("quantity", "status"),
    [(10, "OK"), (13.9, "WARN"), (18, "BREACH"), (8, "OK")],  # 60% → 85% → 110% → 50% at 61k
)
def test_limit_breach_scenario_levels(quantity: float, status: str) -> None:
    # 10 BTC = 610k; 13.9 BTC = 847.9k; 18 BTC = 1.098M; 8 BTC = 488k
    snap = snapshot(
        [position("binance", "BTC/USDT:USDT", quantity, 60000, 61000)],
        [balance("binance", "USDT", 2_000_000)],
        [quote("binance", "BTC/USDT:USDT", 61000)],
        custodians=(),
    )
    result = by_scope(evaluate(snap, ALL_KINDS_CONFIG).results, "btc")[BTC_BINANCE]
    assert result.status.value == status
    assert result.utilisation == pytest.approx(quantity * 61000 / 1e6)


def test_boundaries_are_inclusive() -> None:
    assert classify(LimitKind.MAX_NOTIONAL, 1000.0, 800.0, 1000.0) == (LimitStatus.BREACH, 1.0)
    assert classify(LimitKind.MAX_NOTIONAL, 800.0, 800.0, 1000.0)[0] is LimitStatus.WARN
    assert classify(LimitKind.MAX_NOTIONAL, 799.99, 800.0, 1000.0)[0] is LimitStatus.OK
    assert classify(LimitKind.MAX_NOTIONAL, 999.0, None, 1000.0)[0] is LimitStatus.OK
    assert classify(LimitKind.LIQUIDATION_DISTANCE, 10.0, 20.0, 10.0) == (LimitStatus.BREACH, 1.0)
    assert classify(LimitKind.LIQUIDATION_DISTANCE, 20.0, 20.0, 10.0)[0] is LimitStatus.WARN
    assert classify(LimitKind.LIQUIDATION_DISTANCE, 0.0, 20.0, 10.0) == (
        LimitStatus.BREACH, UTILISATION_CAP)
    assert classify(LimitKind.LEVERAGE, math.nan, 3.0, 5.0) == (LimitStatus.UNKNOWN, None)
    assert classify(LimitKind.LEVERAGE, None, 3.0, 5.0) == (LimitStatus.UNKNOWN, None)


@given(
    kind=st.sampled_from(list(LimitKind)),
    breach=st.floats(0.01, 1e9),
    a=st.floats(0, 1e10),
    b=st.floats(0, 1e10),
)
def test_utilisation_and_status_are_monotone_in_risk(
    kind: LimitKind, breach: float, a: float, b: float
) -> None:
    lower_is_worse = KIND_SPECS[kind].lower_is_worse
    warn = breach * (1.5 if lower_is_worse else 0.8)
    low, high = sorted((a, b))
    less_risky, riskier = (high, low) if lower_is_worse else (low, high)
    s1, u1 = classify(kind, less_risky, warn, breach)
    s2, u2 = classify(kind, riskier, warn, breach)
    assert u1 is not None and u2 is not None
    assert u1 <= u2 and s1.rank <= s2.rank
    assert (u2 >= 1.0) == (s2 is LimitStatus.BREACH)
    assert utilisation(kind, breach, breach) == pytest.approx(1.0)


def test_failed_venue_makes_its_scopes_unknown_and_leaves_others() -> None:
    results = evaluate(desk(failed=["binance"]), ALL_KINDS_CONFIG).results
    btc = by_scope(results, "btc")[BTC_BINANCE]
    assert btc.status is LimitStatus.UNKNOWN and btc.value is None and btc.utilisation is None
    assert "binance" in btc.reason and "failed" in btc.reason
    assert btc.source_event_time == NOW  # the failing attempt's time
    for limit_id, scope in [
        ("btc-any", "instrument:BTC/USDT:USDT"),  # binance could hold it
        ("asset-deriv", "asset:BTC"),
        ("gross", "portfolio"),
        ("lev", "portfolio"),
        ("conc", "asset:ETH"),  # needs portfolio equity
        ("loss", "portfolio"),
        ("cp", "venue:binance"),
        ("venue-lev", "venue:binance"),
        ("age", "venue:binance"),
    ]:
        r = by_scope(results, limit_id)[scope]
        assert r.status is LimitStatus.UNKNOWN, (limit_id, scope)
        assert "binance" in r.reason, (limit_id, scope, r.reason)
    assert "blind" in by_scope(results, "age")["venue:binance"].reason
    for limit_id, scope in [
        ("inst", "venue:okx|instrument:BTC/USDT:USDT"),
        ("cp", "venue:okx"),
        ("cp", "venue:fireblocks"),
        ("venue-lev", "venue:okx"),
        ("age", "venue:okx"),
        ("liq", "venue:okx|instrument:BTC/USDT:USDT"),
    ]:
        assert by_scope(results, limit_id)[scope].status is LimitStatus.OK, (limit_id, scope)


def test_failed_custodian_only_hits_scopes_that_read_holdings() -> None:
    results = evaluate(desk(failed=["fireblocks"]), ALL_KINDS_CONFIG).results
    assert by_scope(results, "asset-deriv")["asset:BTC"].status is LimitStatus.OK  # derivatives only
    assert by_scope(results, "asset-gross")["asset:BTC"].status is LimitStatus.UNKNOWN
    assert by_scope(results, "gross")["portfolio"].status is LimitStatus.UNKNOWN
    assert by_scope(results, "cp")["venue:fireblocks"].status is LimitStatus.UNKNOWN
    assert by_scope(results, "cp")["venue:binance"].status is LimitStatus.OK
    assert by_scope(results, "btc")[BTC_BINANCE].status is LimitStatus.OK


def test_expected_venue_that_never_reported_is_blind() -> None:
    cfg = config(
        {"id": "age", "kind": "data_age", "scope": {"venue": "*"}, "breach": 60},
        {"id": "venue-notional", "kind": "max_notional", "scope": {"venue": "*"}, "breach": 1e7},
        {"id": "gross", "kind": "gross_exposure", "breach": 1e8},
        venues=["binance", "okx", "fireblocks", "deribit"],
    )
    results = evaluate(desk(), cfg).results
    assert by_scope(results, "age")["venue:deribit"].status is LimitStatus.UNKNOWN
    assert "deribit" in by_scope(results, "age")["venue:deribit"].reason
    assert by_scope(results, "venue-notional")["venue:deribit"].status is LimitStatus.UNKNOWN
    assert by_scope(results, "gross")["portfolio"].status is LimitStatus.UNKNOWN


def test_missing_price_is_unknown_until_ignored() -> None:
    balances = [*desk_balances(), balance("fireblocks", "XYZ", 10, account="vault-1",
                                          source_type="custodian")]
    snap = snapshot(desk_positions(), balances, desk_quotes(),
                    vaults={"fireblocks": ("vault-1", "vault-2")})
    gross = by_scope(evaluate(snap, ALL_KINDS_CONFIG).results, "gross")["portfolio"]
    assert gross.status is LimitStatus.UNKNOWN and "XYZ" in gross.reason
    ignoring = config(*[limit.model_dump() for limit in ALL_KINDS_CONFIG.limits],
                      venues=ALL_KINDS_CONFIG.venues, valuation={"ignore_assets": ["XYZ"]})
    assert by_scope(evaluate(snap, ignoring).results, "gross")["portfolio"].value == pytest.approx(
        1_771_000)


def test_missing_instrument_price_is_unknown() -> None:
    quotes = [q for q in desk_quotes() if not (q["venue"] == "binance" and "BTC" in q["instrument"])]
    positions = [
        {**p, "received_at": ago(120)} if p["venue"] == "binance" and "BTC" in p["instrument"] else p
        for p in desk_positions()
    ]
    snap = snapshot(positions, desk_balances(), quotes, vaults={"fireblocks": ("vault-1", "vault-2")})
    btc = by_scope(evaluate(snap, ALL_KINDS_CONFIG).results, "btc")[BTC_BINANCE]
    assert btc.status is LimitStatus.UNKNOWN
    assert "stale" in btc.reason and "binance" in btc.reason


def test_stale_quote_and_stale_position_make_the_limit_unknown() -> None:
    positions = [position("binance", "BTC/USDT:USDT", 10, 60000, 61000, received=ago(90))]
    quotes = [quote("binance", "BTC/USDT:USDT", 61000, at=ago(90))]
    snap = snapshot(positions, [balance("binance", "USDT", 1e6)], quotes, custodians=())
    results = evaluate(snap, ALL_KINDS_CONFIG).results
    assert by_scope(results, "btc")[BTC_BINANCE].status is LimitStatus.UNKNOWN
    age = by_scope(results, "age")["venue:binance"]
    assert age.status is LimitStatus.BREACH and age.value == pytest.approx(90)


def test_data_age_is_the_oldest_input_of_the_venue() -> None:
    positions = [position("binance", "BTC/USDT:USDT", 1, 60000, 61000, received=ago(10))]
    quotes = [quote("binance", "BTC/USDT:USDT", 61000, at=ago(40)), quote("okx", "BTC/USDT:USDT", 61000)]
    snap = snapshot(positions, [balance("binance", "USDT", 1e6, received=ago(5))], quotes,
                    custodians=())
    ages = by_scope(evaluate(snap, ALL_KINDS_CONFIG).results, "age")
    binance = ages["venue:binance"]
    assert binance.value == pytest.approx(40) and binance.status is LimitStatus.WARN
    assert binance.source_event_time == ago(40)
    assert ages["venue:okx"].value == pytest.approx(0)


def test_stale_source_with_no_rows_counts_its_age() -> None:
    snap = snapshot([], [], [], exchanges=("okx",), custodians=())
    stale = snapshot([], [], [], exchanges=("okx",), custodians=(), now=NOW + timedelta(seconds=45))
    assert by_scope(evaluate(snap, ALL_KINDS_CONFIG).results, "age")["venue:okx"].value == 0
    late = by_scope(evaluate(stale, ALL_KINDS_CONFIG).results, "age")["venue:okx"]
    assert late.value == pytest.approx(45) and late.status is LimitStatus.WARN


def test_source_event_time_is_the_oldest_input() -> None:
    positions = [position("binance", "BTC/USDT:USDT", 1, 60000, 61000, received=ago(12))]
    quotes = [quote("binance", "BTC/USDT:USDT", 61000, at=ago(3))]
    snap = snapshot(positions, [], quotes, custodians=())
    btc = by_scope(evaluate(snap, ALL_KINDS_CONFIG).results, "btc")[BTC_BINANCE]
    assert btc.source_event_time == ago(12)


def test_non_positive_equity_breaches_leverage_without_a_value() -> None:
    snap = snapshot(
        [position("binance", "BTC/USDT:USDT", 10, 70000, 61000)],  # upnl -90k
        [balance("binance", "USDT", 50000)],
        [quote("binance", "BTC/USDT:USDT", 61000)],
        exchanges=("binance",), custodians=(),
    )
    cfg = config({"id": "lev", "kind": "leverage", "breach": 5},
                 {"id": "conc", "kind": "concentration", "scope": {"asset": "*"}, "breach": 80})
    results = evaluate(snap, cfg).results
    lev = by_scope(results, "lev")["portfolio"]
    assert lev.status is LimitStatus.BREACH and lev.value is None
    assert "not positive" in lev.reason
    assert by_scope(results, "conc")["asset:BTC"].status is LimitStatus.BREACH


def test_daily_loss_and_drawdown_from_stored_equity() -> None:
    snap = desk(start_of_day_equity=2_700_000, peak_equity=3_200_000)
    results = evaluate(snap, ALL_KINDS_CONFIG).results
    loss = by_scope(results, "loss")["portfolio"]
    assert loss.value == pytest.approx(219_000) and loss.status is LimitStatus.BREACH
    dd = by_scope(results, "dd")["portfolio"]
    assert dd.value == pytest.approx((3_200_000 - 2_481_000) / 3_200_000 * 100)
    assert dd.status is LimitStatus.BREACH  # 22.47% >= 20%


def test_fixed_scope_without_rows_still_reports() -> None:
    cfg = config({"id": "sol", "kind": "max_notional",
                  "scope": {"venue": "okx", "instrument": "SOL/USDT:USDT"}, "breach": 1e5})
    sol = by_scope(evaluate(desk(), cfg).results, "sol")["venue:okx|instrument:SOL/USDT:USDT"]
    assert sol.status is LimitStatus.OK and sol.value == 0.0


def test_wildcard_instruments_of_a_failed_account_stay_visible_through_quotes() -> None:
    from dataclasses import replace

    from risk_monitor.domain.model import POSITION_COLUMNS, Collected, SourceKind
    from risk_monitor_tests.unit.domain.builders import frame, source

    snap = desk()
    okx_only = [p for p in desk_positions() if p["venue"] != "binance"]
    failed = source(SourceKind.EXCHANGE, "binance", ok=False)
    sources = tuple(failed if s.kind is SourceKind.EXCHANGE and s.venue == "binance" else s
                    for s in snap.positions.sources)
    snap = replace(snap, positions=Collected(frame(okx_only, POSITION_COLUMNS), sources))
    inst = by_scope(evaluate(snap, ALL_KINDS_CONFIG).results, "inst")
    assert inst[BTC_BINANCE].status is LimitStatus.UNKNOWN  # quoted, account data failed
    assert "binance" in inst[BTC_BINANCE].reason
    assert inst["venue:okx|instrument:BTC/USDT:USDT"].status is LimitStatus.OK


def test_expanded_scopes_carry_their_canonical_key() -> None:
    """Wildcard expansions lay each scope's key out from precomputed parts (a fast path):
    it must be the very key Scope builds, for fixed and wild dimensions mixed in any order."""
    templates = config(
        *ALL_KINDS_CONFIG.model_dump(mode="json")["limits"],
        {"id": "acct-inst", "kind": "max_notional",
         "scope": {"venue": "*", "account": "main", "instrument": "*"}, "breach": 1e7},
        {"id": "acct-asset", "kind": "net_exposure",
         "scope": {"venue": "binance", "account": "*", "asset": "*"}, "breach": 1e7},
        venues=["binance", "okx", "fireblocks"],
    )
    report = evaluate(desk(), templates)
    assert {key for _, key in report.state.inputs} >= {"venue:binance|account:main|instrument:BTC/USDT:USDT"}
    expansions = [value for key, value in report.state.cache.items()
                  if isinstance(key, tuple) and key[0] == "scope_inputs"]
    assert len(expansions) >= 10
    for expansion in expansions:
        for scope in expansion.scopes:
            assert scope.key == scope._key()
            plain = Scope(scope.venue, scope.account, scope.instrument, scope.asset)
            assert scope == plain and hash(scope) == hash(plain)


def test_results_built_fast_are_plain_limit_results() -> None:
    """``limit_result`` skips the frozen ``__init__`` (thousands per evaluation): what it builds
    must be indistinguishable from ``LimitResult(...)``: equal, same hash and text, immutable,
    and the same after a pickle round trip (reports travel between Dagster steps)."""
    args = ("btc", "max_notional", BTC_BINANCE, LimitStatus.WARN, 900_000.0, 800_000.0,
            1_000_000.0, 0.9, NOW, "v1", "near", ago(3), 1.0)
    fast, plain = limit_result(*args), LimitResult(*args)
    assert fast == plain and hash(fast) == hash(plain) and repr(fast) == repr(plain)
    assert dataclasses.astuple(fast) == dataclasses.astuple(plain)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.value = 1.0  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(fast)) == plain
    assert dataclasses.replace(fast, value=1.0) == dataclasses.replace(plain, value=1.0)
