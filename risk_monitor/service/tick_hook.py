"""Every tick, as ccxt.pro parses it: a per-message hook on the exchange's message handler.

``watch_tickers`` resolves one future per read and conflates: past ~1k messages/s the consumer
sees a fraction of the updates (FACTS.md). ccxt.pro's venue parsers are kept, but the hook wraps
the exchange's ``handle_message``: after ccxt parsed a message into ``exchange.tickers``, the
tickers that message named are handed on at once, one call per message, no future and no frame
per tick (~8-10k messages/s per process instead of ~1k). The symbols a message names come from
its market ids (``s`` on Binance, ``instId`` on OKX); a message of another shape (or a venue
not recognised) falls back to comparing the ticker cache's entries by identity.

Binance ticker events (``24hrMiniTicker``, ``24hrTicker``: the ones ``watch_ticker(s)``
subscribes) skip ccxt's parser altogether: their fields are read directly (close ``c``, event
time ``E``, and ``b``/``a`` when present) into the same unified-ticker shape, ~15x cheaper than
ccxt's ``parse_ws_ticker`` (profiled at ~40 % of the feed's CPU). Every other message (acks,
other venues, an id naming several markets) still goes through ccxt. Ticks parsed that way do
not enter ``exchange.tickers`` and resolve no ``watch_tickers`` future; the feed knows the
stream is alive from :attr:`TickHook.last_delivery`. The per-tick float checks run downstream
on either path (``VenueFeed._on_hooked``).

The other patches of ccxt.pro's websocket ``Client`` the feed installs are here too: one receive
task per connection (:func:`receive_in_one_task`) and a message handler that survives a message
it cannot parse (:func:`guard_message_handler`).
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ccxt.base.errors import NetworkError

from risk_monitor.domain.figures import finite

#: what the hook hands on: (symbol, ccxt unified ticker) of one message
Tickers = list[tuple[str, Mapping[str, Any]]]

#: exchanges whose ticker events are read directly (module docstring)
BINANCE_IDS = frozenset({"binance", "binanceusdm", "binancecoinm"})
#: Binance websocket events carrying a last price (``c``) and an event time (``E``)
BINANCE_TICKER_EVENTS = frozenset({"24hrMiniTicker", "24hrTicker"})


def binance_ticker(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """A Binance ticker event as a unified ticker (strings left to the float checks
    downstream); None when it is not one or lacks its price or time."""
    if event.get("e") not in BINANCE_TICKER_EVENTS:
        return None
    close, stamp = event.get("c"), event.get("E")
    if close is None or not isinstance(stamp, int) or isinstance(stamp, bool):
        return None
    return {"last": close, "timestamp": stamp, "bid": event.get("b"), "ask": event.get("a"),
            "markPrice": None}


def _market_ids(message: object) -> list[str] | None:
    """Market ids a ticker message names; None when its shape is not known."""
    items: Iterable[object]
    if isinstance(message, list):
        items = message
    elif isinstance(message, Mapping):
        data = message.get("data")
        arg = message.get("arg")
        if isinstance(arg, Mapping) and isinstance(data, list):  # okx
            items = data
        elif "s" in message:  # binance (single stream)
            items = (message,)
        elif isinstance(data, Mapping) and "s" in data:  # binance combined stream
            items = (data,)
        else:
            return None
    else:
        return None
    ids = []
    for item in items:
        if isinstance(item, Mapping):
            found = item.get("s") or item.get("instId")
            if isinstance(found, str):
                ids.append(found)
    return ids


class TickHook:
    """Installs the per-message hook on one ccxt.pro exchange (module docstring)."""

    def __init__(self, symbols: Sequence[str], deliver: Callable[[Tickers], None]) -> None:
        self.wanted = frozenset(symbols) if symbols else None
        self.deliver = deliver
        self.messages = 0
        self.direct = 0  # messages read without ccxt's parser
        #: ``time.monotonic()`` of the last delivery (the stream is alive)
        self.last_delivery: float | None = None
        self._symbols_by_id: dict[str, list[str]] = {}

    def _direct(self, exchange: Any, message: object) -> bool:
        """Deliver a Binance ticker event without ccxt; False when it is not one."""
        if not isinstance(message, dict):
            return False
        ticker = binance_ticker(message)
        market_id = message.get("s")
        if ticker is None or not isinstance(market_id, str):
            return False
        symbols = self._symbols(exchange, market_id)
        if len(symbols) != 1:
            return False  # unknown or ambiguous id: ccxt's own resolution decides
        symbol = symbols[0]
        self.direct += 1
        if self.wanted is None or symbol in self.wanted:
            self.messages += 1
            self.last_delivery = time.monotonic()
            self.deliver([(symbol, ticker)])
        return True

    def install(self, exchange: Any) -> None:
        """Wrap ``exchange.handle_message`` (before any websocket client is created)."""
        inner = exchange.handle_message
        direct = str(getattr(exchange, "id", "")) in BINANCE_IDS

        def handle_message(client: Any, message: object) -> Any:
            if direct and self._direct(exchange, message):
                return None
            before = None
            ids = _market_ids(message)
            if ids is None:
                before = dict(exchange.tickers or {})
            result = inner(client, message)
            tickers = exchange.tickers or {}
            if ids is None:
                assert before is not None
                changed = [(s, t) for s, t in tickers.items() if before.get(s) is not t]
            else:
                changed = []
                for market_id in ids:
                    for symbol in self._symbols(exchange, market_id):
                        ticker = tickers.get(symbol)
                        if ticker is not None:
                            changed.append((symbol, ticker))
            if self.wanted is not None:
                changed = [(s, t) for s, t in changed if s in self.wanted]
            if changed:
                self.messages += 1
                self.last_delivery = time.monotonic()
                self.deliver(changed)
            return result

        exchange.handle_message = handle_message

    def _symbols(self, exchange: Any, market_id: str) -> list[str]:
        known = self._symbols_by_id.get(market_id)
        if known is None:
            markets = (getattr(exchange, "markets_by_id", None) or {}).get(market_id) or []
            known = [str(m["symbol"]) for m in markets if isinstance(m, Mapping)]
            if known:
                self._symbols_by_id[market_id] = known
        return known


def receive_in_one_task(ws: Any, tasks: set[asyncio.Future[Any]]) -> None:
    """Replace the receive loop of one ccxt.pro websocket ``Client`` by one task per connection.

    ccxt's ``Client.receive_loop`` creates a task per message and handles the message in that
    task's done callback, which then schedules the next ``receive_loop``: each message costs a
    task and reaches the hook two loop turns after its frame was read (every turn's ``epoll``
    gives the interpreter lock away, and a busy evaluation thread keeps it a switch interval).
    Here one task awaits ``receive()`` and handles each message at once; buffered messages are
    read without a loop turn. The rest is ccxt's: an error rejects the client's futures, a
    closed connection ends with ``on_close(1006)``; ``open()`` starts it (``tasks`` keeps it).
    """

    async def receive() -> None:
        while not ws.closed():
            try:
                message = await ws.receive()
            except asyncio.CancelledError:
                return  # shutdown or reconnect (as ccxt's loop)
            except Exception as exc:
                ws.reject(NetworkError(str(exc)))
                return
            ws.handle_message(message)
        ws.on_close(1006)

    def start() -> None:
        task = asyncio.ensure_future(receive())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    ws.receive_loop = start


def ticker_row(venue: str, symbol: str, ticker: Mapping[str, Any],
               market: Mapping[str, Any] | None, received: datetime) -> dict[str, Any] | None:
    """One ccxt unified ticker as a quote row (the PRICE columns; ``mark`` falls back to
    ``last``, a ticker without a timestamp is stamped with the receive time), floats only."""
    last = finite(ticker.get("last"))
    if last is None:
        last = finite(ticker.get("close"))
    if last is None:
        return None
    mark = finite(ticker.get("markPrice"))
    stamp = ticker.get("timestamp")
    timestamp = (datetime.fromtimestamp(stamp / 1000.0, UTC)
                 if isinstance(stamp, (int, float)) and math.isfinite(stamp) else received)
    base, quote = "", ""
    if market is not None:
        base, quote = str(market.get("base") or ""), str(market.get("quote") or "")
    else:
        left, _, right = symbol.partition("/")
        base, quote = left, right.partition(":")[0]
    return {"venue": venue, "instrument": symbol, "base": base, "quote": quote,
            "bid": finite(ticker.get("bid")), "ask": finite(ticker.get("ask")), "last": last,
            "mark": last if mark is None else mark, "timestamp": timestamp,
            "received_at": received}


def guard_message_handler(exchange: Any, on_unparseable: Callable[[BaseException], None],
                          tasks: set[asyncio.Future[Any]]) -> None:
    """Survive a message that cannot be decoded or parsed (a truncated frame, a NaN price).

    ccxt.pro's websocket ``Client`` re-arms its receive loop only after ``handle_message``
    returns: one exception there (its JSON decoding or the exchange's parser) silently stops
    the connection from delivering anything, for good. Every ``Client`` the exchange creates
    gets its public ``handle_message`` wrapped: the message is dropped and handed to
    ``on_unparseable`` (the feed counts it as ``rejected_unparseable``) and the loop lives on
    (in one task: :func:`receive_in_one_task`, which ``tasks`` keeps).
    """
    make_client = exchange.client
    guarded: weakref.WeakSet[Any] = weakref.WeakSet()

    def client(url: str) -> Any:
        ws = make_client(url)
        if ws not in guarded:
            guarded.add(ws)
            inner = ws.handle_message

            def handle_message(message: Any) -> Any:
                try:
                    return inner(message)
                except Exception as exc:
                    on_unparseable(exc)
                    return None

            ws.handle_message = handle_message
            receive_in_one_task(ws, tasks)
        return ws

    exchange.client = client
