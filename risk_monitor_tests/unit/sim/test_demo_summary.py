"""The demo's risk summary tables (``risk_sim.demo.summary_tables``)."""

from __future__ import annotations

import importlib

from risk_monitor.domain.engine import evaluate
from risk_monitor_tests.unit.domain.builders import desk
from risk_monitor_tests.unit.domain.test_engine import DEFAULT
from risk_sim.demo import WARM_MODULES, summary_tables


def test_summary_tables() -> None:
    report = evaluate(desk(start_of_day_equity=3_000_000), DEFAULT)  # daily loss 519k: BREACH
    tables = summary_tables(report, top=5)
    assert set(tables) == {"headline", "top_exposures", "venues", "limit_utilisation"}
    limits = tables["limit_utilisation"]
    assert limits.iloc[0]["limit_id"] == "daily_loss" and limits.iloc[0]["status"] == "BREACH"
    assert len(limits) == 5
    assert list(tables["top_exposures"]["asset"])[:2] == ["BTC", "ETH"]
    headline = dict(zip(tables["headline"]["measure"], tables["headline"]["value"], strict=True))
    assert headline["compliance"] == "BREACH" and headline["daily_pnl_usd"] == "-519,000"


def test_every_warm_up_entry_names_a_module_and_function_that_exist() -> None:
    """The demo's warm-up thread imports ``module:function`` by name, so a rename is caught
    only here (a missing function killed the thread before it warmed the rest)."""
    for name, function in (e.split(":") for e in WARM_MODULES if ":" in e):
        assert callable(getattr(importlib.import_module(name), function, None)), name
