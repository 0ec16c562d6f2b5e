"""Latest quotes: REST snapshots through ccxt, or the Redis quote cache the stream keeps warm.

Which one is configuration only (``settings.market_data.source``): ``auto`` reads the Redis
cache when ``settings.redis_url`` is set (the service's stream consumer writes it), else takes a
REST snapshot (one bulk ``fetch_tickers(symbols)`` per venue).

Redis layout, all under ``settings.market_data.key_prefix`` (``P``):

* ``P:quotes:<venue>`` — hash, field = instrument, value = JSON of the latest quote
  ``{base, quote, bid, ask, last, mark, ts, recv, via}`` (``ts`` exchange event time, ``recv``
  our receive time, both epoch ms; ``via`` = ``stream`` or ``rest``). One HGETALL reads a venue.
* ``P:stream:<venue>`` — stream of every accepted quote (same fields), capped with
  ``XADD ... MAXLEN ~ stream_maxlen``, for replay and lineage.
* ``P:status:<venue>`` — hash describing the feeder (``mode`` = stream / rest_fallback / down,
  ``updated_at`` ms, ``error``): shows whether the cache is being fed.

Coverage, per venue: a structurally invalid answer fails the venue (no rows). Otherwise the
domain's admission rule (``domain/quotes.py``, the same one the hot path uses) keeps the fresh
and sane rows and names the rest: the venue's status is then ``ok=False`` (``RM300`` absurd,
``RM301`` stale, ``RM302`` missing) while its admitted rows stay usable.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

import pandas as pd

from risk_monitor.adapters.collection import (
    DATA_AGE,
    SOURCE_UP,
    Clock,
    Source,
    data_age_s,
    failed_status,
    utc_now,
)
from risk_monitor.adapters.errors import map_exception
from risk_monitor.domain.model import PRICE_COLUMNS, Collected, SourceKind, SourceStatus
from risk_monitor.domain.quotes import QuotePolicy, admitted_quotes
from risk_monitor.domain.schemas import concat_frames, price_schema, prices_frame, validate_frame
from risk_monitor.platform.errors import (
    ConfigError,
    DataValidationError,
    MissingDataError,
    RiskMonitorError,
    StaleDataError,
)
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.metrics import record_error
from risk_monitor.platform.settings import MarketDataSettings, Settings

log = get_logger(__name__)


class TickerSource(Protocol):
    """What a REST snapshot needs from a venue adapter (CcxtExchangeAccount has it)."""

    venue: str

    @property
    def endpoint_override(self) -> str | None: ...

    def fetch_tickers(self, symbols: Sequence[str] | None = None) -> pd.DataFrame: ...


# --- keys and encoding ---------------------------------------------------------------------------
def quotes_key(prefix: str, venue: str) -> str:
    return f"{prefix}:quotes:{venue}"


def stream_key(prefix: str, venue: str) -> str:
    return f"{prefix}:stream:{venue}"


def status_key(prefix: str, venue: str) -> str:
    return f"{prefix}:status:{venue}"


def _ms(value: Any) -> int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp | datetime):
        return int(pd.Timestamp(value).value // 1_000_000)
    return int(value)


def _clean(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def encode_quote(row: Mapping[str, Any], via: str) -> dict[str, Any]:
    """A PRICE_COLUMNS row as the cache's JSON-able dict (NaN -> null, times -> epoch ms)."""
    return {
        "base": row["base"], "quote": row["quote"],
        "bid": _clean(row.get("bid")), "ask": _clean(row.get("ask")),
        "last": _clean(row.get("last")), "mark": _clean(row.get("mark")),
        "ts": _ms(row.get("timestamp")), "recv": _ms(row.get("received_at")), "via": via,
    }


def decode_quotes(venue: str, raw: Mapping[Any, Any]) -> pd.DataFrame:
    """A venue's quotes hash (field -> JSON) as a PRICE_COLUMNS frame."""
    rows = []
    for field, value in raw.items():
        instrument = field.decode() if isinstance(field, bytes) else str(field)
        try:
            quote = json.loads(value)
            rows.append({
                "venue": venue, "instrument": instrument,
                "base": quote["base"], "quote": quote["quote"],
                "bid": quote.get("bid"), "ask": quote.get("ask"),
                "last": quote.get("last"), "mark": quote.get("mark"),
                "timestamp": pd.Timestamp(int(quote["ts"]), unit="ms", tz="UTC"),
                "received_at": pd.Timestamp(int(quote["recv"]), unit="ms", tz="UTC"),
            })
        except (ValueError, KeyError, TypeError) as exc:
            raise DataValidationError(f"quote cache entry {venue}/{instrument} is unreadable: "
                                      f"{type(exc).__name__}", source=venue) from None
    return prices_frame(rows)


