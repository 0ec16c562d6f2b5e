"""What the per-tick shortcuts must not change: reason texts and the single-venue outlier rule."""

from __future__ import annotations

from risk_monitor.domain.limits import Measured, load_limit_config, result_of
from risk_monitor.domain.model import LimitStatus
from risk_monitor.domain.quotes import quote_outlier
from risk_monitor.domain.scopes import Scope
from risk_monitor.domain.valuation import NAT
from risk_monitor_tests.unit.domain.builders import NOW

CONFIG = load_limit_config({"venues": ["binance"], "limits": [
    {"id": "notional", "kind": "max_notional", "scope": {"venue": "binance", "instrument": "*"},
     "warn": 800_000.0, "breach": 1_000_000.0},
    {"id": "liq", "kind": "liquidation_distance", "scope": {"venue": "binance"},
     "warn": 20.0, "breach": 10.0}]})
NOTIONAL, LIQ = CONFIG.limits
BTC = Scope(venue="binance", instrument="BTC/USDT:USDT")


def _reason(definition: object, scope: Scope, value: float, detail: str = "") -> tuple[str, str]:
    result = result_of(definition, scope, Measured(value, detail=detail),  # type: ignore[arg-type]
                       as_of=NOW, config_version="v", source_ns=NAT)
    return result.status.value, result.reason


def test_reason_texts_are_spelled_out_per_status_value_and_scope_on_every_call() -> None:
    """The text around a reason's value is memoised per (limit, scope, status, level): each
    call still reads its own value, status and level."""
    for _ in range(2):  # the second round reads the memo
        assert _reason(NOTIONAL, BTC, 900_000.0) == (
            "WARN", "max_notional on venue:binance|instrument:BTC/USDT:USDT: 900,000 USD >= "
            "warn level 800,000 USD")
        assert _reason(NOTIONAL, BTC, 1_234_567.0, "net 5 USD") == (
            "BREACH", "max_notional on venue:binance|instrument:BTC/USDT:USDT: 1,234,567 USD >= "
            "breach level 1,000,000 USD (net 5 USD)")
        assert _reason(NOTIONAL, Scope(venue="binance", instrument="ETH/USDT:USDT"),
                       1_000_000.0)[1].startswith("max_notional on venue:binance|instrument:ETH")
        assert _reason(LIQ, Scope(venue="binance"), 15.0) == (
            "WARN", "liquidation_distance on venue:binance: 15.00% <= warn level 20.00%")
        assert _reason(LIQ, Scope(venue="binance"), 5.0) == (
            "BREACH", "liquidation_distance on venue:binance: 5.00% <= breach level 10.00%")
        assert _reason(NOTIONAL, BTC, 10.0) == ("OK", "")
    assert LimitStatus.OK.value == "OK"


def test_a_quote_without_other_venues_is_judged_on_its_own_fields_only() -> None:
    assert quote_outlier(100.0, None, None, None, (), "binance", 0.25) == ""
    assert quote_outlier(100.0, 200.0, 99.0, 300.0, (), "binance", 0.25) == (
        "mark far from last; ask far from last")
    # with another venue, the pair rule applies as before
    assert quote_outlier(100.0, None, None, None, [("okx", 200.0)], "binance", 0.25) == (
        "two venues disagree")
