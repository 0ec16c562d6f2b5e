"""One bad balance among good ones, end to end through the real Fireblocks SDK, the simulator
and the ``custodian_balances`` asset: that asset of that vault is missing (named with field
and value in the status, the metadata and the completeness check); every other balance is
delivered."""

from __future__ import annotations

import pytest

from risk_monitor_tests.integration.collection.conftest import Sims, WriteSettings
from risk_monitor_tests.integration.collection.helpers import (
    checks,
    materialize,
    metadata,
    output,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("total", "available", "shown"), [
    ("NaN", "NaN", "free=nan"),
    ("-5", "-5", "free=-5.0"),
])
def test_one_bad_custodian_balance_costs_that_asset_only(
        sims: Sims, write_settings: WriteSettings, total: str, available: str,
        shown: str) -> None:
    sims.fireblocks.set_vault_balance("1", "ETH", total, available=available)
    result = materialize(write_settings(sims.settings_doc()), "custodian_balances")
    assert result.success
    collected = output(result, "custodian_balances")
    rows = {(r["account"], r["asset"]) for r in collected.frame.to_dict("records")}
    assert rows == {("0", "BTC"), ("0", "USDT_ERC20"), ("2", "BTC")}  # the good ones, all
    (missing,) = collected.missing
    assert missing.key == "custodian:fireblocks:1:ETH"
    assert (missing.account, missing.asset, missing.dataset) == ("1", "ETH", "balances")
    assert missing.error is not None and f"fireblocks:1 ETH: {shown}" in missing.error
    (whole,) = [s for s in collected.sources if s.asset is None]
    assert whole.ok and whole.rows == 3
    meta = metadata(result, "custodian_balances")
    assert shown in meta["sources_missing"]["custodian:fireblocks:1:ETH"]
    check = checks(result, "custodian_balances")["balances_are_complete"]
    assert not check.passed
    assert "custodian:fireblocks:1:ETH" in check.metadata["missing"].value
    assert checks(result, "custodian_balances")["balances_match_schema"].passed


def test_no_custodian_configured_gives_a_passing_completeness_check(
        sims: Sims, write_settings: WriteSettings) -> None:
    result = materialize(write_settings(sims.settings_doc(custodians=[])),
                         "custodian_balances")
    assert result.success
    check = checks(result, "custodian_balances")["balances_are_complete"]
    assert check.passed
    assert check.metadata["missing"].value == {}


def test_a_nan_ticker_is_parsed_out_by_symbol_and_field(sims: Sims) -> None:
    """ccxt's bulk parser fails on one NaN ``lastPrice``; the adapter re-parses the answer it
    received item by item and names each bad ticker's symbol and field."""
    from risk_monitor.adapters.ccxt_exchange import CcxtExchangeAccount
    from risk_monitor.platform.resilience import guard_for
    from risk_monitor.platform.settings import Settings
    from risk_monitor_tests.integration.collection.conftest import SYMBOLS
    from risk_monitor_tests.integration.collection.helpers import add_fault

    settings = Settings.model_validate(sims.settings_doc())
    (venue,) = [v for v in settings.venues if v.id == "binance"]
    account = CcxtExchangeAccount(venue, guard=guard_for(settings, "binance"),
                                  with_credentials=False)
    add_fault(sims.binance, "nan", "/fapi/v1/ticker/24hr", keys=["lastPrice"])
    frame = account.fetch_tickers(SYMBOLS)
    rejected = frame.attrs["rejected_rows"]
    assert sorted(r.instrument for r in rejected) == sorted(SYMBOLS)
    assert {r.field for r in rejected} == {"lastPrice"}
    assert all("binance:main" in r.message and "lastPrice=" in r.message for r in rejected)
    assert len(frame) == 0  # nothing bad was let through
    account.close()
