"""Checks of ``exchange_balances`` and ``custodian_balances``, evaluated inside each asset's step.

Schema checks are blocking (bad rows must not reach risk); completeness checks report missing
sources at ERROR severity without stopping risk, which turns their limits UNKNOWN.
"""

from datetime import datetime

import dagster as dg

from risk_monitor.defs.collection_support import completeness_check, schema_check
from risk_monitor.domain.model import Collected
from risk_monitor.domain.schemas import balance_rules
from risk_monitor.platform.settings import Settings


def _specs(asset: str, what: str) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec("balances_match_schema", asset=asset, blocking=True,
                          description=f"Every {what} balance row obeys the schema (non-negative, "
                                      "total = free + used, unique keys, fresh, not future)."),
        dg.AssetCheckSpec("balances_are_complete", asset=asset, blocking=False,
                          description=f"Every configured {what} answered and validated."),
    ]


EXCHANGE_BALANCE_CHECKS = _specs("exchange_balances", "exchange account")
CUSTODIAN_BALANCE_CHECKS = _specs("custodian_balances", "custodian")


def balance_check_results(asset: str, collected: Collected, settings: Settings,
                          expected: list[str], now: datetime) -> list[dg.AssetCheckResult]:
    md = settings.market_data
    return [
        schema_check("balances_match_schema", asset, collected,
                     balance_rules(now=now, max_age_s=md.max_age_s,
                                    max_future_skew_s=md.max_future_skew_s)),
        completeness_check("balances_are_complete", asset, collected, expected),
    ]
