"""Custodian workspaces (Fireblocks) for the custodian balances asset."""

import dagster as dg

from risk_monitor.adapters.fireblocks_custodian import FireblocksCustodian
from risk_monitor.defs.resources import RuntimeResource
from risk_monitor.platform.settings import Settings


class CustodiansResource(RuntimeResource):
    """One read-only Fireblocks adapter per configured custodian (built by the runtime).

    Credentials come from the environment variables the settings name (``api_key_env``,
    ``secret_key_env``); the PEM is parsed once per adapter, the SDK imported on first use.
    """

    custodian_ids: list[str] | None = None

    def custodians(self, settings: Settings) -> list[FireblocksCustodian]:
        return self.runtime(settings).custodians(self.custodian_ids)

    def expected_sources(self, settings: Settings) -> list[str]:
        return [f"custodian:{c.id}:*" for c in settings.custodians
                if self.custodian_ids is None or c.id in self.custodian_ids]


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"custodians": CustodiansResource()})
