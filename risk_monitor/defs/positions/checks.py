"""Checks of ``exchange_positions``, evaluated inside the asset's step (no extra op, no reload).

``positions_match_schema`` is blocking: rows that break the schema must not reach risk.
``positions_are_complete`` is not: a missing venue is reported (ERROR) and risk still runs for
the others, turning the missing venue's limits UNKNOWN instead of silently skipping them.
"""

from datetime import datetime

import dagster as dg

from risk_monitor.defs.collection_support import completeness_check, schema_check
from risk_monitor.domain.model import Collected
from risk_monitor.domain.schemas import position_rules
from risk_monitor.platform.settings import Settings

ASSET = "exchange_positions"

POSITION_CHECKS = [
    dg.AssetCheckSpec("positions_match_schema", asset=ASSET, blocking=True,
                      description="Every row obeys the positions schema (types, ranges, unique "
                                  "keys, quantity = contracts x size x side, fresh, not future)."),
    dg.AssetCheckSpec("positions_are_complete", asset=ASSET, blocking=False,
                      description="Every configured exchange account answered and validated."),
]


def position_check_results(collected: Collected, settings: Settings, expected: list[str],
                           now: datetime) -> list[dg.AssetCheckResult]:
    md = settings.market_data
    return [
        schema_check("positions_match_schema", ASSET, collected,
                     position_rules(now=now, max_age_s=md.max_age_s,
                                     max_future_skew_s=md.max_future_skew_s)),
        completeness_check("positions_are_complete", ASSET, collected, expected),
    ]
