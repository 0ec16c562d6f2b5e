"""Checks of ``exchange_balances`` and ``custodian_balances``, evaluated inside each asset's step.

Schema checks are blocking (bad rows must not reach risk); completeness checks report missing
sources at ERROR severity without stopping risk, which turns their limits UNKNOWN.
"""

import dagster as dg


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
