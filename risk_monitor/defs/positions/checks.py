"""Checks of ``exchange_positions``, evaluated inside the asset's step (no extra op, no reload).

``positions_match_schema`` is blocking: rows that break the schema must not reach risk.
``positions_are_complete`` is not: a missing venue is reported (ERROR) and risk still runs for
the others, turning the missing venue's limits UNKNOWN instead of silently skipping them.
"""

import dagster as dg

ASSET = "exchange_positions"

POSITION_CHECKS = [
    dg.AssetCheckSpec("positions_match_schema", asset=ASSET, blocking=True,
                      description="Every row obeys the positions schema (types, ranges, unique "
                                  "keys, quantity = contracts x size x side, fresh, not future)."),
    dg.AssetCheckSpec("positions_are_complete", asset=ASSET, blocking=False,
                      description="Every configured exchange account answered and validated."),
]