def _stream_fields(instrument: str, quote: Mapping[str, Any]) -> dict[str, str]:
    return {"instrument": instrument,
            **{k: "" if v is None else str(v) for k, v in quote.items()}}


class RedisQuoteCache:
    """Sync reader/writer of the quote cache (Dagster runs, REST fallback, tests)."""

    def __init__(self, client: Any, settings: MarketDataSettings) -> None:
        self.client = client
        self.prefix = settings.key_prefix
        self.maxlen = settings.stream_maxlen

    def write(self, venue: str, frame: pd.DataFrame, *, via: str = "rest") -> int:
        """Store each row as the latest quote and append it to the venue's capped stream."""
        if not len(frame):
            return 0
        pipe = self.client.pipeline(transaction=False)
        latest: dict[str, str] = {}
        for row in frame.to_dict("records"):
            quote = encode_quote({str(k): v for k, v in row.items()}, via)
            latest[row["instrument"]] = json.dumps(quote)
            pipe.xadd(stream_key(self.prefix, venue), _stream_fields(row["instrument"], quote),
                      maxlen=self.maxlen, approximate=True)
        pipe.hset(quotes_key(self.prefix, venue), mapping=latest)
        pipe.execute()
        return len(latest)

    def read(self, venue: str) -> pd.DataFrame:
        return decode_quotes(venue, self.client.hgetall(quotes_key(self.prefix, venue)))

    def status(self, venue: str) -> dict[str, str]:
        raw = self.client.hgetall(status_key(self.prefix, venue))
        return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes)
                                                              else v) for k, v in raw.items()}


class AsyncRedisQuoteCache:
    """Async writer for the stream consumer (redis.asyncio client)."""

    def __init__(self, client: Any, settings: MarketDataSettings) -> None:
        self.client = client
        self.prefix = settings.key_prefix
        self.maxlen = settings.stream_maxlen

    async def write(self, venue: str, rows: Sequence[Mapping[str, Any]], *, via: str) -> int:
        if not rows:
            return 0
        pipe = self.client.pipeline(transaction=False)
        latest: dict[str, str] = {}
        for row in rows:
            quote = encode_quote(row, via)
            latest[row["instrument"]] = json.dumps(quote)
            pipe.xadd(stream_key(self.prefix, venue), _stream_fields(row["instrument"], quote),
                      maxlen=self.maxlen, approximate=True)
        pipe.hset(quotes_key(self.prefix, venue), mapping=latest)
        await pipe.execute()
        return len(latest)

    async def set_status(self, venue: str, mode: str, at: datetime, error: str = "") -> None:
        await self.client.hset(status_key(self.prefix, venue), mapping={
            "mode": mode, "updated_at": str(_ms(at)), "error": error})


# --- coverage ------------------------------------------------------------------------------------
def quote_policy(settings: MarketDataSettings) -> QuotePolicy:
    """The admission budget of ``settings.market_data`` (one rule: ``domain/quotes.py``)."""
    return QuotePolicy(max_age_s=settings.max_age_s,
                       max_future_skew_s=settings.max_future_skew_s,
                       max_deviation=settings.max_deviation)


_ADMISSION_ERRORS: dict[str, type[RiskMonitorError]] = {
    e.code: e for e in (DataValidationError, StaleDataError, MissingDataError)}


@dataclass(frozen=True)
class VenueQuotes:
    """Where one venue's quotes come from and which instruments are expected."""

    source: Source
    symbols: tuple[str, ...]


