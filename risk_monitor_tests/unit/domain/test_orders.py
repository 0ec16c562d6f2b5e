"""Pre-trade check: allow, warn, deny per limit kind, deny on stale or missing data."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from risk_monitor.domain.engine import RiskSnapshot, evaluate
from risk_monitor.domain.limits import LimitConfig
from risk_monitor.domain.model import LimitStatus
from risk_monitor.domain.orders import OrderCheck, OrderRequest, check_order
from risk_monitor_tests.unit.domain.builders import (
    NOW,
    ago,
    balance,
    config,
    desk,
    desk_balances,
    desk_positions,
    desk_quotes,
    position,
    quote,
    snapshot,
)

VENUES = ["binance", "okx", "fireblocks"]
BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"


def cfg(*limits: dict[str, Any]) -> LimitConfig:
    return config(*limits, venues=VENUES)


def check(
    snap: RiskSnapshot, limits: LimitConfig, side: str, qty: float, *, venue: str = "binance",
    instrument: str = BTC, price: float | None = None, position_side: str | None = None,
    now_offset_s: float = 0.0,
) -> OrderCheck:
    report = evaluate(snap, limits)
    order = OrderRequest(venue, "main", instrument, side, qty, price, position_side)
    return check_order(report, limits, order, NOW + timedelta(seconds=now_offset_s))


BTC_NOTIONAL = {"id": "btc", "kind": "max_notional",
                "scope": {"venue": "binance", "instrument": BTC}, "warn": 800000, "breach": 1000000}


def test_small_order_is_allowed_with_projected_results() -> None:
    result = check(desk(), cfg(BTC_NOTIONAL), "buy", 1)
    assert result.allowed and result.reasons == []
    (projected,) = result.projected
    assert projected.value == pytest.approx(671000) and projected.status is LimitStatus.OK
    assert projected.utilisation == pytest.approx(0.671) and projected.as_of == NOW


def test_order_into_warn_is_allowed_with_a_warning() -> None:
    result = check(desk(), cfg(BTC_NOTIONAL), "buy", 4)  # 854k
    assert result.allowed
    assert len(result.reasons) == 1 and result.reasons[0].startswith("WARN btc")


@pytest.mark.parametrize(
    ("limit", "side", "qty", "kwargs"),
    [
        (BTC_NOTIONAL, "buy", 7, {}),  # 1,037,000 >= 1M
        ({"id": "gross", "kind": "gross_exposure", "breach": 1_800_000}, "buy", 1, {}),  # 1,832,000
        ({"id": "net", "kind": "net_exposure", "breach": 900_000}, "buy", 1, {}),  # 938,000
        ({"id": "conc", "kind": "concentration", "scope": {"asset": "*"}, "breach": 50},
         "buy", 1, {}),  # 1,281,000 / 2,481,000 = 51.6%
        ({"id": "lev", "kind": "leverage", "breach": 0.73}, "buy", 1, {}),  # 0.738x
        ({"id": "venue-lev", "kind": "leverage", "scope": {"venue": "*"}, "breach": 1.5},
         "buy", 1, {}),  # binance 816k / 515k = 1.58x
        ({"id": "cp", "kind": "counterparty", "scope": {"venue": "binance"}, "breach": 510_000},
         "buy", 0.1, {}),  # already 515k; an increasing order keeps it breached
        ({"id": "loss", "kind": "daily_loss", "breach": 150_000}, "buy", 1,
         {"price": 100_000}),  # fills 39k above the mark: loss 119k → 158k
        ({"id": "dd", "kind": "drawdown", "breach": 9}, "buy", 1, {"price": 90_000}),
        ({"id": "liq", "kind": "liquidation_distance", "scope": {"venue": "*", "instrument": "*"},
          "warn": 30, "breach": 20}, "buy", 0.1, {}),  # 18.03% <= 20%, order adds to it
    ],
)
def test_each_limit_kind_can_deny(
    limit: dict[str, Any], side: str, qty: float, kwargs: dict[str, Any]
) -> None:
    snap = desk(start_of_day_equity=2_600_000, peak_equity=2_700_000)
    result = check(snap, cfg(limit), side, qty, **kwargs)
    assert not result.allowed, result.reasons
    assert any(r.startswith(f"DENY {limit['id']}") and "BREACH" in r for r in result.reasons)
    assert any(p.status is LimitStatus.BREACH for p in result.projected)


def test_the_same_kinds_allow_a_harmless_order() -> None:
    snap = desk(start_of_day_equity=2_600_000, peak_equity=2_700_000)
    limits = cfg(
        {"id": "gross", "kind": "gross_exposure", "breach": 1_800_000},
        {"id": "net", "kind": "net_exposure", "breach": 900_000},
        {"id": "loss", "kind": "daily_loss", "breach": 150_000},
        {"id": "dd", "kind": "drawdown", "breach": 9},
    )
    result = check(snap, limits, "sell", 1)  # reduces the 10 BTC long at the mark
    assert result.allowed, result.reasons
    assert {p.limit_id: p.status for p in result.projected} == {
        "gross": LimitStatus.OK, "net": LimitStatus.OK, "loss": LimitStatus.OK,
        "dd": LimitStatus.OK}


def test_data_age_breach_denies_an_increasing_order() -> None:
    snap = snapshot(
        [position("binance", BTC, 1, 60000, 61000, received=ago(40))],
        [balance("binance", "USDT", 1e6, received=ago(40))],
        [quote("binance", BTC, 61000, at=ago(2))],
        exchanges=("binance",), custodians=(),
    )
    limits = config({"id": "age", "kind": "data_age", "scope": {"venue": "*"}, "breach": 30})
    result = check(snap, limits, "buy", 1)
    assert not result.allowed and "DENY age" in result.reasons[0]


def test_reducing_a_breached_position_is_allowed() -> None:
    big = snapshot(
        [position("binance", BTC, 18, 60000, 61000)], [balance("binance", "USDT", 2e6)],
        [quote("binance", BTC, 61000)], exchanges=("binance",), custodians=(),
    )
    limits = config(BTC_NOTIONAL, {"id": "liq", "kind": "liquidation_distance", "breach": 50})
    still_breached = check(big, limits, "sell", 1)  # 1,037,000: still BREACH but smaller
    assert still_breached.allowed
    assert any("allowed because the order reduces it" in r for r in still_breached.reasons)
    assert check(big, limits, "sell", 10).reasons == []  # 488k: OK
    assert not check(big, limits, "buy", 0.1).allowed
    flip = check(big, limits, "sell", 40)  # flips to -22 BTC: not a reduction
    assert not flip.allowed


def test_stale_data_at_order_time_denies() -> None:
    result = check(desk(), cfg(BTC_NOTIONAL), "buy", 0.01, now_offset_s=120)
    assert not result.allowed
    assert "UNKNOWN" in result.reasons[0] and "stale at order time" in result.reasons[0]


def test_stale_snapshot_denies() -> None:
    snap = snapshot(
        [position("binance", BTC, 1, 60000, 61000, received=ago(120))],
        [balance("binance", "USDT", 1e6, received=ago(120))],
        [quote("binance", BTC, 61000, at=ago(120))],
        exchanges=("binance",), custodians=(),
    )
    result = check(snap, config(BTC_NOTIONAL), "buy", 0.01)
    assert not result.allowed and "UNKNOWN" in result.reasons[0]


def test_failed_venue_denies_orders_touching_portfolio_limits_only() -> None:
    snap = desk(failed=["binance"])
    portfolio = cfg({"id": "gross", "kind": "gross_exposure", "breach": 1e8})
    denied = check(snap, portfolio, "buy", 1, venue="okx")
    assert not denied.allowed and "binance" in denied.reasons[0]
    okx_only = cfg({"id": "okx-btc", "kind": "max_notional",
                    "scope": {"venue": "okx", "instrument": BTC}, "breach": 1e6})
    assert check(snap, okx_only, "buy", 1, venue="okx").allowed
    on_failed = check(snap, okx_only, "buy", 1, venue="binance")
    assert not on_failed.allowed and "binance" in " ".join(on_failed.reasons)


def test_hedge_mode_needs_a_position_side() -> None:
    limits = cfg({"id": "eth", "kind": "max_notional", "scope": {"venue": "okx", "instrument": ETH},
                  "breach": 1e6})
    ambiguous = check(desk(), limits, "buy", 1, venue="okx", instrument=ETH)
    assert not ambiguous.allowed and "position_side" in ambiguous.reasons[0]
    long_leg = check(desk(), limits, "buy", 10, venue="okx", instrument=ETH, position_side="long")
    assert long_leg.allowed
    assert long_leg.projected[0].value == pytest.approx(116000 + 29000)  # gross adds a leg
    close_short = check(desk(), limits, "buy", 20, venue="okx", instrument=ETH,
                        position_side="short")
    assert close_short.projected[0].value == pytest.approx(58000)
    too_much = check(desk(), limits, "sell", 30, venue="okx", instrument=ETH, position_side="long")
    assert not too_much.allowed and "exceeds the long leg" in too_much.reasons[0]


def test_one_way_netting() -> None:
    limits = cfg({"id": "okx-btc", "kind": "max_notional",
                  "scope": {"venue": "okx", "instrument": BTC}, "breach": 1e6})
    # okx holds -4 BTC: buying 6 nets to +2 BTC = 122k gross
    result = check(desk(), limits, "buy", 6, venue="okx")
    assert result.projected[0].value == pytest.approx(122000)


@pytest.mark.parametrize(
    ("order", "words"),
    [
        (OrderRequest("binance", "main", BTC, "buy", 0), "quantity"),
        (OrderRequest("binance", "main", BTC, "hold", 1), "side"),
        (OrderRequest("binance", "main", BTC, "buy", 1, price=-5), "price"),
        (OrderRequest("binance", "main", BTC, "buy", 1, position_side="both"), "position_side"),
        (OrderRequest("kraken", "main", BTC, "buy", 1), "no data source"),
        (OrderRequest("binance", "main", "SOL/USDT:USDT", "buy", 1), "no fresh price"),
    ],
)
def test_invalid_or_unjudgeable_orders_are_denied(order: OrderRequest, words: str) -> None:
    limits = cfg(BTC_NOTIONAL)
    result = check_order(evaluate(desk(), limits), limits, order, NOW)
    assert not result.allowed
    assert words in " ".join(result.reasons)


def test_new_instrument_with_a_fresh_quote_is_judged() -> None:
    snap = snapshot(desk_positions(), desk_balances(),
                    [*desk_quotes(), quote("binance", "SOL/USDT:USDT", 150)],
                    vaults={"fireblocks": ("vault-1", "vault-2")})
    limits = cfg({"id": "inst", "kind": "max_notional", "scope": {"venue": "*", "instrument": "*"},
                  "breach": 100_000})
    ok = check(snap, limits, "buy", 100, instrument="SOL/USDT:USDT")
    assert ok.allowed and ok.projected[0].value == pytest.approx(15000)
    assert ok.projected[0].scope == "venue:binance|instrument:SOL/USDT:USDT"
    assert not check(snap, limits, "buy", 1000, instrument="SOL/USDT:USDT").allowed


def test_accepts_a_snapshot_or_a_report_of_another_config() -> None:
    limits = cfg(BTC_NOTIONAL)
    order = OrderRequest("binance", "main", BTC, "buy", 7)
    assert not check_order(desk(), limits, order, NOW).allowed  # bare snapshot
    report = evaluate(desk(), cfg())  # evaluated without limits
    assert not check_order(report, limits, order, NOW).allowed  # re-prepared for `limits`
