"""One read-only adapter for any ccxt venue: positions, balances and tickers as dataset frames.

Built from :class:`VenueSettings` alone (ccxt exchange id, account, credentials from the
environment, options), so a simulator and production differ only by ``endpoint_override``.

Production purity, enforced here and tested:

* sandbox/testnet is refused: no ``set_sandbox_mode`` call, sandbox-like options raise
  :class:`ProductionPurityError`, and the client's own ``set_sandbox_mode`` is replaced by a
  refusal;
* a non-production host is reached only through ``endpoint_override`` (REST) and
  ``ws_endpoint_override`` (ccxt.pro): the scheme and host of every URL in
  ``exchange.urls['api']`` are rewritten, paths kept; the override is logged at WARNING once and
  exposed as :attr:`CcxtExchangeAccount.endpoint_override` for asset metadata;
* read-only by construction: every HTTP request of the client passes one gate
  (:mod:`risk_monitor.adapters.read_only_gate`) that allows only the venue's allowlisted read
  endpoints and hosts, at ``fetch`` and at the transport, so ``request`` / ``fetch2`` /
  ``fetch`` cannot trade either; on top, the client's write methods (orders, withdrawals,
  transfers, borrowing, leverage / margin / position-mode changes) and the implicit endpoints
  that place or change things are replaced by functions raising ``ProductionPurityError``, which
  fail with a clearer message.

Speed (each Dagster run is a fresh process, docs/benchmarks.md "Sensor path"): with
``shared=True`` accounts of the same venue settings and credentials share one ccxt client per
process (one connection pool, one rate limiter, markets loaded once for positions *and*
balances), and a venue's market list is kept on disk (:class:`MarketsCache`, ``data_dir``,
:data:`MARKETS_TTL_S`) so a run skips ``load_markets``; a cached list missing a configured
symbol, or a ``BadSymbol`` from the venue, reloads it from the venue.

Numbers: ccxt parses venue strings to Python floats; frames hold float64 (see
``domain/schemas.py``). Balance convention: ``total`` is the wallet balance EXCLUDING unrealised
P&L, ``used`` the margin locked in positions and orders (clipped to ``[0, total]``) and
``free = total - used``. ccxt's own ``total`` differs per venue (binanceusdm puts
``marginBalance`` = wallet + uPnL there, okx ``eq`` = equity incl. uPnL), so for those venues we
read the raw ``info`` (binanceusdm ``walletBalance`` / ``initialMargin``; okx ``cashBal`` /
``frozenBal``); other venues use ccxt's unified free / used / total as they come.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import pandas as pd

from risk_monitor.adapters.ccxt_ticker_rows import log_rejected, parse_tickers_each, ticker_items
from risk_monitor.adapters.errors import map_exception, typed_parser, with_retry_after
from risk_monitor.adapters.lazy_packages import CCXT, install_lazy_packages
from risk_monitor.adapters.read_only_gate import ccxt_gate, gated_class, install_ccxt_gate
from risk_monitor.adapters.row_validation import RejectedRow
from risk_monitor.domain.schemas import balances_frame, positions_frame, prices_frame
from risk_monitor.platform.clock import Clock, utc_now
from risk_monitor.platform.errors import (
    ConfigError,
    DataValidationError,
    ProductionPurityError,
    RiskMonitorError,
    SourceAuthenticationError,
)
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.purity import SANDBOX_OPTION_REFUSED, sandbox_option
from risk_monitor.platform.resilience import SourceGuard, guard_for
from risk_monitor.platform.settings import Settings, VenueSettings

log = get_logger(__name__)

Flavour = Literal["sync", "async", "pro"]

#: options every client gets unless the venue's settings say otherwise: we never need currency
#: metadata (a signed spot-wallet call on Binance) nor margin-market lists
DEFAULT_OPTIONS: dict[str, Any] = {"fetchCurrencies": False, "fetchMargins": False}

# unified methods that place, change or cancel orders, move funds or change account settings
_WRITE_UNIFIED = re.compile(
    r"^(create_(?!safe_dictionary|ohlcv|ccxt_trade_id|expired_option_market)\w+"
    r"|edit_\w+|cancel_\w+|withdraw\w*|transfer\w*|borrow_\w+|repay_\w+"
    r"|add_margin|reduce_margin|modify_margin_helper|set_margin\w*|set_leverage\w*"
    r"|set_position_mode|close_position\w*|close_all_positions\w*|redeem_\w+)$"
)
# implicit endpoints: DELETE / PUT / PATCH always change something; a POST does when its path
# names an order, a transfer or an account setting, unless it reads (venues such as Kraken POST
# their reads: OpenPositions, Balance, QueryOrders)
_WRITE_IMPLICIT_PATH = re.compile(
    r"(order|withdraw|transfer|leverage|margin|position|borrow|repay|loan|convert|"
    r"subaccount|sub-account|capital|dual|multiassets|pledge|stake|redeem|purchase|"
    r"lending|savings|earn|gift|trade|payment)",
    re.IGNORECASE,
)
_READ_IMPLICIT_PATH = re.compile(r"(open|closed|query|history|list|balance|info|status|"
                                 r"ledger|get|fetch|pending)", re.IGNORECASE)


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


_write_names: dict[type, frozenset[str]] = {}


def write_method_names(cls: type) -> frozenset[str]:
    """Names on a ccxt exchange class that write: unified methods and implicit endpoints."""
    cached = _write_names.get(cls)
    if cached is not None:
        return cached
    from ccxt.base.types import Entry

    names: set[str] = set()
    for klass in cls.__mro__:
        for name, value in vars(klass).items():
            if name.startswith("_"):
                continue
            if isinstance(value, Entry):
                method = str(value.method).upper()
                path = str(value.path)
                if method in ("DELETE", "PUT", "PATCH") or (
                        method == "POST" and _WRITE_IMPLICIT_PATH.search(path)
                        and not _READ_IMPLICIT_PATH.search(path)):
                    names.add(name)
            elif callable(value) and _WRITE_UNIFIED.match(_snake(name)):
                names.add(name)
    _write_names[cls] = frozenset(names)
    return _write_names[cls]


def _refusal(venue: str, name: str) -> Callable[..., Any]:
    def refuse(*_: Any, **__: Any) -> Any:
        raise ProductionPurityError(
            f"{name} is disabled: Risk Monitor reads {venue} and never trades, transfers or "
            "changes account settings", source=venue, key=f"venues.{venue}")
    refuse.__name__ = name
    refuse.__qualname__ = f"read_only.{name}"
    return refuse


def disable_write_methods(exchange: Any, venue: str) -> int:
    """Shadow every write method of ``exchange`` (instance attributes) with a refusal."""
    names = write_method_names(type(exchange))
    for name in names:
        setattr(exchange, name, _refusal(venue, name))
    for name in ("set_sandbox_mode", "setSandboxMode"):
        setattr(exchange, name, _refusal(venue, name))
    return len(names)


# --- endpoints -----------------------------------------------------------------------------------
def _rebase(url: str, base: str) -> str:
    """Replace scheme and host of ``url`` with ``base``'s, keeping the path (and base's prefix)."""
    target = urlsplit(base)
    original = urlsplit(url)
    prefix = target.path.rstrip("/")
    return urlunsplit((target.scheme, target.netloc, prefix + original.path, original.query,
                       original.fragment))


def rewrite_urls(urls: Any, base: str) -> Any:
    """Rebase every URL string in a (nested) ccxt ``urls['api']`` structure."""
    if isinstance(urls, str):
        return _rebase(urls, base)
    if isinstance(urls, Mapping):
        return {k: rewrite_urls(v, base) for k, v in urls.items()}
    return urls


_announced: set[tuple[str, str]] = set()
_announced_lock = threading.Lock()


def _announce_override(venue: VenueSettings, kind: str, url: str) -> None:
    with _announced_lock:
        if (venue.id, url) in _announced:
            return
        _announced.add((venue.id, url))
    log.warning("venue endpoint overridden: not the production host", venue=venue.id,
                kind=kind, endpoint_override=url)


def apply_endpoint_overrides(exchange: Any, venue: VenueSettings, *, websocket: bool) -> None:
    """Point the client at the configured non-production host(s), REST and websocket."""
    if websocket and (venue.endpoint_override is None) != (venue.ws_endpoint_override is None):
        raise ProductionPurityError(
            f"venue {venue.id!r}: endpoint_override and ws_endpoint_override must be set together; "
            "one alone would mix a non-production host with production",
            key=f"venues.{venue.id}.ws_endpoint_override", source=venue.id)
    api = dict(exchange.urls.get("api") or {})
    ws = api.pop("ws", None)
    if venue.endpoint_override:
        api = rewrite_urls(api, venue.endpoint_override)
        _announce_override(venue, "rest", venue.endpoint_override)
    if ws is not None:
        if websocket and venue.ws_endpoint_override:
            ws = rewrite_urls(ws, venue.ws_endpoint_override)
            _announce_override(venue, "websocket", venue.ws_endpoint_override)
        api["ws"] = ws
    exchange.urls["api"] = api


def _check_purity(venue: VenueSettings, options: Mapping[str, Any]) -> None:
    option = sandbox_option(options)
    if option is not None:
        raise ProductionPurityError(f"venue {venue.id!r}: option {option!r} "
                                    + SANDBOX_OPTION_REFUSED,
                                    key=f"venues.{venue.id}.options.{option}", source=venue.id)
    for field in ("endpoint_override", "ws_endpoint_override"):
        url = getattr(venue, field)
        if url is not None and not urlsplit(url).scheme:
            raise ConfigError(f"venue {venue.id!r}: {field} must be an absolute URL",
                              key=f"venues.{venue.id}.{field}")


def venue_credentials(venue: VenueSettings) -> dict[str, str]:
    """ccxt credential fields from the environment variables the settings name."""
    found: dict[str, str] = {}
    for ccxt_name, env_field in venue.CCXT_CREDENTIALS.items():
        value = Settings.secret(getattr(venue, env_field), key=f"venues.{venue.id}.{env_field}")
        if value is not None:
            found[ccxt_name] = value.get_secret_value()
    return found


def require_json_answers(exchange: Any, venue: str) -> None:
    """Make a 2xx answer that is not valid JSON an error (ccxt's ``BadResponse``).

    ccxt hands back the raw text when a body does not parse, and its parsers then read a
    truncated or HTML body as *no positions* or *no balances*: zero exposure. We refuse that
    through the client's public ``on_rest_response`` hook; error statuses keep ccxt's own
    handling so a 401 still reads as an authentication error.
    """
    from ccxt.base.errors import BadResponse

    original = exchange.on_rest_response

    def on_rest_response(code: Any, reason: Any, url: str, method: str,
                         response_headers: Any, response_body: Any, request_headers: Any,
                         request_body: Any) -> Any:  # ccxt's signature
        body = original(code, reason, url, method, response_headers, response_body,
                        request_headers, request_body)
        if 200 <= int(code) < 300 and isinstance(body, str) and body:
            try:
                json.loads(body)
            except ValueError:
                raise BadResponse(f"{venue} {method} {urlsplit(url).path}: HTTP {code} answer "
                                  f"is not valid JSON ({len(body)} bytes)") from None
        return body

    exchange.on_rest_response = on_rest_response


def load_sdk() -> None:
    """Import ccxt's base (the exchange classes load on first use), e.g. in a warm-up thread."""
    install_lazy_packages(CCXT)
    importlib.import_module("ccxt.base.exchange")


def build_client(venue: VenueSettings, *, flavour: Flavour = "sync",
                 with_credentials: bool = True) -> Any:
    """A ccxt (sync), ccxt.async_support or ccxt.pro client for ``venue``, read-only."""
    options = {**DEFAULT_OPTIONS, **venue.options}
    _check_purity(venue, options)
    if flavour == "pro":
        import ccxt.pro as module  # ≈ 1 s: only the stream pays for it
    elif flavour == "async":
        import ccxt.async_support as module
    else:
        install_lazy_packages(CCXT)  # only the exchange classes used: ~1 s less per run
        import ccxt as module
    cls = getattr(module, venue.exchange, None)
    if not isinstance(cls, type):
        raise ConfigError(f"venue {venue.id!r}: ccxt has no exchange {venue.exchange!r}"
                          + (" with websocket support" if flavour == "pro" else ""),
                          key=f"venues.{venue.id}.exchange")
    config: dict[str, Any] = {
        "enableRateLimit": venue.enable_rate_limit,
        "timeout": venue.timeout_ms,
        "options": options,
        # kept so a ccxt parser failure can be redone item by item (fetch_tickers)
        "enableLastJsonResponse": True,
    }
    if with_credentials:
        config.update(venue_credentials(venue))
    exchange = gated_class(cls)(config)
    if getattr(exchange, "isSandboxModeEnabled", False):
        raise ProductionPurityError(f"venue {venue.id!r}: the ccxt client is in sandbox mode",
                                    source=venue.id, key=f"venues.{venue.id}")
    apply_endpoint_overrides(exchange, venue, websocket=flavour == "pro")
    install_ccxt_gate(exchange, ccxt_gate(exchange, venue.id, venue.exchange,
                                          venue.endpoint_override))
    disable_write_methods(exchange, venue.id)
    require_json_answers(exchange, venue.id)
    return exchange


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

    One JSON file per (exchange, endpoint, options, public/private) under ``directory``, written
    atomically; files older than ``ttl_s`` are ignored and pruned. Any I/O or decoding problem
    reads as "not cached": the venue is asked, as without a cache.
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


def close_shared_clients() -> None:
    """Close and forget every shared client (process shutdown)."""
    with _shared_lock:
        clients = list(_shared.values())
        _shared.clear()
    for client in clients:
        session = getattr(client, "session", None)
        if session is not None:
            session.close()


# --- payload -> frame mapping (pure) ---------------------------------------------------------------
#: pandas' nanosecond timestamps end in 2262; anything later is not a venue clock
MAX_TIMESTAMP_MS = 9.2e15
def _num(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _nan(value: float) -> bool:
    return math.isnan(value)


def _opt(value: Any) -> float | None:
    number = _num(value)
    return None if _nan(number) else number


def _ts(ms: Any, fallback: datetime) -> pd.Timestamp | None:
    """Venue milliseconds -> UTC time; absent or unreadable -> ``fallback``; a number no clock
    can show (infinite, beyond year 2262) -> None, which the schema rejects for that row."""
    if ms is None or isinstance(ms, bool):
        return pd.Timestamp(fallback)
    try:
        number = float(ms)
    except (TypeError, ValueError, OverflowError):
        return pd.Timestamp(fallback)
    if math.isnan(number):
        return pd.Timestamp(fallback)
    if not math.isfinite(number) or abs(number) >= MAX_TIMESTAMP_MS:
        return None
    value = int(number)
    if value <= 0:
        return pd.Timestamp(fallback)
    return pd.Timestamp(value, unit="ms", tz="UTC")


def _market_codes(symbol: str, markets: Mapping[str, Mapping[str, Any]]) -> tuple[str, str, str]:
    market = markets.get(symbol) or {}
    base = market.get("base")
    quote = market.get("quote")
    settle = market.get("settle")
    if not base or not quote:
        pair, _, rest = symbol.partition(":")
        base, _, quote = pair.partition("/")
        settle = settle or rest.split("-")[0] or quote
    return str(base).upper(), str(quote).upper(), str(settle or quote).upper()


def _position_sign(position: Mapping[str, Any]) -> int:
    side = str(position.get("side") or "").lower()
    if side in ("long", "short"):
        return 1 if side == "long" else -1
    info = position.get("info") or {}
    declared = str(info.get("positionSide") or info.get("posSide") or "").lower()
    if declared in ("long", "short"):
        return 1 if declared == "long" else -1
    raw = _num(info.get("positionAmt", info.get("pos")))
    if not _nan(raw) and raw != 0:
        return 1 if raw > 0 else -1
    return 0


@typed_parser
def map_positions(positions: Iterable[Mapping[str, Any]], *, venue: str, account: str,
                  markets: Mapping[str, Mapping[str, Any]], received_at: datetime
                  ) -> pd.DataFrame:
    """ccxt unified positions -> POSITION_COLUMNS (closed positions dropped).

    ``quantity`` = contracts x contractSize x (+1 long / -1 short), in base units; hedge mode
    yields one row per side. ``timestamp`` is the venue's last update of the position.
    """
    rows: list[dict[str, Any]] = []
    for position in positions:
        contracts = abs(_num(position.get("contracts")))
        if contracts == 0:
            continue  # flat: venues list closed positions with zero size
        symbol = str(position.get("symbol") or "")
        market = markets.get(symbol) or {}
        contract_size = _num(position.get("contractSize") if position.get("contractSize")
                             is not None else market.get("contractSize"))
        sign = _position_sign(position)
        base, quote, settle = _market_codes(symbol, markets)
        mark = _num(position.get("markPrice"))
        quantity = contracts * contract_size * sign if sign else float("nan")
        margin_mode = str(position.get("marginMode") or "").lower()
        rows.append({
            "venue": venue, "account": account, "instrument": symbol,
            "base": base, "quote": quote, "settle": settle,
            "position_side": "long" if sign > 0 else "short" if sign < 0 else "",
            "contracts": contracts, "contract_size": contract_size, "quantity": quantity,
            "entry_price": _num(position.get("entryPrice")), "mark_price": mark,
            "notional": abs(quantity) * mark,
            "unrealized_pnl": _num(position.get("unrealizedPnl")),
            "realized_pnl": _opt(position.get("realizedPnl")),
            "leverage": _opt(position.get("leverage")),
            "liquidation_price": _opt(position.get("liquidationPrice")),
            "margin_mode": margin_mode if margin_mode in ("cross", "isolated") else "",
            "timestamp": _ts(position.get("lastUpdateTimestamp") or position.get("timestamp"),
                             received_at),
            "received_at": pd.Timestamp(received_at),
        })
    return positions_frame(rows)


def _wallet_rows_binance(info: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    assets = info.get("assets") if isinstance(info, Mapping) else None
    if not isinstance(assets, list):
        return None
    rows = []
    for entry in assets:
        if _num(entry.get("updateTime")) == 0:
            continue  # ccxt's rule too: uninitialised assets carry no valid balance
        rows.append({"asset": entry.get("asset"), "wallet": entry.get("walletBalance"),
                     "locked": entry.get("initialMargin"), "time": entry.get("updateTime")})
    return rows


def _wallet_rows_okx(info: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    data = info.get("data") if isinstance(info, Mapping) else None
    if not isinstance(data, list) or not data or not isinstance(data[0], Mapping):
        return None
    first = data[0]
    details = first.get("details")
    if not isinstance(details, list):
        return None
    return [{"asset": d.get("ccy"), "wallet": d.get("cashBal"), "locked": d.get("frozenBal"),
             "time": d.get("uTime") or first.get("uTime")} for d in details]


_WALLET_READERS: dict[str, Callable[[Mapping[str, Any]], list[dict[str, Any]] | None]] = {
    "binanceusdm": _wallet_rows_binance,
    "okx": _wallet_rows_okx,
}


@typed_parser
def map_balance(balance: Mapping[str, Any], *, exchange_id: str, venue: str, account: str,
                received_at: datetime) -> pd.DataFrame:
    """A ccxt balance structure -> BALANCE_COLUMNS (source_type 'exchange'), see module doc.

    All-zero assets are dropped (venues list every asset they support).
    """
    rows: list[dict[str, Any]] = []
    reader = _WALLET_READERS.get(exchange_id)
    wallet = reader(balance.get("info") or {}) if reader else None
    if wallet is not None:
        for entry in wallet:
            total = _num(entry["wallet"])
            locked = _num(entry["locked"])
            used = min(max(locked, 0.0), total) if not _nan(total) and total >= 0 else locked
            if total == 0 and (used == 0 or _nan(used)):
                continue
            rows.append({"asset": entry["asset"], "free": total - used, "used": used,
                         "total": total, "time": entry["time"]})
    else:
        skip = {"info", "timestamp", "datetime", "free", "used", "total", "debt"}
        for code, item in balance.items():
            if code in skip or not isinstance(item, Mapping):
                continue
            free, used, total = _num(item.get("free")), _num(item.get("used")), \
                _num(item.get("total"))
            if _nan(total) and not _nan(free) and not _nan(used):
                total = free + used
            if _nan(used) and not _nan(total) and not _nan(free):
                used = total - free
            if _nan(free) and not _nan(total) and not _nan(used):
                free = total - used
            if (total == 0 or _nan(total)) and (free == 0 and used == 0):
                continue
            rows.append({"asset": code, "free": free, "used": used, "total": total,
                         "time": balance.get("timestamp")})
    return balances_frame(
        {
            "source_type": "exchange", "venue": venue, "account": account,
            "asset": str(row["asset"] or "").upper(),
            "free": row["free"], "used": row["used"], "total": row["total"],
            "timestamp": _ts(row["time"], received_at),
            "received_at": pd.Timestamp(received_at),
        }
        for row in rows
    )


@typed_parser
def map_tickers(tickers: Mapping[str, Mapping[str, Any]], *, venue: str,
                markets: Mapping[str, Mapping[str, Any]], received_at: datetime,
                symbols: Sequence[str] | None = None) -> pd.DataFrame:
    """ccxt unified tickers -> PRICE_COLUMNS; ``mark`` falls back to ``last``.

    A ticker without a timestamp (some venues) is stamped with ``received_at``: its age is then
    our receive time, the best bound we have.
    """
    wanted = set(symbols) if symbols else None
    rows = []
    for symbol, ticker in tickers.items():
        if wanted is not None and symbol not in wanted:
            continue
        base, quote, _ = _market_codes(symbol, markets)
        last = _num(ticker.get("last"))
        if _nan(last):
            last = _num(ticker.get("close"))
        mark = _num(ticker.get("markPrice"))
        rows.append({
            "venue": venue, "instrument": symbol, "base": base, "quote": quote,
            "bid": _opt(ticker.get("bid")), "ask": _opt(ticker.get("ask")), "last": last,
            "mark": last if _nan(mark) else mark,
            "timestamp": _ts(ticker.get("timestamp"), received_at),
            "received_at": pd.Timestamp(received_at),
        })
    return prices_frame(rows)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``kind`` is anywhere in the chain of causes (retry layers re-raise, even an
    error from itself)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        pending += [current.__cause__, current.__context__]
    return False


# --- the adapter -------------------------------------------------------------------------------------
class CcxtExchangeAccount:
    """Read-only view of one exchange account through ccxt (implements ``ExchangeAccount``).

    The ccxt client is built at first use, so a bad venue configuration fails that venue's
    fetch (and only it) with a clear error instead of breaking the whole collection.
    """

    def __init__(self, venue: VenueSettings, *, guard: SourceGuard, clock: Clock = utc_now,
                 client: Any | None = None, with_credentials: bool = True, shared: bool = False,
                 markets_cache: MarketsCache | None = None) -> None:
        self.settings = venue
        self.venue = venue.id
        self.account = venue.account
        self.exchange_id = venue.exchange
        self._guard = guard
        self._clock = clock
        self._client = client
        self._with_credentials = with_credentials
        self._credentials_checked = not with_credentials
        self._shared = shared and client is None
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
    def endpoint_override(self) -> str | None:
        """The non-production REST endpoint in use, for asset metadata (never a secret)."""
        return self.settings.endpoint_override

    @property
    def client(self) -> Any:
        """The read-only ccxt client (built on first use); for inspection, not for trading."""
        if self._client is None:
            if self._shared:
                self._client = shared_client(self.settings,
                                             with_credentials=self._with_credentials)
            else:
                self._client = build_client(self.settings, flavour="sync",
                                            with_credentials=self._with_credentials)
        return self._client

    # -- plumbing ---------------------------------------------------------------------------------
    def _call(self, endpoint: str, fn: Callable[[], Any]) -> Any:
        def attempt() -> Any:
            try:
                return fn()
            except Exception as exc:
                raise self._map(exc, endpoint) from exc

        return self._guard.call(endpoint, attempt, timeout_s=self._timeout_s)

    def _map(self, exc: BaseException, endpoint: str) -> RiskMonitorError:
        mapped = with_retry_after(map_exception(exc, source=self.venue, endpoint=endpoint),
                                  getattr(self._client, "last_response_headers", None))
        mapped.details.setdefault("account", self.account)
        return mapped

    def _markets(self) -> Mapping[str, Mapping[str, Any]]:
        client = self.client
        markets = client.markets
        if not markets and self._markets_cache is not None:
            markets = self._cached_markets(client)
        if not markets:
            markets = self._call("load_markets", client.load_markets)
            if self._markets_cache is not None and markets:
                self._markets_cache.store(self.settings, client, private=self._with_credentials)
        return markets or {}

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
        from ccxt.base.errors import BadSymbol

        try:
            return self._call(endpoint, fn)
        except RiskMonitorError as exc:
            if not (self.client in _CACHED_MARKETS and _caused_by(exc, BadSymbol)):
                raise
        assert self._markets_cache is not None
        log.info("cached markets out of date; reloading them from the venue", venue=self.venue,
                 endpoint=endpoint)
        self._markets_cache.invalidate(self.settings, private=self._with_credentials)
        client = self.client
        _CACHED_MARKETS.discard(client)
        markets = self._call("load_markets", lambda: client.load_markets(reload=True))
        if markets:
            self._markets_cache.store(self.settings, client, private=self._with_credentials)
        return self._call(endpoint, fn)

    def _signed(self) -> None:
        if not self._credentials_checked:
            self.check_credentials()
            self._credentials_checked = True

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
        self._signed()
        self._markets()
        raw = self._fresh_markets_on_bad_symbol("fetch_positions", self.client.fetch_positions)
        received = self._clock()
        markets = self.client.markets or {}  # reloaded when the cached ones were out of date
        return self._mapped(lambda: map_positions(raw, venue=self.venue, account=self.account,
                                                  markets=markets, received_at=received),
                            "fetch_positions")

    def fetch_balances(self) -> pd.DataFrame:
        """Wallet balances of the account (see the module doc for the convention)."""
        self._signed()
        self._markets()
        raw = self._fresh_markets_on_bad_symbol("fetch_balance", self.client.fetch_balance)
        received = self._clock()
        return self._mapped(lambda: map_balance(raw, exchange_id=self.exchange_id,
                                                venue=self.venue, account=self.account,
                                                received_at=received), "fetch_balance")

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
        received = self._clock()
        markets = client.markets or {}
        frame = self._mapped(lambda: map_tickers(raw, venue=self.venue, markets=markets,
                                                 received_at=received, symbols=wanted),
                             "fetch_tickers")
        frame.attrs["rejected_rows"] = rejected
        return frame

    def _mapped(self, build: Callable[[], pd.DataFrame], endpoint: str) -> pd.DataFrame:
        try:
            return build()
        except DataValidationError as exc:
            exc.source = self.venue
            exc.details.setdefault("endpoint", endpoint)
            raise

    def close(self) -> None:
        """Close this account's own client; a shared one belongs to the process
        (:func:`close_shared_clients`)."""
        if self._shared:
            return
        session = getattr(self._client, "session", None) if self._client is not None else None
        if session is not None:
            session.close()
