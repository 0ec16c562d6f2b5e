"""Checks of ``market_prices``, evaluated inside the asset's step.

Blocking: ``prices_match_schema`` and ``prices_are_fresh`` (nothing outside the time budget
reached the frame). Not blocking: ``prices_are_sane`` (absurd quotes were refused by the
domain's admission rule, ``domain/quotes.py``, the same gate the hot path applies: their
limits are UNKNOWN on both paths, so the run goes on and records that) and
``prices_are_complete`` (a missing venue or instrument makes its exposures UNKNOWN).
"""

from datetime import datetime

import dagster as dg
import pandas as pd

from risk_monitor.adapters.market_data import quote_policy
from risk_monitor.defs.collection_support import dataset_check_specs, dataset_checks
from risk_monitor.domain.model import Collected
from risk_monitor.domain.quotes import stale_mask
from risk_monitor.domain.schemas import price_rules
from risk_monitor.platform.settings import Settings

ASSET = "market_prices"
PRICE_CHECKS = [
    *dataset_check_specs(
        "prices", ASSET, "Every quote obeys the price schema (positive, bid <= ask, unique per "
        "venue and instrument).", "Every configured venue delivered a fresh quote for every "
        "configured instrument."),
    dg.AssetCheckSpec("prices_are_fresh", asset=ASSET, blocking=True,
                      description="Every quote is younger than market_data.max_age_s and not "
                                  "from the future."),
    dg.AssetCheckSpec("prices_are_sane", asset=ASSET, blocking=False,
                      description="No quote was refused for deviating more than "
                                  "market_data.max_deviation from its own mark / bid / ask or "
                                  "from other venues."),
]


def _freshness(collected: Collected, settings: Settings, now: datetime) -> dg.AssetCheckResult:
    md = settings.market_data
    frame = collected.frame
    stale = stale_mask(frame, now, quote_policy(md))
    ages = (pd.Timestamp(now) - frame["timestamp"]).dt.total_seconds() if len(frame) else None
    return dg.AssetCheckResult(
        check_name="prices_are_fresh", asset_key=ASSET, passed=not bool(stale.any()),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"max_age_s": float(ages.max()) if ages is not None else 0.0,
                  "budget_s": md.max_age_s,
                  "stale": dg.MetadataValue.json(sorted(
                      frame.loc[stale, "venue"] + ":" + frame.loc[stale, "instrument"]))})


def _sanity(collected: Collected, settings: Settings) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name="prices_are_sane", asset_key=ASSET, passed=not collected.rejected,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"outliers": dg.MetadataValue.json(dict(collected.rejected)),
                  "max_deviation": settings.market_data.max_deviation})


def price_check_results(collected: Collected, settings: Settings, expected: list[str],
                        now: datetime) -> list[dg.AssetCheckResult]:
    return [*dataset_checks("prices", ASSET, collected, price_rules(), expected),
            _freshness(collected, settings, now), _sanity(collected, settings)]
