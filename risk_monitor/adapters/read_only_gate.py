"""One gate that every exchange and custodian HTTP request passes before a byte leaves the process.

A risk monitor often runs with keys that can trade, so read-only must hold by construction, not
by a list of method names a caller might go around. Each client gets a :class:`ReadOnlyGate`
holding an allowlist of ``(method, path)`` per venue: the endpoints the adapters' reads use
(``load_markets``, ``fetch_tickers``, ``fetch_balance``, ``fetch_positions``; Fireblocks
``get_paged_vault_accounts``) and the hosts the client is configured for. Anything else is
refused with :class:`ProductionPurityError`, a WARNING log line and the counter
``risk_monitor_refused_requests_total``, before a connection is opened.

The gate sits at two layers of every client, both calling :meth:`ReadOnlyGate.check`:

* ccxt (sync, ``async_support`` and ``pro``): the client's class is a subclass whose ``fetch``
  checks first, so ``request``, ``fetch2``, ``fetch`` and every public or implicit method are
  covered; below it the HTTP transport itself is gated (a ``requests`` adapter mounted on the
  sync session, the aiohttp connector's ``connect`` for async / pro), so even a caller that
  goes around ``fetch`` reaches the gate. Websocket handshakes (ccxt.pro) are allowed only as
  ``GET`` upgrades to the configured websocket hosts.
* Fireblocks SDK: the API client's ``call_api`` and the urllib3 pool manager's ``urlopen``.

A venue without an allowlist here gets no request through at all (fail closed): add its read
endpoints to :data:`CCXT_READ_ROUTES` after checking which ones the adapters call.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import Counter

from risk_monitor.platform.errors import ProductionPurityError
from risk_monitor.platform.logging import get_logger

log = get_logger(__name__)

REFUSED_REQUESTS = Counter(
    "risk_monitor_refused_requests_total",
    "HTTP requests to an exchange or custodian refused by the read-only gate before sending.",
    ["venue", "method"],
)

#: the read endpoints the ccxt adapters call, per ccxt exchange id (production paths, no prefix).
#: binanceusdm: load_markets, fetch_tickers, fetch_balance (v3 account), fetch_positions
#: (leverage brackets once, then v3 positionRisk); okx: the same four reads.
CCXT_READ_ROUTES: dict[str, tuple[tuple[str, str], ...]] = {
    "binanceusdm": (
        ("GET", "/fapi/v1/exchangeInfo"),
        ("GET", "/fapi/v1/ticker/24hr"),
        ("GET", "/fapi/v3/account"),
        ("GET", "/fapi/v1/leverageBracket"),
        ("GET", "/fapi/v3/positionRisk"),
        # trading-flow reads (adapters/ccxt_trades.py): the desk's fills and its income
        # (realised P&L, commissions, funding)
        ("GET", "/fapi/v1/userTrades"),
        ("GET", "/fapi/v1/income"),
        # the user-data stream's listen key (service/private_stream.py): a session for the
        # private websocket, no order, transfer or setting
        ("POST", "/fapi/v1/listenKey"),
        ("PUT", "/fapi/v1/listenKey"),
    ),
    "okx": (
        ("GET", "/api/v5/public/instruments"),
        ("GET", "/api/v5/asset/currencies"),  # okx's load_markets asks it when keys are set
        ("GET", "/api/v5/market/tickers"),
        ("GET", "/api/v5/account/balance"),
        ("GET", "/api/v5/account/positions"),
        # trading-flow reads (adapters/ccxt_trades.py): the desk's fills and bills (funding)
        ("GET", "/api/v5/trade/fills"),
        ("GET", "/api/v5/trade/fills-history"),
        ("GET", "/api/v5/account/bills"),
    ),
}
#: Fireblocks reads, relative to the API base path (``.../v1``): the vault listing only
FIREBLOCKS_READ_ROUTES: tuple[tuple[str, str], ...] = (("GET", "/vault/accounts_paged"),)


@dataclass(frozen=True)
class ReadOnlyGate:
    """The allowlist of one client: ``(method, path)`` pairs and the hosts it may reach."""

    venue: str
    routes: frozenset[tuple[str, str]]
    hosts: frozenset[str]
    prefix: str = ""
    websocket_hosts: frozenset[str] = field(default_factory=frozenset)

    def allows(self, method: str, url: str, *, websocket: bool = False) -> bool:
        parts = urlsplit(str(url))
        host = parts.netloc.lower()
        verb = str(method).upper()
        if websocket:
            return verb == "GET" and host in self.websocket_hosts
        if host not in self.hosts:
            return False
        path = parts.path
        if self.prefix:
            if not path.startswith(self.prefix + "/"):
                return False
            path = path[len(self.prefix):]
        return (verb, path) in self.routes

    def check(self, method: str, url: str, *, websocket: bool = False) -> None:
        """Return when allowed; otherwise count, log and raise before anything is sent."""
        if self.allows(method, url, websocket=websocket):
            return
        verb = str(method).upper()[:16]
        parts = urlsplit(str(url))
        REFUSED_REQUESTS.labels(venue=self.venue, method=verb).inc()
        # path only: a query string may carry a signature
        log.warning("request refused by the read-only gate", venue=self.venue, method=verb,
                    host=parts.netloc[:200], path=parts.path[:200])
        raise ProductionPurityError(
            f"{verb} {parts.path[:200]} on {parts.netloc[:200] or '?'} refused: Risk Monitor "
            f"only reads {self.venue} through its allowlisted read endpoints",
            source=self.venue, key=f"read_only_gate.{self.venue}",
            details={"method": verb, "path": parts.path[:200], "host": parts.netloc[:200]})


# --- ccxt -------------------------------------------------------------------------------------
def _hosts(urls: Any, hostname: str | None) -> set[str]:
    found: set[str] = set()
    if isinstance(urls, str):
        netloc = urlsplit(urls.replace("{hostname}", hostname or "")).netloc.lower()
        if netloc:
            found.add(netloc)
    elif isinstance(urls, Mapping):
        for value in urls.values():
            found |= _hosts(value, hostname)
    return found


def ccxt_gate(exchange: Any, venue: str, exchange_id: str, endpoint_override: str | None
              ) -> ReadOnlyGate:
    """The gate of a ccxt client whose ``urls['api']`` already points where it should."""
    api = dict(exchange.urls.get("api") or {})
    ws = api.pop("ws", None)
    hostname = getattr(exchange, "hostname", None)
    prefix = urlsplit(endpoint_override).path.rstrip("/") if endpoint_override else ""
    return ReadOnlyGate(venue=venue, routes=frozenset(CCXT_READ_ROUTES.get(exchange_id, ())),
                        hosts=frozenset(_hosts(api, hostname)), prefix=prefix,
                        websocket_hosts=frozenset(_hosts(ws, hostname)))


class _GatedRequestsAdapter:
    """A ``requests`` transport adapter that checks the gate, then sends with the original."""

    def __init__(self, gate: ReadOnlyGate, inner: Any) -> None:
        self.gate = gate
        self.inner = inner

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        self.gate.check(request.method or "GET", request.url or "")
        return self.inner.send(request, *args, **kwargs)

    def close(self) -> None:
        self.inner.close()


def gate_requests_session(session: Any, gate: ReadOnlyGate) -> None:
    """Route every request of a ``requests.Session`` through the gate (all schemes)."""
    for prefix in ("https://", "http://"):
        inner = session.get_adapter(prefix)
        if isinstance(inner, _GatedRequestsAdapter):
            inner = inner.inner
        session.mount(prefix, _GatedRequestsAdapter(gate, inner))


def gate_aiohttp_connector(connector: Any, gate: ReadOnlyGate) -> None:
    """Check the gate in the aiohttp connector's ``connect``: every request and websocket
    handshake asks it for a connection before a byte is written."""
    if getattr(connector, "_risk_monitor_gate", None) is gate:
        return
    original = connector.connect

    async def connect(req: Any, *args: Any, **kwargs: Any) -> Any:
        upgrade = str(req.headers.get("Upgrade", "")).lower() == "websocket"
        gate.check(req.method, str(req.url), websocket=upgrade)
        return await original(req, *args, **kwargs)

    connector.connect = connect
    connector._risk_monitor_gate = gate


def _gate_of(exchange: Any) -> ReadOnlyGate:
    gate = exchange.__dict__.get("read_only_gate")
    if not isinstance(gate, ReadOnlyGate):  # a client built outside ``install``: refuse all
        return ReadOnlyGate(venue=str(getattr(exchange, "id", "unknown")), routes=frozenset(),
                            hosts=frozenset())
    return gate


@functools.cache
def gated_class(cls: type) -> type:
    """A subclass of the ccxt exchange class ``cls`` whose ``fetch`` (every REST call of
    ccxt goes through it) and async ``open`` (the aiohttp session) pass the gate."""
    namespace: dict[str, Any] = {"__module__": __name__,
                                 "__doc__": f"{cls.__name__}, read-only by its gate."}
    original_fetch = cls.fetch  # type: ignore[attr-defined]
    if inspect.iscoroutinefunction(original_fetch):
        async def afetch(self: Any, url: str, method: str = "GET", headers: Any = None,
                         body: Any = None) -> Any:
            _gate_of(self).check(method, url)
            return await original_fetch(self, url, method, headers, body)

        original_open = cls.open  # type: ignore[attr-defined]

        def open_(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = original_open(self, *args, **kwargs)
            for connector in (getattr(self, "tcp_connector", None),
                              getattr(getattr(self, "session", None), "connector", None)):
                if connector is not None:
                    gate_aiohttp_connector(connector, _gate_of(self))
            return result

        namespace["fetch"] = afetch
        namespace["open"] = open_
    else:
        def fetch(self: Any, url: str, method: str = "GET", headers: Any = None,
                  body: Any = None) -> Any:
            _gate_of(self).check(method, url)
            return original_fetch(self, url, method, headers, body)

        namespace["fetch"] = fetch
    return type(f"ReadOnly{cls.__name__}", (cls,), namespace)


def install_ccxt_gate(exchange: Any, gate: ReadOnlyGate) -> None:
    """Attach ``gate`` to a client of a :func:`gated_class` and gate its sync transport."""
    exchange.__dict__["read_only_gate"] = gate
    session = getattr(exchange, "session", None)
    if session is not None and hasattr(session, "mount"):
        gate_requests_session(session, gate)


# --- Fireblocks -------------------------------------------------------------------------------
def fireblocks_gate(venue: str, base_path: str) -> ReadOnlyGate:
    parts = urlsplit(base_path)
    return ReadOnlyGate(venue=venue, routes=frozenset(FIREBLOCKS_READ_ROUTES),
                        hosts=frozenset({parts.netloc.lower()}),
                        prefix=parts.path.rstrip("/"))


def gate_urllib3_pool(pool_manager: Any, gate: ReadOnlyGate) -> None:
    """Check the gate in ``urlopen`` of a urllib3 pool manager (every ``request*`` ends there)."""
    if getattr(pool_manager, "_risk_monitor_gate", None) is gate:
        return
    original = pool_manager.urlopen

    @functools.wraps(original)
    def urlopen(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        gate.check(method, url)
        return original(method, url, *args, **kwargs)

    pool_manager.urlopen = urlopen
    pool_manager._risk_monitor_gate = gate
