"""Checks of ``market_prices``, evaluated inside the asset's step.

Blocking (bad prices must not reach risk): ``prices_match_schema``, ``prices_are_fresh`` and
``prices_are_sane`` (no absurd jump against the quote's own fields or other venues). Not
blocking: ``prices_are_complete`` (a missing venue or instrument makes its exposures UNKNOWN).
"""

from datetime import datetime, timedelta

import dagster as dg
import pandas as pd

from risk_monitor.defs.collection_support import completeness_check, schema_check
from risk_monitor.domain.model import Collected
from risk_monitor.domain.schemas import price_outliers, price_schema
from risk_monitor.platform.settings import Settings

ASSET = "market_prices"
#: a quote further than this from its references is absurd (crypto venues agree within a few %)
MAX_DEVIATION = 0.25

PRICE_CHECKS = [
    dg.AssetCheckSpec("prices_match_schema", asset=ASSET, blocking=True,
                      description="Every quote obeys the price schema (positive, bid <= ask, "
                                  "unique per venue and instrument)."),
    dg.AssetCheckSpec("prices_are_fresh", asset=ASSET, blocking=True,
                      description="Every quote is younger than market_data.max_age_s and not "
                                  "from the future."),
    dg.AssetCheckSpec("prices_are_sane", asset=ASSET, blocking=True,
                      description=f"No quote deviates more than {MAX_DEVIATION:.0%} from its "
                                  "own mark / bid / ask or from other venues."),
    dg.AssetCheckSpec("prices_are_complete", asset=ASSET, blocking=False,
                      description="Every configured venue delivered a fresh quote for every "
                                  "configured instrument."),
]


def _freshness(collected: Collected, settings: Settings, now: datetime) -> dg.AssetCheckResult:
    md = settings.market_data
    frame = collected.frame
    current = pd.Timestamp(now)
    stale = frame["timestamp"] < current - timedelta(seconds=md.max_age_s)
    future = frame["timestamp"] > current + timedelta(seconds=md.max_future_skew_s)
    ages = (current - frame["timestamp"]).dt.total_seconds() if len(frame) else pd.Series([])
    return dg.AssetCheckResult(
        check_name="prices_are_fresh", asset_key=ASSET, passed=not bool(stale.any() or
                                                                        future.any()),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"max_age_s": float(ages.max()) if len(ages) else 0.0,
                  "budget_s": md.max_age_s,
                  "stale": dg.MetadataValue.json(sorted(
                      frame.loc[stale, "venue"] + ":" + frame.loc[stale, "instrument"])),
                  "future": dg.MetadataValue.json(sorted(
                      frame.loc[future, "venue"] + ":" + frame.loc[future, "instrument"]))})


def _sanity(collected: Collected) -> dg.AssetCheckResult:
    outliers = price_outliers(collected.frame, MAX_DEVIATION)
    found = {f"{r.venue}:{r.instrument}": str(r.reason) for r in outliers.itertuples()}
    return dg.AssetCheckResult(
        check_name="prices_are_sane", asset_key=ASSET, passed=not found,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"outliers": dg.MetadataValue.json(found), "max_deviation": MAX_DEVIATION})


def price_check_results(collected: Collected, settings: Settings, expected: list[str],
                        now: datetime) -> list[dg.AssetCheckResult]:
    return [
        schema_check("prices_match_schema", ASSET, collected, price_schema()),
        _freshness(collected, settings, now),
        _sanity(collected),
        completeness_check("prices_are_complete", ASSET, collected, expected),
    ]
