"""Exchange accounts (ccxt) for the positions and exchange balances assets."""

import dagster as dg

from risk_monitor.adapters.ccxt_exchange import CcxtExchangeAccount
from risk_monitor.defs.resources import RuntimeResource
from risk_monitor.platform.settings import Settings


class ExchangeAccountsResource(RuntimeResource):
    """One read-only ccxt adapter per configured venue account (built by the runtime).

    Venues, credentials (environment variables named by ``*_env``) and endpoints all come from
    the shared ``settings`` resource; this resource has only an optional venue filter. The
    adapters share one ccxt client per account and process and read the venue's markets from
    the cache in ``data_dir``: a run (a fresh process) then skips ``load_markets``.
    """

    venue_ids: list[str] | None = None

    def accounts(self, settings: Settings) -> list[CcxtExchangeAccount]:
        return self.runtime(settings).exchange_accounts(self.venue_ids)

    def expected_sources(self, settings: Settings) -> list[str]:
        """Source keys (``exchange:<venue>:<account>``) a complete collection must contain."""
        return [f"exchange:{v.id}:{v.account}" for v in settings.venues
                if self.venue_ids is None or v.id in self.venue_ids]


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"exchange_accounts": ExchangeAccountsResource()})
