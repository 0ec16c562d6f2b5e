"""Per-source freshness budgets: each outlasts its poll interval, or settings refuse to load."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from risk_monitor.application import source_budgets
from risk_monitor.domain.coverage import source_problems
from risk_monitor.domain.model import SourceKind, SourceStatus
from risk_monitor.domain.valuation import Freshness
from risk_monitor.platform.errors import ConfigError
from risk_monitor.platform.settings import load_settings


def test_defaults_keep_every_budget_above_its_poll_and_custody_below_the_data_age_warning(
) -> None:
    settings = load_settings(None)
    md, svc = settings.market_data, settings.service
    assert md.max_age_s > md.poll_interval_s
    assert md.exchange_max_age_s > svc.positions_poll_s
    assert md.custody_max_age_s > svc.custody_poll_s
    assert svc.custody_poll_s < 30  # the packaged data_age limit warns at 30 s


@pytest.mark.parametrize(("overrides", "key"), [
    ({"service": {"custody_poll_s": 200.0}}, "market_data.custody_max_age_s"),
    ({"service": {"positions_poll_s": 60.0}}, "market_data.exchange_max_age_s"),
    ({"market_data": {"poll_interval_s": 90.0}}, "market_data.max_age_s"),
])
def test_a_budget_not_above_its_poll_is_refused_naming_the_key(overrides: dict,
                                                                key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_settings(None, **overrides)


def test_custody_is_judged_by_its_own_budget() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    budgets = source_budgets(load_settings(None))
    at = now - timedelta(seconds=90)  # too old for quotes (60 s), fine for custody (120 s)
    custody = SourceStatus(SourceKind.CUSTODIAN, "fireblocks", "*", True, at)
    market = SourceStatus(SourceKind.MARKET, "binance", "*", True, at)
    problems = source_problems([custody, market], Freshness(now, 60.0, 5.0), budgets=budgets)
    assert [p.venue for p in problems] == ["binance"]
