"""Exchange accounts (ccxt) for the positions and exchange balances assets."""

import dagster as dg

from risk_monitor.adapters.ccxt_exchange import CcxtExchangeAccount
from risk_monitor.platform.settings import Settings


class ExchangeAccountsResource(dg.ConfigurableResource):
    """Builds one read-only ccxt adapter per configured venue account.

    Venues, credentials (environment variables named by ``*_env``) and endpoints all come from
    the shared ``settings`` resource, so this resource has nothing of its own to configure
    beyond an optional venue filter. The adapters share one ccxt client per account and
    process (positions and balances of a run use the same client, rate limiter and markets)
    and read the venue's markets from the cache in ``data_dir``: a run (a fresh process) then
    skips ``load_markets``.
    """

    venue_ids: list[str] | None = None

    def accounts(self, settings: Settings) -> list[CcxtExchangeAccount]:
        return [CcxtExchangeAccount.from_settings(settings, venue, shared=True)
                for venue in settings.venues
                if self.venue_ids is None or venue.id in self.venue_ids]

    def expected_sources(self, settings: Settings) -> list[str]:
        """Source keys (``exchange:<venue>:<account>``) a complete collection must contain."""
        return [f"exchange:{v.id}:{v.account}" for v in settings.venues
                if self.venue_ids is None or v.id in self.venue_ids]


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"exchange_accounts": ExchangeAccountsResource()})
