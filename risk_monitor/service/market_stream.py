"""The real-time quote feed: one ccxt.pro consumer per venue, writing the Redis quote cache.

Per venue, :class:`VenueFeed` keeps one ``watch_tickers(symbols)`` pending at a time (never
cancelled mid-flight: cancelling a ccxt.pro future can poison the next subscription) and:

* validates every tick before it is stored (``domain.quotes.tick_rejection``), counting the
  rejected ones by reason;
* hands each accepted tick to its listener at once (the service's hot path) and writes the
  cache off the tick (module ``CACHE_*`` constants);
* on a websocket failure marks the venue ``rest_fallback`` in Redis and polls REST (through the
  venue's breaker and retry policy) while it reconnects with backoff and jitter, so the cache
  never goes stale during an outage;
* sweeps ccxt's ticker cache for updates that arrived while no watch was pending (ccxt.pro
  resolves only a pending future: such updates are otherwise seen late);
* when the stream is quiet for a third of the freshness budget, refreshes by REST once, so a
  calm market does not read as stale data.

Throughput: ``watch_tickers`` keeps up to ~1k messages/s per process (FACTS.md); shard venues or
symbols across processes beyond that.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import pandas as pd
from prometheus_client import Counter, Gauge

from risk_monitor.adapters.ccxt_exchange import build_client, map_tickers
from risk_monitor.adapters.errors import map_exception
from risk_monitor.adapters.market_data import quote_policy
from risk_monitor.adapters.redis_quotes import AsyncRedisQuoteCache, redis_client
from risk_monitor.domain.quotes import float_tick_rejection, tick_rejection
from risk_monitor.platform.clock import Clock, utc_now
from risk_monitor.platform.errors import RiskMonitorError
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.metrics import record_error
from risk_monitor.platform.resilience import SourceGuard, backoff_delay, guard_for
from risk_monitor.platform.settings import MarketDataSettings, Settings, VenueSettings
from risk_monitor.service.loop_metrics import LoopCounter, LoopHistogram
from risk_monitor.service.quote_intake import epoch_ns
from risk_monitor.service.tick_hook import Tickers, TickHook, guard_message_handler, ticker_row

log = get_logger(__name__)

#: updated per tick by the event loop (module loop_metrics)
TICKS = LoopCounter("risk_monitor_market_ticks_total",
                    "Quotes received from the live feed by outcome (accepted or why rejected).",
                    ["venue", "outcome"])
RECONNECTS = Counter("risk_monitor_market_stream_reconnects_total",
                     "Websocket failures after which the feed reconnected.", ["venue"])
REST_POLLS = Counter("risk_monitor_market_rest_polls_total",
                     "REST ticker snapshots taken by the feed (fallback or quiet refresh).",
                     ["venue", "reason", "outcome"])
LAG = LoopHistogram("risk_monitor_market_tick_lag_seconds",
                    "Receive time minus exchange time of accepted quotes.", ["venue"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
CONNECTED = Gauge("risk_monitor_market_stream_connected",
                  "1 while the venue's websocket delivers, 0 while on REST fallback.", ["venue"])

#: how often ccxt's ticker cache is swept for updates no pending watch received
SWEEP_S = 0.5
#: how long accepted ticks gather before one Redis pipeline writes them (a feeder: the Redis
#: stream is its output, so every tick goes in)
CACHE_BATCH_S = 0.01
#: with a listener (the service's own hot path, which has had every tick), the cache gets the
#: latest quote per instrument this often instead: its readers (Dagster runs, the sensor, the
#: dashboards) poll in seconds, and a per-tick write cost about a third of the loop's CPU
CACHE_CONFLATE_S = 1.0
#: rows per awaited Redis pipeline written on the loop (~20-40 µs of loop CPU a row: 200 in one
#: stalled ticks 4-6 ms). The service's own feed writes in the cache's thread instead
#: (``AsyncRedisQuoteCache.write_off_loop``: a 16-row pipeline still held the loop 0.5-0.7 ms)
CACHE_CHUNK_ROWS = 16

QuoteListener = Callable[[str, list[dict[str, Any]]], Awaitable[None] | None]


class VenueFeed:
    """The live feed of one venue: websocket first, REST while it is down."""

    def __init__(self, venue: VenueSettings, settings: MarketDataSettings, guard: SourceGuard, *,
                 cache: AsyncRedisQuoteCache | None, listener: QuoteListener | None = None,
                 clock: Clock = utc_now, rng: random.Random | None = None) -> None:
        self.venue = venue
        self.settings = settings
        self.guard = guard
        self.cache = cache
        self.listener = listener
        self.clock = clock
        self.symbols = list(venue.symbols)
        self._policy = quote_policy(settings)
        self.connected = False
        self.accepted = 0
        self.rejected: dict[str, int] = {}
        self.reconnects = 0
        self.rest_polls = 0
        self._rng = rng or random.Random()
        self._last_ts: dict[str, pd.Timestamp] = {}
        self._stream_client: Any | None = None
        self._rest_client: Any | None = None
        self._attempt = 0
        #: the per-message hook delivers every tick; the watch loop then only keeps the
        #: subscription alive (and reports the connection), it re-handles nothing
        self._hook = TickHook(self.symbols, self._on_hooked)
        self._hooked = False
        self._last_ns: dict[str, int] = {}
        self._cache_rows: list[dict[str, Any]] = []  # a feeder's: every tick
        #: with a listener: the latest accepted quote per instrument (module CACHE_CONFLATE_S)
        self._cache_latest: dict[str, dict[str, Any]] | None = (
            {} if listener is not None else None)
        self._flush: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[Any]] = set()  # kept alive: listeners, receive loops
        # per-tick metric children, looked up once (a labels() call per tick costs ~1 µs)
        self._lag = LAG.labels(venue=venue.id)
        self._accepted_ticks = TICKS.labels(venue=venue.id, outcome="accepted")

    # -- clients ------------------------------------------------------------------------------
    def _stream(self) -> Any:
        if self._stream_client is None:
            client = build_client(self.venue, flavour="pro", with_credentials=False)
            self._hook.install(client)
            guard_message_handler(client, self._unparseable, self._tasks)
            self._stream_client = client
        return self._stream_client

    def _unparseable(self, exc: BaseException) -> None:
        self._count_rejected("unparseable")
        log.warning("unparseable market message dropped", venue=self.venue.id,
                    error=f"{type(exc).__name__}: {str(exc)[:200]}")

    def _rest(self) -> Any:
        if self._rest_client is None:
            self._rest_client = build_client(self.venue, flavour="async", with_credentials=False)
        return self._rest_client

    async def _close_client(self, client: Any | None, which: str) -> None:
        if client is not None:
            try:
                await asyncio.wait_for(client.close(), timeout=5)
            except Exception as exc:  # closing a broken connection may fail too
                log.debug(f"closing the {which} client failed", venue=self.venue.id,
                          error=type(exc).__name__)

    async def _drop_stream(self) -> None:
        client, self._stream_client = self._stream_client, None
        await self._close_client(client, "stream")

    async def close(self) -> None:
        await self._drop_stream()
        flush, self._flush = self._flush, None
        if flush is not None and not flush.done():  # the last quotes reach the cache; a task
            try:  # left pending was destroyed with the loop ("Task was destroyed...")
                await asyncio.wait_for(flush, timeout=5)
            except TimeoutError:  # wait_for cancelled it
                log.warning("quote cache flush did not finish at close", venue=self.venue.id)
        client, self._rest_client = self._rest_client, None
        await self._close_client(client, "REST")

    # -- quotes -------------------------------------------------------------------------------
    async def _handle(self, tickers: Mapping[str, Mapping[str, Any]], markets: Mapping[str, Any],
                      via: str) -> int:
        received = self.clock()
        frame = map_tickers(tickers, venue=self.venue.id, markets=markets, received_at=received,
                            symbols=self.symbols or None)
        accepted: list[dict[str, Any]] = []
        for raw in frame.to_dict("records"):
            row: dict[str, Any] = {str(k): (None if isinstance(v, float) and math.isnan(v)
                                            else v) for k, v in raw.items()}
            instrument = str(row["instrument"])
            stamp = pd.Timestamp(row["timestamp"])
            if self._last_ts.get(instrument) == stamp:
                continue  # already stored (re-read from ccxt's ticker cache)
            problem = tick_rejection(row, now=received, policy=self._policy,
                                     last_accepted=self._last_ts.get(instrument))
            if problem is not None:
                self._count_rejected(problem)
                continue
            self._last_ts[instrument] = stamp
            self._lag.observe(max(0.0, (pd.Timestamp(received) - stamp).total_seconds()))
            accepted.append(row)
        if accepted:
            self.accepted += len(accepted)
            self._accepted_ticks.inc(len(accepted))
            if self.cache is not None:
                await self.cache.write(self.venue.id, accepted, via=via)
            if self.listener is not None:
                result = self.listener(self.venue.id, accepted)
                if asyncio.iscoroutine(result):
                    await result
        return len(accepted)

    def _on_hooked(self, tickers: Tickers) -> None:
        """Per-message hook (module tick_hook): float checks, then the listener at once and
        the Redis cache in batches (a task flushes what accumulated)."""
        received = self.clock()
        now_ns = epoch_ns(received) or 0
        markets = self._stream_client.markets if self._stream_client is not None else None
        accepted: list[dict[str, Any]] = []
        for symbol, ticker in tickers:
            row = ticker_row(self.venue.id, symbol, ticker,
                             (markets or {}).get(symbol), received)
            if row is None:
                self._count_rejected("invalid")
                continue
            t_ns = epoch_ns(row["timestamp"]) or 0
            last_ns = self._last_ns.get(symbol)
            if last_ns == t_ns:
                continue  # the same update again
            problem = float_tick_rejection(row["last"], row["mark"], row["bid"], row["ask"],
                                           t_ns, now_ns=now_ns, policy=self._policy,
                                           last_ns=last_ns)
            if problem is not None:
                self._count_rejected(problem)
                continue
            self._last_ns[symbol] = t_ns
            self._last_ts[symbol] = row["timestamp"]
            self._lag.observe(max(0.0, (now_ns - t_ns) / 1e9))
            accepted.append(row)
        if not accepted:
            return
        self._hooked = True
        if not self.connected:  # ticks read directly resolve no watch: they say it first
            self._tasks.add(task := asyncio.ensure_future(self._connected()))
            task.add_done_callback(self._tasks.discard)
        self.accepted += len(accepted)
        self._accepted_ticks.inc(len(accepted))
        if self.listener is not None:
            result = self.listener(self.venue.id, accepted)
            if result is not None and asyncio.iscoroutine(result):  # the hot path's: None
                self._tasks.add(task := asyncio.ensure_future(result))
                task.add_done_callback(self._tasks.discard)
        if self.cache is not None:
            latest = self._cache_latest
            if latest is None:
                self._cache_rows.extend(accepted)
            else:  # conflated: one dict store per tick, the encoding happens per flush
                for row in accepted:
                    latest[row["instrument"]] = row
            if self._flush is None or self._flush.done():
                self._flush = asyncio.ensure_future(self._flush_cache())

    def _take_cache_rows(self) -> list[dict[str, Any]]:
        if self._cache_latest is not None:
            rows = list(self._cache_latest.values())
            self._cache_latest.clear()
            return rows
        rows, self._cache_rows = self._cache_rows, []
        return rows

    async def _flush_cache(self) -> None:
        # gather first: one pipeline per batch instead of one per few ticks; with a listener,
        # the latest quote per instrument (module CACHE_CONFLATE_S)
        while True:
            await asyncio.sleep(CACHE_BATCH_S if self._cache_latest is None
                                else CACHE_CONFLATE_S)
            rows = self._take_cache_rows()
            if self.cache is None or not rows:
                return
            try:  # each row joins the stream; the hash keeps the latest per instrument
                if self.cache.off_loop:  # one pipeline, encoded in the cache's thread
                    await self.cache.write_off_loop(self.venue.id, rows, via="stream")
                    continue
                for start in range(0, len(rows), CACHE_CHUNK_ROWS):
                    await self.cache.write(self.venue.id, rows[start:start + CACHE_CHUNK_ROWS],
                                           via="stream")
            except Exception as exc:
                self._redis_failed(exc, "quote cache", "quote cache write failed")

    def _count_rejected(self, problem: str) -> None:
        self.rejected[problem] = self.rejected.get(problem, 0) + 1
        TICKS.labels(venue=self.venue.id, outcome=f"rejected_{problem}").inc()

    def _with_missed(self, client: Any, returned: Mapping[str, Any]) -> dict[str, Any]:
        """The returned updates plus any newer one ccxt cached while no watch was pending.

        ``watch_tickers`` resolves only the future pending when a message arrives; updates in
        between land in ``client.tickers`` alone. Entries without an exchange timestamp are not
        re-read: their age would be our receive time, which would fake freshness.
        """
        updates = dict(returned)
        cached = getattr(client, "tickers", None) or {}
        for symbol in self.symbols:
            ticker = cached.get(symbol)
            if symbol not in updates and ticker and ticker.get("timestamp") is not None:
                updates[symbol] = ticker
        return updates

    async def poll_rest(self, reason: str) -> int:
        """One bulk REST snapshot into the cache; failures are counted, logged, and survived."""
        client = self._rest()
        symbols = self.symbols or None
        try:
            if not client.markets:
                await self.guard.acall("load_markets", client.load_markets)
            tickers = await self.guard.acall("fetch_tickers",
                                             lambda: client.fetch_tickers(symbols))
            stored = await self._handle(tickers, client.markets or {}, via="rest")
        except RiskMonitorError as exc:
            record_error(exc)
            REST_POLLS.labels(venue=self.venue.id, reason=reason, outcome="error").inc()
            log.warning("REST quote poll failed", venue=self.venue.id, reason=reason,
                        error_code=exc.code, error=exc.message)
            return 0
        self.rest_polls += 1
        REST_POLLS.labels(venue=self.venue.id, reason=reason, outcome="ok").inc()
        return stored

    async def _status(self, mode: str, error: str = "") -> None:
        CONNECTED.labels(venue=self.venue.id).set(1 if mode == "stream" else 0)
        if self.cache is not None:
            try:
                await self.cache.set_status(self.venue.id, mode, self.clock(), error)
            except Exception as exc:
                self._redis_failed(exc, "hset", "could not record the feed status")

    def _redis_failed(self, exc: Exception, endpoint: str, event: str) -> None:
        """Counted and logged; the feed goes on (the listener already has the quotes)."""
        mapped = map_exception(exc, source="redis", endpoint=endpoint)
        record_error(mapped)
        log.warning(event, venue=self.venue.id, error_code=mapped.code)

    # -- the loop -----------------------------------------------------------------------------
    async def _watch(self, stop: asyncio.Event) -> None:
        """Deliver websocket updates until ``stop``; raise when the stream fails."""
        client = self._stream()
        loop = asyncio.get_running_loop()
        idle_s = max(self.settings.poll_interval_s, self.settings.max_age_s / 3)
        sweep_s = min(SWEEP_S, idle_s)
        last_update = loop.time()
        stopper = asyncio.ensure_future(stop.wait())
        pending: asyncio.Future[Any] | None = None
        try:
            while not stop.is_set():
                if pending is None:
                    pending = asyncio.ensure_future(client.watch_tickers(self.symbols or None))
                done, _ = await asyncio.wait({pending, stopper}, timeout=sweep_s,
                                             return_when=asyncio.FIRST_COMPLETED)
                if stopper in done:
                    return
                if pending not in done:
                    # ticks the hook read directly resolve no watch: they still prove the
                    # stream alive (loop.time() is time.monotonic(), as last_delivery)
                    delivered = self._hook.last_delivery
                    if delivered is not None and delivered > last_update:
                        last_update = delivered
                        if not self.connected:
                            await self._connected()
                    # an update that landed while no watch was pending sits in ccxt's cache
                    # (not with the hook: it saw every message)
                    if self._hooked and loop.time() - last_update < idle_s:
                        continue
                    if self.connected and not self._hooked and await self._handle(
                            self._with_missed(client, {}), client.markets or {}, via="stream"):
                        last_update = loop.time()
                    elif loop.time() - last_update >= idle_s:
                        await self.poll_rest("quiet")  # a calm market must not read as stale
                        last_update = loop.time()
                    continue
                last_update = loop.time()
                tickers = pending.result()  # raises on a websocket failure
                # re-arm at once: an update arriving while nobody awaits resolves no future
                pending = asyncio.ensure_future(client.watch_tickers(self.symbols or None))
                if not self.connected:
                    await self._connected()
                if not self._hooked:  # the hook already delivered these
                    await self._handle(self._with_missed(client, tickers), client.markets or {},
                                       via="stream")
        finally:
            stopper.cancel()
            if pending is not None and not pending.done():
                pending.cancel()

    async def _connected(self) -> None:
        if self.connected:
            return
        self.connected = True
        self._attempt = 0
        log.info("market stream connected", venue=self.venue.id)
        await self._status("stream")

    async def _fallback(self, stop: asyncio.Event, seconds: float) -> None:
        """Poll REST every ``poll_interval_s`` for ``seconds`` (at least once) or until stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not stop.is_set():
            await self.poll_rest("fallback")
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(stop.wait(),
                                       timeout=min(self.settings.poll_interval_s, remaining))
            except TimeoutError:
                continue

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; never raises for a venue outage."""
        log.info("market stream starting", venue=self.venue.id, symbols=len(self.symbols))
        try:
            while not stop.is_set():
                try:
                    await self._watch(stop)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    mapped = map_exception(exc, source=self.venue.id, endpoint="watch_tickers")
                    record_error(mapped)
                    self.connected = False
                    self.reconnects += 1
                    RECONNECTS.labels(venue=self.venue.id).inc()
                    await self._status("rest_fallback", mapped.message[:300])
                    delay = backoff_delay(self._attempt + 1, self.settings.reconnect_initial_s,
                                          self.settings.reconnect_max_s, self._rng)
                    self._attempt += 1
                    log.warning("market stream down; REST fallback until reconnect",
                                venue=self.venue.id, error_code=mapped.code,
                                error=mapped.message, reconnect_in_s=round(delay, 3))
                    await self._drop_stream()
                    await self._fallback(stop, delay)
        finally:
            await self._status("down")
            await self.close()
            log.info("market stream stopped", venue=self.venue.id, accepted=self.accepted,
                     rejected=self.rejected, reconnects=self.reconnects)


def feeds_for(settings: Settings, cache: AsyncRedisQuoteCache | None,
              listener: QuoteListener | None = None,
              venue_ids: Sequence[str] | None = None) -> list[VenueFeed]:
    """One feed per venue id (accounts of one venue share its quotes)."""
    chosen: dict[str, VenueSettings] = {}
    for venue in settings.venues:
        if venue_ids is None or venue.id in venue_ids:
            chosen.setdefault(venue.id, venue)
    return [VenueFeed(v, settings.market_data, guard_for(settings, v.id), cache=cache,
                      listener=listener) for v in chosen.values()]


async def run_market_stream(settings: Settings, stop: asyncio.Event, *,
                            listener: QuoteListener | None = None,
                            venue_ids: Sequence[str] | None = None) -> list[VenueFeed]:
    """Run every venue's feed until ``stop`` is set; returns the feeds (their counters).

    Quotes go to the Redis cache when ``settings.redis_url`` is set, and to ``listener`` (the
    service's hot path) when given.
    """
    client: Any | None = None
    cache: AsyncRedisQuoteCache | None = None
    if settings.redis_url:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(settings.redis_url, socket_timeout=5.0,
                                         socket_connect_timeout=5.0)
        # with a listener (the service's tick loop) the conflated flush runs in a thread
        cache = AsyncRedisQuoteCache(
            client, settings.market_data,
            blocking=redis_client(settings.redis_url) if listener is not None else None)
    else:
        log.warning("redis_url not set: the market stream feeds listeners only, no cache")
    feeds = feeds_for(settings, cache, listener, venue_ids)
    try:
        await asyncio.gather(*(feed.run(stop) for feed in feeds))
    finally:
        if cache is not None:
            await asyncio.to_thread(cache.close)
        if client is not None:
            await client.aclose()
    return feeds
