"""``risk-monitor stream``: the quote feed alone, for deployments that shard it by venue.

One process per venue (or group of venues) runs ``run_market_stream`` for the venues it is
given: ccxt.pro websockets, REST fallback, the Redis quote cache. Beyond ~1k quotes/s per process
``watch_tickers`` conflates (FACTS.md), so a large desk spreads its venues over several feeders.
Each feeder registers in Redis discovery as service ``market-stream`` with the venues it serves
(heartbeat at TTL/3, deleted on SIGTERM/SIGINT, expired within ``service.registry_ttl_s`` after a
crash), so operators and the service can see who feeds what. The service then runs with
``service.stream: false`` and follows the feeders' Redis streams instead of its own websockets.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from risk_monitor import __version__
from risk_monitor.adapters.market_data import symbols_by_venue
from risk_monitor.adapters.redis_registry import RedisServiceRegistry, Registration, connect
from risk_monitor.platform.errors import ConfigError
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.settings import Settings
from risk_monitor.service.market_stream import VenueFeed, run_market_stream

log = get_logger(__name__)

FEEDER_SERVICE = "market-stream"


def chosen_venues(settings: Settings, venue_ids: Sequence[str]) -> list[str]:
    """The venue ids this feeder serves (all configured ones when none are named)."""
    known = list(symbols_by_venue(settings))
    if not known:
        raise ConfigError("no venues configured: nothing to stream", key="venues")
    if not venue_ids:
        return known
    unknown = sorted(set(venue_ids) - set(known))
    if unknown:
        raise ConfigError(f"unknown venue(s) {unknown}; configured: {known}", key="venues")
    return [v for v in known if v in venue_ids]


def feeder_info(settings: Settings, venues: Sequence[str], *, metrics_url: str = "",
                started_at: datetime) -> dict[str, Any]:
    symbols = symbols_by_venue(settings)
    return {
        "rest_url": metrics_url,
        "version": __version__,
        "venues": list(venues),
        "started_at": started_at.isoformat(),
        "metadata": {"role": FEEDER_SERVICE, "environment": settings.environment,
                     "pid": os.getpid(), "key_prefix": settings.market_data.key_prefix,
                     "symbols": sum(len(symbols[v]) for v in venues)},
    }


async def run_feeder(settings: Settings, venue_ids: Sequence[str], stop: asyncio.Event, *,
                     metrics_url: str = "") -> list[VenueFeed]:
    """Register, stream until ``stop``, deregister; returns the feeds (their counters)."""
    venues = chosen_venues(settings, venue_ids)
    if not settings.redis_url:
        log.warning("redis_url not set: quotes go nowhere and the feeder is not discoverable")
    registration: Registration | None = None
    client = connect(settings.redis_url) if settings.redis_url else None
    if client is not None:
        registry = RedisServiceRegistry(client, prefix=settings.service.registry_prefix)
        info = feeder_info(settings, venues, metrics_url=metrics_url,
                           started_at=datetime.now(UTC))
        registration = Registration(registry, FEEDER_SERVICE, settings.instance_id, info,
                                    settings.service.registry_ttl_s)
        await asyncio.to_thread(registration.start)
    log.info("market_stream_feeder_started", venues=venues, instance_id=settings.instance_id,
             registry_key=registration.key if registration else None, metrics_url=metrics_url)
    try:
        return await run_market_stream(settings, stop, venue_ids=venues)
    finally:
        if registration is not None:
            await asyncio.to_thread(registration.stop)
        if client is not None:
            client.close()
        log.info("market_stream_feeder_stopped", venues=venues)


def main(settings: Settings, venue_ids: Sequence[str], *, metrics_port: int | None = None,
         metrics_host: str = "127.0.0.1") -> None:
    """Entry point of ``risk-monitor stream``: run until SIGTERM/SIGINT."""
    metrics_url = ""
    if metrics_port is not None:
        from prometheus_client import start_http_server

        server, _thread = start_http_server(metrics_port, addr=metrics_host)
        metrics_url = f"http://{metrics_host}:{server.server_port}"
        log.info("metrics_served", url=f"{metrics_url}/metrics")

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run_feeder(settings, venue_ids, stop, metrics_url=metrics_url)

    asyncio.run(run())
