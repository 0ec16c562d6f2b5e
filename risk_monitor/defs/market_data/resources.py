"""Where the market_prices asset gets its quotes: the Redis cache or REST snapshots."""

import dagster as dg

from risk_monitor.adapters.ccxt_exchange import CcxtExchangeAccount
from risk_monitor.adapters.market_data import (
    RedisMarketData,
    RestMarketData,
    resolve_source,
    symbols_by_venue,
)
from risk_monitor.adapters.redis_quotes import RedisQuoteCache, redis_client
from risk_monitor.platform.settings import Settings, VenueSettings
from risk_monitor.ports import MarketDataSnapshot


class MarketDataResource(dg.ConfigurableResource):
    """Chooses the quote source by configuration only (``settings.market_data.source``)."""

    def source_name(self, settings: Settings) -> str:
        return resolve_source(settings)

    def snapshot(self, settings: Settings) -> MarketDataSnapshot:
        symbols = symbols_by_venue(settings)
        if resolve_source(settings) == "redis":
            assert settings.redis_url is not None  # resolve_source guarantees it
            overrides = {v.id: v.ws_endpoint_override or v.endpoint_override
                         for v in settings.venues}
            return RedisMarketData(RedisQuoteCache(redis_client(settings.redis_url),
                                                   settings.market_data),
                                   symbols, settings.market_data, endpoint_overrides=overrides)
        first_account: dict[str, VenueSettings] = {}
        for venue in settings.venues:  # quotes are per venue: one (public) client per venue id
            first_account.setdefault(venue.id, venue)
        accounts = [CcxtExchangeAccount.from_settings(settings, venue, with_credentials=False,
                                                      shared=True)
                    for venue in first_account.values()]
        return RestMarketData(accounts, symbols, settings.market_data)

    def expected_sources(self, settings: Settings) -> list[str]:
        return [f"market:{venue}:*" for venue in symbols_by_venue(settings)]


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"market_data": MarketDataResource()})
