"""The composition root: settings in, the process's runtime out. Nothing else wires.

A Dagster run (through its resources) and the service (``ServiceApp``) both call
:func:`build_runtime` and take the storage, the limit provider, the adapters and the notifier
from it, so the two evaluation paths are built the same way from the same settings. Parts are
built on first use: a market-data step never opens the database, and heavy libraries
(``fireblocks``, ``ccxt.pro``) are imported only by the steps that need them.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from risk_monitor.adapters.sql import OutboxDispatcher, Storage
from risk_monitor.adapters.sql.dispatcher import BackoffPolicy
from risk_monitor.adapters.sql.engine import create_engine
from risk_monitor.platform.settings import Settings, VenueSettings, load_settings

if TYPE_CHECKING:
    import redis

    from risk_monitor.adapters.ccxt_exchange import CcxtExchangeAccount
    from risk_monitor.adapters.fireblocks_custodian import FireblocksCustodian
    from risk_monitor.adapters.limit_provider import LimitConfigProvider
    from risk_monitor.adapters.redis_registry import DiscoveryClient
    from risk_monitor.ports import ConfigSource, MarketDataSnapshot, Notifier
    from risk_monitor.service.sql_state import DatabaseRiskView


class Runtime:
    """What one process needs, built from its settings (see the module docstring).

    ``migrate``: open the store at the schema head now (a Dagster step); the service migrates
    from its database readiness check instead, so it starts while the database is down.
    """

    def __init__(self, settings: Settings, *, migrate: bool = True) -> None:
        self.settings = settings
        self.migrate = migrate

    # -- storage --------------------------------------------------------------------------------
    @cached_property
    def storage(self) -> Storage:
        """Every repository over one engine (alert store, outbox, compliance, audit...)."""
        url = self.settings.effective_database_url
        if url.startswith("sqlite"):
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        return Storage.open(url) if self.migrate else Storage.on(create_engine(url))

    # -- Redis and discovery --------------------------------------------------------------------
    @cached_property
    def redis(self) -> redis.Redis | None:
        if not self.settings.redis_url:
            return None
        from risk_monitor.adapters.redis_registry import connect

        return connect(self.settings.redis_url)

    @cached_property
    def discovery(self) -> DiscoveryClient | None:
        if self.redis is None:
            return None
        from risk_monitor.adapters.redis_registry import DiscoveryClient

        return DiscoveryClient(self.redis, prefix=self.settings.service.registry_prefix)

    # -- limits ---------------------------------------------------------------------------------
    @cached_property
    def config_source(self) -> ConfigSource | None:
        """The configuration service (its URL, or Redis discovery), when enabled."""
        cs = self.settings.config_service
        if not cs.enabled:
            return None
        from risk_monitor.adapters.config_service import ConfigServiceLocator, HttpConfigSource

        locator = ConfigServiceLocator(cs, self.discovery if not cs.url else None)
        return HttpConfigSource(locator, timeout_s=self.settings.resilience.timeout_s)

    def limits(self, storage: Storage | None = None, *, record: bool = True
               ) -> LimitConfigProvider:
        """The one limit provider (file, service, last good from the store, disk cache) of
        the service and every Dagster run, recording in ``storage`` (this runtime's store by
        default) from the start when ``record``."""
        from risk_monitor.adapters.limit_provider import LimitConfigProvider

        versions = (storage or self.storage).config_versions
        return LimitConfigProvider(self.settings, versions, self.config_source, record=record)

    # -- alert delivery -------------------------------------------------------------------------
    def dispatcher(self, notifier: Notifier | None = None) -> OutboxDispatcher:
        """The outbox dispatcher: Slack when configured (else the file sink) with the fallback
        file sink, lease, retry schedule and limits from ``alerts.*`` and ``slack.*``."""
        return outbox_dispatcher(self.settings, self.storage, notifier)

    # -- read-only sources ----------------------------------------------------------------------
    def exchange_accounts(self, venue_ids: list[str] | None = None, *,
                          shared: bool = True) -> list[CcxtExchangeAccount]:
        """``shared``: one ccxt client per account and process (a Dagster run's assets)."""
        from risk_monitor.adapters.ccxt_exchange import CcxtExchangeAccount

        return [CcxtExchangeAccount.from_settings(self.settings, venue, shared=shared)
                for venue in self.settings.venues
                if venue_ids is None or venue.id in venue_ids]

    def custodians(self, custodian_ids: list[str] | None = None) -> list[FireblocksCustodian]:
        from risk_monitor.adapters.fireblocks_custodian import FireblocksCustodian
        from risk_monitor.platform.resilience import guard_for

        return [FireblocksCustodian(c, guard=guard_for(self.settings, c.id))
                for c in self.settings.custodians
                if custodian_ids is None or c.id in custodian_ids]

    def market_data(self) -> MarketDataSnapshot:
        """Quotes from the Redis cache or REST snapshots, by configuration only."""
        from risk_monitor.adapters.market_data import (
            RedisMarketData,
            RestMarketData,
            resolve_source,
            symbols_by_venue,
        )

        settings = self.settings
        symbols = symbols_by_venue(settings)
        if resolve_source(settings) == "redis":
            from risk_monitor.adapters.redis_quotes import RedisQuoteCache, redis_client

            assert settings.redis_url is not None  # resolve_source guarantees it
            overrides = {v.id: v.ws_endpoint_override or v.endpoint_override
                         for v in settings.venues}
            return RedisMarketData(RedisQuoteCache(redis_client(settings.redis_url),
                                                   settings.market_data),
                                   symbols, settings.market_data, endpoint_overrides=overrides)
        from risk_monitor.adapters.ccxt_exchange import CcxtExchangeAccount

        first: dict[str, VenueSettings] = {}
        for venue in settings.venues:  # quotes are per venue: one (public) client per venue id
            first.setdefault(venue.id, venue)
        accounts = [CcxtExchangeAccount.from_settings(settings, venue, with_credentials=False,
                                                      shared=True) for venue in first.values()]
        return RestMarketData(accounts, symbols, settings.market_data)

    # -- the service's risk state ---------------------------------------------------------------
    @cached_property
    def state_provider(self) -> DatabaseRiskView:
        """What the service answers from: the shared store, fronted by this process's own
        evaluation once it has one (the hot path feeds ``provider.live``)."""
        from risk_monitor.application import source_budgets
        from risk_monitor.service.sql_state import DatabaseRiskView
        from risk_monitor.service.state import LiveEvaluation

        md = self.settings.market_data
        budgets = source_budgets(self.settings)
        live = LiveEvaluation(max_age_s=md.max_age_s, budgets=budgets)
        return DatabaseRiskView(self.storage.engine, live=live, max_age_s=md.max_age_s,
                            budgets=budgets)

    def close(self) -> None:
        """Release what was built (nothing that was not)."""
        parts = self.__dict__
        if parts.get("redis") is not None:
            parts["redis"].close()
        if "storage" in parts:
            parts["storage"].close()


def outbox_dispatcher(settings: Settings, storage: Storage,
                      notifier: Notifier | None = None) -> OutboxDispatcher:
    """See :meth:`Runtime.dispatcher` (also for a store the caller opened itself)."""
    from risk_monitor.adapters.notifiers import build_fallback, build_notifier

    alerts = settings.alerts
    workers = settings.slack.max_concurrency if settings.slack is not None else 1
    backoff = BackoffPolicy(initial_s=alerts.retry_initial_s,
                            max_s=max(alerts.retry_initial_s, alerts.retry_max_s))
    return OutboxDispatcher(storage.engine, notifier or build_notifier(settings),
                            max_attempts=alerts.outbox_max_attempts, max_workers=workers,
                            lease_s=alerts.outbox_lease_s, backoff=backoff,
                            fallback=build_fallback(settings))


def build_runtime(settings: Settings | None = None, *, config_file: str | None = None,
                  migrate: bool = True) -> Runtime:
    """The runtime of this process from its settings (loaded when not given)."""
    return Runtime(settings or load_settings(config_file), migrate=migrate)
