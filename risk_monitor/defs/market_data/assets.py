"""Latest quotes per venue and instrument, from the Redis cache or REST snapshots."""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from risk_monitor.defs.collection_support import (
    FRESHNESS,
    GROUP,
    collected_output,
)
from risk_monitor.defs.failures import surface_errors
from risk_monitor.defs.market_data.checks import PRICE_CHECKS, price_check_results
from risk_monitor.defs.market_data.resources import MarketDataResource
from risk_monitor.defs.metadata import OWNERS, asset_code_version, utc_now
from risk_monitor.defs.resources import SettingsResource
from risk_monitor.defs.retries import STEP_RETRY

CODE_VERSION = asset_code_version(__name__)

#: read quotes last among the collection steps of a run (the in-process executor runs ready
#: steps by priority): a quote that arrives while the run collects positions and balances still
#: makes it into this run, and the prices are the freshest inputs of the evaluation
#: (docs/benchmarks.md "Sensor path").
READ_LAST = {"dagster/priority": "-1"}


@dg.asset(group_name=GROUP, kinds={"ccxt", "redis", "pandas"}, owners=OWNERS,
          freshness_policy=FRESHNESS, check_specs=PRICE_CHECKS, op_tags=READ_LAST,
          code_version=CODE_VERSION, retry_policy=STEP_RETRY)
@surface_errors("market_data")
def market_prices(context: dg.AssetExecutionContext, settings: SettingsResource,
                  market_data: MarketDataResource) -> Iterator[Any]:
    """Latest quote (PRICE_COLUMNS) per configured venue and instrument.

    Source by configuration only: the Redis cache the stream keeps (when ``redis_url`` is set)
    or one bulk REST ``fetch_tickers`` per venue. Stale, future or missing quotes are dropped
    and named in the venue's ``ok=False`` status; every row kept is valid and fresh.
    """
    cfg = settings.load()
    collected = market_data.snapshot(cfg).latest_prices()
    now = utc_now()
    yield collected_output(context, collected, now=now, age_column="timestamp",
                           source=dg.MetadataValue.text(market_data.source_name(cfg)))
    yield from price_check_results(collected, cfg, market_data.expected_sources(cfg), now)
