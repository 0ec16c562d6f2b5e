"""Latest quotes: REST snapshots through ccxt, or the Redis quote cache the stream keeps warm.

Which one is configuration only (``settings.market_data.source``): ``auto`` reads the Redis
cache when ``settings.redis_url`` is set (the service's stream consumer writes it), else takes a
REST snapshot (one bulk ``fetch_tickers(symbols)`` per venue).

The Redis layout and codec are ``adapters/redis_quotes.py``'s (the one owner of both); one
HGETALL of ``P:quotes:<venue>`` reads a venue.

Coverage, per venue: a structurally invalid answer fails the venue (no rows). Otherwise the
domain's admission rule (``domain/quotes.py``, the same one the hot path uses) keeps the fresh
and sane rows and names the rest: the venue's status is then ``ok=False`` (``RM300`` absurd,
``RM301`` stale, ``RM302`` missing) while its admitted rows stay usable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial

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
from risk_monitor.adapters.redis_quotes import RedisQuoteCache
from risk_monitor.domain.model import PRICE_COLUMNS, Collected, SourceKind, SourceStatus
from risk_monitor.domain.quotes import QuotePolicy, admitted_quotes
from risk_monitor.domain.schemas import concat_frames, price_rules, validate_frame
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
from risk_monitor.ports import TickerSource

log = get_logger(__name__)


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
            frames.append(validate_frame(item.source.fetch(), price_rules(),
                                         source=item.source.venue))
        except Exception as exc:  # ours as they are, a library's mapped to ours
            failed.append(failed_status(
                item.source, map_exception(exc, source=item.source.venue), clock()))
    now = clock()
    collected = admitted_quotes(
        concat_frames(frames, PRICE_COLUMNS), {v.source.venue: v.symbols for v in venues}, now,
        quote_policy(settings), failed=failed,
        endpoint_overrides={v.source.venue: v.source.endpoint_override for v in venues})
    frame = validate_frame(collected.frame, price_rules(), source="all")
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
                              fetch=partial(account.fetch_tickers, list(symbols) or None),
                              endpoint_override=account.endpoint_override),
                symbols=symbols))
        return collect_quotes(venues, self._settings, self._clock)


class RedisMarketData:
    """Quotes from the Redis cache the stream consumer keeps (no venue call at all)."""

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
