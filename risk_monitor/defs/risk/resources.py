"""The risk store (PostgreSQL or SQLite) and alert delivery, as thin Dagster resources."""

import dagster as dg

from risk_monitor.adapters.limit_provider import LimitConfigProvider
from risk_monitor.adapters.sql import OutboxDispatcher, Storage
from risk_monitor.defs.resources import RuntimeResource
from risk_monitor.platform.settings import Settings


class RiskStoreResource(RuntimeResource):
    """Alert store, outbox, compliance timeline, equity history, audit log."""

    def storage(self, settings: Settings) -> Storage:
        return self.runtime(settings).storage

    def limits(self, settings: Settings) -> LimitConfigProvider:
        """The limit document in force, by the same rule as the service (limit_provider.py)."""
        return self.runtime(settings).limits(self.storage(settings))

    def dispatcher(self, settings: Settings) -> OutboxDispatcher:
        """Delivers the outbox to Slack, or to the file sink when Slack is not configured."""
        return self.runtime(settings).dispatcher()


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"risk_store": RiskStoreResource()})
