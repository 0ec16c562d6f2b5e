"""One read-only adapter for any ccxt venue: positions, balances and tickers as dataset frames.

Built from :class:`VenueSettings` alone, so a simulator and production differ only by
``endpoint_override``. The client is read-only by construction
(:mod:`risk_monitor.adapters.ccxt_client`); payloads become frames in
:mod:`risk_monitor.adapters.ccxt_mapping`. Each Dagster run is a fresh process
(docs/benchmarks.md "Sensor path"), so ``shared=True`` accounts share one client per venue
settings and credentials (one connection pool and rate limiter, markets loaded once) and market
lists are kept on disk (:class:`MarketsCache`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from risk_monitor.adapters.ccxt_client import (
    DEFAULT_OPTIONS,
    build_client,
    venue_credentials,
)
from risk_monitor.adapters.ccxt_mapping import map_balance, map_positions, map_tickers
from risk_monitor.adapters.ccxt_ticker_rows import parse_tickers_each, ticker_items
from risk_monitor.adapters.errors import map_exception, with_retry_after
from risk_monitor.adapters.row_validation import RejectedRow, log_rejected
from risk_monitor.platform.clock import Clock, utc_now
from risk_monitor.platform.errors import (
    DataValidationError,
    RiskMonitorError,
    SourceAuthenticationError,
)
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.resilience import SourceGuard, guard_for
from risk_monitor.platform.settings import Settings, VenueSettings

log = get_logger(__name__)


# --- markets cache and shared clients ---------------------------------------------------------------
#: how long a venue's market list read from disk stays valid. Contract sizes and precisions feed
#: position quantities, so keep it short of a trading day: a long-lived ccxt client (the stream)
#: never reloads its markets at all, a run older than this reloads them from the venue.
MARKETS_TTL_S = 3600.0
MARKETS_DIR = "ccxt-markets"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:20]


class MarketsCache:
    """Venue market lists on disk, so a fresh process (every Dagster run) skips ``load_markets``.

    One file per (exchange, endpoint, options, public/private), written atomically; older than
    ``ttl_s`` is not cached. A cached list missing a configured symbol, a ``BadSymbol`` from the
    venue, or any I/O or decoding problem, and the venue is asked, as without a cache.
    """

    def __init__(self, directory: Path, ttl_s: float = MARKETS_TTL_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self.ttl_s = ttl_s
        self._clock = clock

    @classmethod
    def for_settings(cls, settings: Settings) -> MarketsCache:
        return cls(settings.data_dir / MARKETS_DIR)

    def path(self, venue: VenueSettings, *, private: bool) -> Path:
        options = json.dumps({**DEFAULT_OPTIONS, **venue.options}, sort_keys=True, default=str)
        key = _digest(venue.exchange, venue.endpoint_override or "production", options,
                      "private" if private else "public")
        return self.directory / f"{venue.exchange}-{key}.json"

    def load(self, venue: VenueSettings, *, private: bool
             ) -> tuple[list[dict[str, Any]], dict[str, Any] | None] | None:
        path = self.path(venue, private=private)
        try:
            if self._clock() - path.stat().st_mtime > self.ttl_s:
                return None
            document = json.loads(path.read_bytes())
            markets, currencies = document["markets"], document.get("currencies")
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not isinstance(markets, list) or not markets:
            return None
        return markets, currencies if isinstance(currencies, dict) and currencies else None

    def store(self, venue: VenueSettings, client: Any, *, private: bool) -> None:
        path = self.path(venue, private=private)
        try:
            body = json.dumps({"exchange": venue.exchange, "stored_at": self._clock(),
                               "markets": list((client.markets or {}).values()),
                               "currencies": client.currencies or None})
            self.directory.mkdir(parents=True, exist_ok=True)
            self._prune()
            scratch = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            scratch.write_text(body)
            os.replace(scratch, path)
        except (OSError, TypeError, ValueError) as exc:  # not JSON-able or not writable: no cache
            log.debug("markets not cached", venue=venue.id, error=type(exc).__name__)

    def invalidate(self, venue: VenueSettings, *, private: bool) -> None:
        with contextlib.suppress(OSError):
            self.path(venue, private=private).unlink(missing_ok=True)

    def _prune(self) -> None:
        now = self._clock()
        for old in [*self.directory.glob("*.json"), *self.directory.glob("*.tmp")]:
            try:
                if now - old.stat().st_mtime > self.ttl_s:
                    old.unlink(missing_ok=True)
            except OSError:
                continue


_shared: dict[tuple[str, ...], Any] = {}
_shared_lock = threading.Lock()
#: clients whose markets came from the disk cache (a BadSymbol then means "reload them")
_CACHED_MARKETS: weakref.WeakSet[Any] = weakref.WeakSet()


def shared_client(venue: VenueSettings, *, with_credentials: bool = True) -> Any:
    """One read-only sync ccxt client per venue settings and credentials, per process.

    The key holds the whole venue configuration and a digest of the credential values (never
    the values), so a changed endpoint, option or secret gets a client of its own.
    """
    credentials = venue_credentials(venue) if with_credentials else {}
    key = (venue.model_dump_json(), "private" if with_credentials else "public",
           _digest(*(f"{k}={v}" for k, v in sorted(credentials.items()))))
    with _shared_lock:
        client = _shared.get(key)
        if client is None:
            client = _shared[key] = build_client(venue, flavour="sync",
                                                 with_credentials=with_credentials)
        return client


# --- the adapter -------------------------------------------------------------------------------------
class CcxtExchangeAccount:
    """Read-only view of one exchange account through ccxt (implements ``ExchangeAccount``).

    The ccxt client is built at first use, so a bad venue configuration fails that venue's
    fetch (and only it) with a clear error instead of breaking the whole collection.
    """

    def __init__(self, venue: VenueSettings, *, guard: SourceGuard, clock: Clock = utc_now,
                 with_credentials: bool = True, shared: bool = False,
                 markets_cache: MarketsCache | None = None) -> None:
        self.settings = venue
        self.venue = venue.id
        self.account = venue.account
        self.exchange_id = venue.exchange
        self.endpoint_override = venue.endpoint_override  # for asset metadata (not a secret)
        self._guard = guard
        self._clock = clock
        self._client: Any | None = None
        self._with_credentials = with_credentials
        self._credentials_checked = not with_credentials
        self._shared = shared
        self._markets_cache = markets_cache
        self._timeout_s = venue.timeout_ms / 1000.0 * 2 + 1.0  # backstop over ccxt's own timeout

    @classmethod
    def from_settings(cls, settings: Settings, venue: VenueSettings, *,
                      with_credentials: bool = True, shared: bool = False) -> CcxtExchangeAccount:
        """``shared``: the process-wide client of these settings and the markets cache in
        ``settings.data_dir`` (what Dagster runs use); otherwise a client of its own."""
        return cls(venue, guard=guard_for(settings, venue.id), with_credentials=with_credentials,
                   shared=shared, markets_cache=MarketsCache.for_settings(settings)
                   if shared else None)

    @property
    def client(self) -> Any:
        """The read-only ccxt client (built on first use); for inspection, not for trading."""
        if self._client is None:  # a sync client: shared by the process, or this account's own
            self._client = (shared_client if self._shared else build_client)(
                self.settings, with_credentials=self._with_credentials)
        return self._client

    # -- plumbing ---------------------------------------------------------------------------------
    def _call(self, endpoint: str, fn: Callable[[], Any]) -> Any:
        def attempt() -> Any:
            try:
                return fn()
            except Exception as exc:
                mapped = with_retry_after(
                    map_exception(exc, source=self.venue, endpoint=endpoint),
                    getattr(self._client, "last_response_headers", None))
                mapped.details.setdefault("account", self.account)
                raise mapped from exc

        return self._guard.call(endpoint, attempt, timeout_s=self._timeout_s)

    def _markets(self) -> Mapping[str, Mapping[str, Any]]:
        markets = self.client.markets
        if not markets and self._markets_cache is not None:
            markets = self._cached_markets(self.client)
        return markets or self._load_markets(reload=False) or {}

    def _load_markets(self, *, reload: bool) -> Any:
        """Markets from the venue, kept on disk when there is a cache."""
        client = self.client
        markets = self._call("load_markets", lambda: client.load_markets(reload=reload))
        if self._markets_cache is not None and markets:
            self._markets_cache.store(self.settings, client, private=self._with_credentials)
        return markets

    def _cached_markets(self, client: Any) -> Mapping[str, Mapping[str, Any]] | None:
        """Markets from disk when fresh and complete (every configured symbol listed)."""
        assert self._markets_cache is not None
        found = self._markets_cache.load(self.settings, private=self._with_credentials)
        if found is None:
            return None
        markets, currencies = found
        try:
            client.set_markets(markets, currencies)
        except Exception as exc:  # an unreadable cache must never cost the venue: ask it
            log.debug("cached markets rejected", venue=self.venue, error=type(exc).__name__)
            client.markets = None
            return None
        loaded = client.markets or {}
        if any(symbol not in loaded for symbol in self.settings.symbols):
            client.markets = None  # a listing newer than the cache: reload from the venue
            return None
        _CACHED_MARKETS.add(client)
        return loaded

    def _fresh_markets_on_bad_symbol(self, endpoint: str, fn: Callable[[], Any]) -> Any:
        """Call ``fn``; when markets came from the cache and the venue (or ccxt) does not know a
        symbol, drop the cache, reload the markets from the venue and call once more."""
        try:
            return self._call(endpoint, fn)
        except RiskMonitorError as exc:  # the error mapper names the library's class
            if not (self.client in _CACHED_MARKETS
                    and exc.details.get("library_error") == "BadSymbol"):
                raise
        assert self._markets_cache is not None
        log.info("cached markets out of date; reloading them from the venue", venue=self.venue,
                 endpoint=endpoint)
        self._markets_cache.invalidate(self.settings, private=self._with_credentials)
        _CACHED_MARKETS.discard(self.client)
        self._load_markets(reload=True)
        return self._call(endpoint, fn)

    # -- reads --------------------------------------------------------------------------------------
    def check_credentials(self) -> None:
        """Fail early and clearly when the credentials the settings name are not set."""
        missing = [getattr(self.settings, f) or f for f in ("api_key_env", "secret_env")
                   if not Settings.secret(getattr(self.settings, f), key=f)]
        required = getattr(self.client, "requiredCredentials", {}) or {}
        if required.get("password") and not Settings.secret(self.settings.password_env,
                                                            key="password_env"):
            missing.append(self.settings.password_env or "password_env")
        if missing:
            raise SourceAuthenticationError(
                f"venue {self.venue!r} account {self.account!r}: credentials missing; set the "
                f"environment variable(s) {', '.join(missing)} named in the venue settings",
                source=self.venue, details={"missing_env": missing})

    def fetch_positions(self) -> pd.DataFrame:
        """Every open position of the account: one bulk ``fetch_positions()`` call."""
        raw = self._signed_read("fetch_positions", self.client.fetch_positions)
        return self._mapped("fetch_positions", map_positions, raw, venue=self.venue,
                            account=self.account, markets=self.client.markets or {})

    def fetch_balances(self) -> pd.DataFrame:
        """Wallet balances of the account (see the module doc for the convention)."""
        raw = self._signed_read("fetch_balance", self.client.fetch_balance)
        return self._mapped("fetch_balance", map_balance, raw, exchange_id=self.exchange_id,
                            venue=self.venue, account=self.account)

    def fetch_tickers(self, symbols: Sequence[str] | None = None) -> pd.DataFrame:
        """Latest tickers of ``symbols`` (all when empty) in one bulk ``fetch_tickers`` call."""
        self._markets()
        wanted = list(symbols) if symbols else None
        client = self.client
        rejected: list[RejectedRow] = []
        try:
            raw = self._fresh_markets_on_bad_symbol("fetch_tickers",
                                                    lambda: client.fetch_tickers(wanted))
        except DataValidationError:
            # ccxt's parser choked on one value: redo it item by item from the answer received,
            # so one bad ticker costs that ticker only, named with its field and value
            items = ticker_items(client.last_json_response)
            if items is None:
                raise
            raw, rejected = parse_tickers_each(client, items, venue=self.venue,
                                               account=self.account, symbols=wanted)
            for row in rejected:
                log_rejected(row)
        frame = self._mapped("fetch_tickers", map_tickers, raw, venue=self.venue,
                             markets=client.markets or {}, symbols=wanted)
        frame.attrs["rejected_rows"] = rejected
        return frame

    def _signed_read(self, endpoint: str, fn: Callable[[], Any]) -> Any:
        if not self._credentials_checked:
            self.check_credentials()
            self._credentials_checked = True
        self._markets()
        return self._fresh_markets_on_bad_symbol(endpoint, fn)

    def _mapped(self, endpoint: str, mapper: Callable[..., pd.DataFrame], raw: Any,
                **kwargs: Any) -> pd.DataFrame:
        """``mapper`` on a venue answer just received (markets as reloaded, if they were)."""
        try:
            return mapper(raw, received_at=self._clock(), **kwargs)
        except DataValidationError as exc:
            exc.source = self.venue
            exc.details.setdefault("endpoint", endpoint)
            raise

    def close(self) -> None:
        """Close this account's own client; a shared one belongs to the process."""
        if self._shared:
            return
        session = getattr(self._client, "session", None) if self._client is not None else None
        if session is not None:
            session.close()
