"""The risk store (PostgreSQL or SQLite) and alert delivery, as thin Dagster resources."""

import threading

import dagster as dg

from risk_monitor.adapters.limit_provider import LimitConfigProvider
from risk_monitor.adapters.sql import OutboxDispatcher, Storage
from risk_monitor.platform.settings import Settings

_open: dict[str, Storage] = {}
_lock = threading.Lock()


def storage_for(settings: Settings) -> Storage:
    """One migrated Storage per database URL and process (runs reuse the engine's pool)."""
    url = settings.effective_database_url
    with _lock:
        storage = _open.get(url)
        if storage is None:
            if url.startswith("sqlite:///"):
                settings.data_dir.mkdir(parents=True, exist_ok=True)
            storage = _open[url] = Storage.open(url)
        return storage


class RiskStoreResource(dg.ConfigurableResource):
    """Alert store, outbox, compliance timeline, equity history, audit log."""

    def storage(self, settings: Settings) -> Storage:
        return storage_for(settings)

    def limits(self, settings: Settings) -> LimitConfigProvider:
        """The limit document in force, by the same rule as the service (limit_provider.py)."""
        discovery = None
        if settings.config_service.enabled and settings.redis_url and \
                not settings.config_service.url:
            from risk_monitor.adapters.redis_registry import DiscoveryClient, connect

            discovery = DiscoveryClient(connect(settings.redis_url),
                                        prefix=settings.service.registry_prefix)
        return LimitConfigProvider.from_settings(settings, self.storage(settings).config_versions,
                                                 discovery)

    def dispatcher(self, settings: Settings) -> OutboxDispatcher:
        """Delivers the outbox to Slack, or to the file sink when Slack is not configured."""
        return OutboxDispatcher.from_settings(self.storage(settings).engine, settings)


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"risk_store": RiskStoreResource()})
