"""Open positions of every configured exchange account (ccxt), validated."""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from risk_monitor.adapters.collection import collect_positions, position_rules_at
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
ASSET = "exchange_positions"
POSITION_CHECKS = dataset_check_specs(
    "positions", ASSET, "Every row obeys the positions schema (types, ranges, unique keys, "
    "quantity = contracts x size x side, fresh, not future).",
    "Every configured exchange account answered and validated.")


@dg.asset(group_name=GROUP, kinds={"ccxt", "pandas"}, owners=OWNERS,
          freshness_policy=FRESHNESS, check_specs=POSITION_CHECKS,
          code_version=CODE_VERSION, retry_policy=STEP_RETRY)
@surface_errors("positions")
def exchange_positions(context: dg.AssetExecutionContext, settings: SettingsResource,
                       exchange_accounts: ExchangeAccountsResource) -> Iterator[Any]:
    """Open positions (POSITION_COLUMNS) of every exchange account, one bulk call per account.

    A failing account never hides the others and never reads as zero: it has no rows and an
    ``ok=False`` source status with its error code (metadata ``sources_missing``).
    """
    cfg = settings.load()
    collected = collect_positions(exchange_accounts.accounts(cfg), cfg.market_data)
    now = utc_now()
    yield collected_output(context, collected, now=now, age_column="received_at")
    yield from dataset_checks("positions", ASSET, collected,
                              position_rules_at(cfg.market_data)(now),
                              exchange_accounts.expected_sources(cfg))
