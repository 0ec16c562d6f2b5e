"""Trading state: automatic rules, the strictest of manual/automatic x global/venue, and the
pre-trade gate (HALTED denies everything, REDUCING only what does not reduce a position)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from risk_monitor.domain.engine import evaluate
from risk_monitor.domain.model import LimitResult, LimitStatus, SourceKind, SourceStatus
from risk_monitor.domain.orders import OrderCheck, OrderRequest, check_order
from risk_monitor.domain.trading_state import (
    GLOBAL,
    ManualState,
    ReasonCode,
    TradingState,
    TradingVerdict,
    automatic_states,
    effective_states,
    validate_scope,
    verdict_for,
)
from risk_monitor.platform.settings import TradingSettings
from risk_monitor.service.trading import rules_of
from risk_monitor_tests.unit.domain.builders import NOW, config, desk, result

BTC = "BTC/USDT:USDT"
DEFAULT_RULES = rules_of(TradingSettings())  # the settings' defaults
LIMITS = config({"id": "btc", "kind": "max_notional", "scope": {"venue": "binance",
                                                                  "instrument": BTC},
                 "warn": 800000, "breach": 1000000}, venues=["binance", "okx", "fireblocks"])


def loss(status: str, scope: str = "portfolio") -> LimitResult:
    made: LimitResult = replace(result(status, NOW, scope=scope), limit_id="daily",
                                limit_kind="daily_loss")
    return made


def test_daily_loss_breach_puts_the_desk_in_reducing() -> None:
    auto = automatic_states([loss("BREACH")], [], DEFAULT_RULES)
    assert auto[GLOBAL].state is TradingState.REDUCING
    assert "daily BREACH on portfolio" in auto[GLOBAL].cause
    assert automatic_states([loss("WARN")], [], DEFAULT_RULES) == {}


def test_unknown_halts_only_the_blind_venue_not_the_desk() -> None:
    blind = result("UNKNOWN", NOW, scope="venue:okx|instrument:BTC/USDT:USDT")
    portfolio_blind = result("UNKNOWN", NOW, scope="portfolio")
    auto = automatic_states([blind, portfolio_blind], [], DEFAULT_RULES)
    assert set(auto) == {"venue:okx"} and auto["venue:okx"].state is TradingState.HALTED


def test_a_failed_exchange_source_halts_its_venue() -> None:
    down = SourceStatus(SourceKind.EXCHANGE, "binance", "main", ok=False, as_of=NOW,
                        error_code="RM201")
    custody = SourceStatus(SourceKind.CUSTODIAN, "fireblocks", "v", ok=False, as_of=NOW)
    auto = automatic_states([], [down, custody], DEFAULT_RULES)
    assert set(auto) == {"venue:binance"} and "RM201" in auto["venue:binance"].cause
    assert automatic_states([], [down], DEFAULT_RULES, halt_on_source_failure=False) == {}


def test_the_strictest_state_is_in_force_and_resume_cannot_hide_a_breach() -> None:
    manual = {"venue:okx": ManualState(TradingState.HALTED, "ops", "exchange incident")}
    auto = automatic_states([loss("BREACH")], [], DEFAULT_RULES)
    assert verdict_for("okx", manual, auto).state is TradingState.HALTED
    binance = verdict_for("binance", manual, auto)
    assert (binance.state, binance.scope, binance.origin) == (
        TradingState.REDUCING, GLOBAL, "automatic")
    # an operator's ACTIVE is no row at all: the automatic REDUCING still holds
    assert verdict_for("binance", {}, auto).state is TradingState.REDUCING
    states = effective_states(manual, auto, ["binance"])
    assert {k: v.state for k, v in states.items()} == {
        GLOBAL: TradingState.REDUCING, "venue:binance": TradingState.REDUCING,
        "venue:okx": TradingState.HALTED}


@pytest.mark.parametrize("scope", ["venue:", "desk", "venue:a b", ""])
def test_bad_scopes_are_refused(scope: str) -> None:
    with pytest.raises(ValueError, match="trading-state scope"):
        validate_scope(scope)


def _check(side: str, qty: float, state: TradingState, venue: str = "binance") -> OrderCheck:
    report = evaluate(desk(), LIMITS)
    verdict = TradingVerdict(state, GLOBAL, "manual", "by ops")
    return check_order(report, LIMITS, OrderRequest(venue, "main", BTC, side, qty), NOW, verdict)


def test_halted_denies_even_a_reducing_order_with_its_code() -> None:
    check = _check("sell", 1, TradingState.HALTED)  # binance holds +10 BTC: a sell reduces
    assert not check.allowed
    assert check.codes == (ReasonCode.TRADING_HALTED.value,)
    assert check.trading_state is TradingState.HALTED
    assert check.reasons[0].startswith("DENY trading HALTED on global")


def test_reducing_passes_reductions_and_denies_increases_and_flips() -> None:
    reduce = _check("sell", 4, TradingState.REDUCING)
    assert reduce.allowed and reduce.reducing
    assert any(r.startswith("INFO trading REDUCING") for r in reduce.reasons)
    increase = _check("buy", 0.01, TradingState.REDUCING)
    assert not increase.allowed
    assert increase.codes == (ReasonCode.TRADING_REDUCING.value,)
    flip = _check("sell", 15, TradingState.REDUCING)  # +10 -> -5: not a reduction
    assert not flip.allowed
    new_position = _check("buy", 0.01, TradingState.REDUCING, venue="okx")  # okx is short 4
    assert new_position.allowed


def test_active_keeps_the_limit_codes() -> None:
    denied = _check("buy", 7, TradingState.ACTIVE)  # 1,037,000 >= 1M
    assert not denied.allowed
    assert denied.codes == (ReasonCode.LIMIT_BREACH.value,)
    warned = _check("buy", 4, TradingState.ACTIVE)
    assert warned.allowed and warned.codes == (ReasonCode.LIMIT_WARN.value,)
    assert LimitStatus.WARN  # the statuses the codes name
