"""Building a read-only ccxt client for one venue (sync, async or ccxt.pro).

Production purity, enforced here and tested:

* sandbox/testnet is refused: no ``set_sandbox_mode`` call, sandbox-like options raise
  :class:`ProductionPurityError`, and the client's own ``set_sandbox_mode`` is replaced by a
  refusal;
* a non-production host is reached only through ``endpoint_override`` (REST) and
  ``ws_endpoint_override`` (ccxt.pro): the scheme and host of every URL in
  ``exchange.urls['api']`` are rewritten, paths kept; the override is logged at WARNING once;
* read-only by construction: every HTTP request of the client passes the read-only gate
  (:mod:`risk_monitor.adapters.read_only_gate`, which says how); on top, the client's write
  methods (orders, withdrawals, transfers, borrowing, leverage / margin / position-mode changes)
  and the implicit endpoints that place or change things are replaced by functions raising
  ``ProductionPurityError``, which fail with a clearer message.
"""

from __future__ import annotations

import functools
import importlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from risk_monitor.adapters.lazy_packages import CCXT, install_lazy_packages
from risk_monitor.adapters.read_only_gate import ccxt_gate, gated_class, install_ccxt_gate
from risk_monitor.platform.errors import (
    ConfigError,
    ProductionPurityError,
)
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.purity import SANDBOX_OPTION_REFUSED, sandbox_option
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


@functools.cache
def write_method_names(cls: type) -> frozenset[str]:
    """Names on a ccxt exchange class that write: unified methods and implicit endpoints."""
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
    return frozenset(names)


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
    names = write_method_names(exchange.__class__)
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


@functools.cache  # once per venue and host
def _announce_override(venue: str, kind: str, url: str) -> None:
    log.warning("venue endpoint overridden: not the production host", venue=venue,
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
        _announce_override(venue.id, "rest", venue.endpoint_override)
    if ws is not None:
        if websocket and venue.ws_endpoint_override:
            ws = rewrite_urls(ws, venue.ws_endpoint_override)
            _announce_override(venue.id, "websocket", venue.ws_endpoint_override)
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
    """Import ccxt's base (exchange classes load on first use) in a warm-up thread
    (``risk_sim.demo.WARM_MODULES`` names it as ``module:function``)."""
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