def collect_quotes(venues: Sequence[VenueQuotes], settings: MarketDataSettings,
                   clock: Clock = utc_now) -> Collected:
    """Fetch every venue's quotes in turn (one failing never hides the others), then admit
    them with the domain's rule: fresh and sane rows kept, the rest named per venue."""
    frames: list[pd.DataFrame] = []
    failed: list[SourceStatus] = []
    for item in venues:
        try:
            frames.append(validate_frame(item.source.fetch(), price_schema(),
                                         source=item.source.venue))
        except RiskMonitorError as exc:
            failed.append(failed_status(item.source, exc, clock()))
        except Exception as exc:
            failed.append(failed_status(
                item.source, map_exception(exc, source=item.source.venue), clock()))
    now = clock()
    collected = admitted_quotes(
        concat_frames(frames, PRICE_COLUMNS), {v.source.venue: v.symbols for v in venues}, now,
        quote_policy(settings), failed=failed,
        endpoint_overrides={v.source.venue: v.source.endpoint_override for v in venues})
    frame = validate_frame(collected.frame, price_schema(), source="all")
    for status in collected.sources:
        if status.venue in {f.venue for f in failed}:
            continue
        label = f"{status.venue}:{status.account}"
        age = data_age_s(frame[frame["venue"] == status.venue], now, "timestamp")
        if age is not None:
            DATA_AGE.labels(kind=status.kind.value, source=label).set(age)
        SOURCE_UP.labels(kind=status.kind.value, source=label).set(int(status.ok))
        if not status.ok:
            kind = _ADMISSION_ERRORS.get(status.error_code or "", DataValidationError)
            record_error(kind(status.error or "", source=status.venue))
            log.warning("quotes not admitted; the venue's limits read as UNKNOWN",
                        venue=status.venue, error_code=status.error_code, error=status.error)
    return replace(collected, frame=frame)


# --- the two snapshots ---------------------------------------------------------------------------
class RestMarketData:
    """Quotes straight from the venues: one bulk ``fetch_tickers(symbols)`` per venue."""

    via = "rest"

    def __init__(self, accounts: Sequence[TickerSource], symbols: Mapping[str, Sequence[str]],
                 settings: MarketDataSettings, clock: Clock = utc_now) -> None:
        self._accounts = accounts
        self._symbols = symbols
        self._settings = settings
        self._clock = clock

    def latest_prices(self) -> Collected:
        venues = []
        for account in self._accounts:
            symbols = tuple(self._symbols.get(account.venue, ()))
            venues.append(VenueQuotes(
                source=Source(kind=SourceKind.MARKET, venue=account.venue, account="*",
                              fetch=_ticker_fetch(account, symbols),
                              endpoint_override=account.endpoint_override),
                symbols=symbols))
        return collect_quotes(venues, self._settings, self._clock)


def _ticker_fetch(account: TickerSource, symbols: Sequence[str]) -> Callable[[], pd.DataFrame]:
    return lambda: account.fetch_tickers(list(symbols) or None)


class RedisMarketData:
    """Quotes from the Redis cache the stream consumer keeps (no venue call at all)."""

    via = "redis"

    def __init__(self, cache: RedisQuoteCache, symbols: Mapping[str, Sequence[str]],
                 settings: MarketDataSettings, clock: Clock = utc_now,
                 endpoint_overrides: Mapping[str, str | None] | None = None) -> None:
        self._cache = cache
        self._symbols = symbols
        self._settings = settings
        self._clock = clock
        self._overrides = dict(endpoint_overrides or {})

    def latest_prices(self) -> Collected:
        venues = [
            VenueQuotes(source=Source(kind=SourceKind.MARKET, venue=venue, account="*",
                                      fetch=_cache_fetch(self._cache, venue),
                                      endpoint_override=self._overrides.get(venue)),
                        symbols=tuple(symbols))
            for venue, symbols in self._symbols.items()
        ]
        return collect_quotes(venues, self._settings, self._clock)


def _cache_fetch(cache: RedisQuoteCache, venue: str) -> Callable[[], pd.DataFrame]:
    def fetch() -> pd.DataFrame:
        try:
            return cache.read(venue)
        except Exception as exc:
            raise map_exception(exc, source=venue, endpoint="redis:hgetall") from exc
    return fetch


def resolve_source(settings: Settings) -> str:
    """``redis`` or ``rest`` from ``settings.market_data.source`` (auto: Redis when configured)."""
    choice = settings.market_data.source
    if choice == "auto":
        return "redis" if settings.redis_url else "rest"
    if choice == "redis" and not settings.redis_url:
        raise ConfigError("market_data.source is 'redis' but redis_url is not set",
                          key="market_data.source")
    return choice


def symbols_by_venue(settings: Settings) -> dict[str, tuple[str, ...]]:
    """Configured instruments per venue id (accounts of one venue share its quotes)."""
    found: dict[str, list[str]] = {}
    for venue in settings.venues:
        bucket = found.setdefault(venue.id, [])
        bucket.extend(s for s in venue.symbols if s not in bucket)
    return {k: tuple(v) for k, v in found.items()}


def redis_client(url: str) -> Any:
    """A sync Redis client with short timeouts (a Dagster run must never hang on Redis)."""
    import redis

    return redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)
