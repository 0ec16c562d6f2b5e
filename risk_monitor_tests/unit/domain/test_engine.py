"""The engine entry point, the results frame and scope keys."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from risk_monitor.domain.compliance import ComplianceStatus
from risk_monitor.domain.engine import evaluate, results_frame
from risk_monitor.domain.equity import EQUITY_COLUMNS
from risk_monitor.domain.limits import load_limit_config
from risk_monitor.domain.model import LimitStatus
from risk_monitor.domain.pnl import POSITION_PNL_COLUMNS
from risk_monitor.domain.scopes import PORTFOLIO_KEY, Scope, parse_scope_key, scope_key
from risk_monitor_tests.unit.domain.builders import NOW, desk, position, snapshot

DEFAULT = load_limit_config(
    yaml.safe_load(
        (Path(__file__).resolve().parents[3] / "risk_monitor" / "config" / "limits.yaml").read_text()
    )
)


def test_calm_desk_is_compliant_with_the_default_limits() -> None:
    report = evaluate(desk(start_of_day_equity=2_481_000, peak_equity=2_481_000), DEFAULT)
    bad = [(r.limit_id, r.scope, r.status.value, r.reason) for r in report.results
           if r.status is not LimitStatus.OK]
    assert bad == []
    assert report.summary.compliance.status is ComplianceStatus.COMPLIANT
    assert tuple(report.position_pnl.columns) == POSITION_PNL_COLUMNS
    assert tuple(report.equity.columns) == EQUITY_COLUMNS
    assert report.config_version == DEFAULT.version


def test_a_blind_venue_makes_the_summary_unknown_and_is_named() -> None:
    report = evaluate(desk(failed=["okx"]), DEFAULT)
    assert report.summary.compliance.status is ComplianceStatus.UNKNOWN
    assert math.isnan(report.summary.equity_usd)
    assert any("okx" in r.reason for r in report.results if r.status is LimitStatus.UNKNOWN)


def test_results_frame_puts_the_worst_first() -> None:
    report = evaluate(desk(failed=["fireblocks"], start_of_day_equity=3_000_000), DEFAULT)
    frame = results_frame(report.results)
    ranks = [{"BREACH": 3, "UNKNOWN": 2, "WARN": 1, "OK": 0}[s] for s in frame["status"]]
    assert ranks == sorted(ranks, reverse=True)


def test_empty_snapshot_is_unknown_not_compliant() -> None:
    report = evaluate(snapshot(exchanges=(), custodians=()), DEFAULT)
    assert report.summary.compliance.status is ComplianceStatus.UNKNOWN
    assert not report.portfolio.known


def test_naive_now_is_refused() -> None:
    snap = snapshot([position("binance", "BTC/USDT:USDT", 1, 1, 1)], now=NOW.replace(tzinfo=None))
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate(snap, DEFAULT)


_VALUE = st.text(st.sampled_from("abcXYZ019/:-_.*"), min_size=1, max_size=12)


@given(
    venue=st.none() | _VALUE, account=st.none() | _VALUE,
    instrument=st.none() | _VALUE, asset=st.none() | _VALUE,
)
def test_scope_keys_round_trip(
    venue: str | None, account: str | None, instrument: str | None, asset: str | None
) -> None:
    scope = Scope(venue, account, instrument, asset)
    assert parse_scope_key(scope.key) == scope
    assert scope_key({"asset": asset, "venue": venue, "instrument": instrument,
                      "account": account}) == scope.key


def test_scope_key_examples() -> None:
    assert Scope().key == PORTFOLIO_KEY
    assert Scope(venue="binance", instrument="BTC/USDT:USDT").key == (
        "venue:binance|instrument:BTC/USDT:USDT")
    with pytest.raises(ValueError):
        parse_scope_key("exchange:binance")


def test_prepared_inputs_survive_a_pickle_round_trip() -> None:
    """Dagster's IO manager pickles the prepared inputs between steps (portfolio_pnl →
    exposures, limit_status): every part, lazily summed columns included, must pickle."""
    import pickle

    from risk_monitor.domain.engine import prepare
    from risk_monitor.domain.limits import evaluate_limits

    state = prepare(desk(start_of_day_equity=3_000_000), DEFAULT)
    back = pickle.loads(pickle.dumps(state))
    assert [(r.limit_id, r.scope, r.status, r.value) for r in evaluate_limits(back, DEFAULT)] \
        == [(r.limit_id, r.scope, r.status, r.value) for r in evaluate_limits(state, DEFAULT)]
