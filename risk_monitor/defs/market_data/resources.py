"""Where the market_prices asset gets its quotes: the Redis cache or REST snapshots."""

import dagster as dg

from risk_monitor.adapters.market_data import resolve_source, symbols_by_venue
from risk_monitor.defs.resources import RuntimeResource
from risk_monitor.platform.settings import Settings
from risk_monitor.ports import MarketDataSnapshot


class MarketDataResource(RuntimeResource):
    """Chooses the quote source by configuration only (``settings.market_data.source``)."""

    def source_name(self, settings: Settings) -> str:
        return resolve_source(settings)

    def snapshot(self, settings: Settings) -> MarketDataSnapshot:
        return self.runtime(settings).market_data()

    def expected_sources(self, settings: Settings) -> list[str]:
        return [f"market:{venue}:*" for venue in symbols_by_venue(settings)]


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"market_data": MarketDataResource()})
