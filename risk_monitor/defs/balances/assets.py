"""Wallet balances of exchange accounts (ccxt) and custodian vaults (Fireblocks), validated."""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from risk_monitor.adapters.collection import (
    balance_rules_at,
    collect_custodian_balances,
    collect_exchange_balances,
)
from risk_monitor.defs.balances.resources import CustodiansResource
from risk_monitor.defs.collection_support import (
    FRESHNESS,
    GROUP,
    collected_output,
    dataset_check_specs,
    dataset_checks,
)
from risk_monitor.defs.failures import surface_errors
from risk_monitor.defs.metadata import OWNERS, asset_code_version, utc_now
from risk_monitor.defs.positions.resources import ExchangeAccountsResource
from risk_monitor.defs.resources import SettingsResource
from risk_monitor.defs.retries import STEP_RETRY

CODE_VERSION = asset_code_version(__name__)


def _checks(asset: str, sources: str) -> list[dg.AssetCheckSpec]:
    return dataset_check_specs(
        "balances", asset, f"Every {sources} balance row obeys the schema (non-negative, "
        "total = free + used, unique keys, fresh, not future).",
        f"Every configured {sources} answered and validated.")


EXCHANGE_BALANCE_CHECKS = _checks("exchange_balances", "exchange account")
CUSTODIAN_BALANCE_CHECKS = _checks("custodian_balances", "custodian")


@dg.asset(group_name=GROUP, kinds={"ccxt", "pandas"}, owners=OWNERS,
          freshness_policy=FRESHNESS, check_specs=EXCHANGE_BALANCE_CHECKS,
          code_version=CODE_VERSION, retry_policy=STEP_RETRY)
@surface_errors("balances")
def exchange_balances(context: dg.AssetExecutionContext, settings: SettingsResource,
                      exchange_accounts: ExchangeAccountsResource) -> Iterator[Any]:
    """Exchange wallet balances (BALANCE_COLUMNS, source_type 'exchange').

    ``total`` is the wallet balance excluding unrealised P&L, ``used`` the margin locked,
    ``free = total - used`` (docs/data-collection.md). A failing account is missing, not zero.
    """
    cfg = settings.load()
    collected = collect_exchange_balances(exchange_accounts.accounts(cfg), cfg.market_data)
    now = utc_now()
    yield collected_output(context, collected, now=now, age_column="received_at")
    md = cfg.market_data
    yield from dataset_checks("balances", "exchange_balances", collected,
                              balance_rules_at(md, md.exchange_max_age_s)(now),
                              exchange_accounts.expected_sources(cfg))


@dg.asset(group_name=GROUP, kinds={"fireblocks", "pandas"}, owners=OWNERS,
          freshness_policy=FRESHNESS, check_specs=CUSTODIAN_BALANCE_CHECKS,
          code_version=CODE_VERSION, retry_policy=STEP_RETRY)
@surface_errors("balances")
def custodian_balances(context: dg.AssetExecutionContext, settings: SettingsResource,
                       custodians: CustodiansResource) -> Iterator[Any]:
    """Custodian vault balances (BALANCE_COLUMNS, source_type 'custodian', account = vault id).

    ``free`` = available, ``used`` = total - available; amounts parsed as Decimal, stored as
    float64. A failing custodian is missing (account ``*``), never zero.
    """
    cfg = settings.load()
    collected = collect_custodian_balances(custodians.custodians(cfg), cfg.market_data)
    now = utc_now()
    yield collected_output(context, collected, now=now, age_column="received_at")
    md = cfg.market_data
    yield from dataset_checks("balances", "custodian_balances", collected,
                              balance_rules_at(md, md.custody_max_age_s)(now),
                              custodians.expected_sources(cfg))
