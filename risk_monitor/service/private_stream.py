"""Positions and fills from the venues' private websockets, fed to the hot path as they happen.

The hot path polls its ``ExchangeAccount``\\ s (``HotPath(accounts=...)``, its public seam); here
each account is a :class:`StreamedAccount` whose ``fetch_positions`` is a long poll: it returns
as soon as a private stream (ccxt.pro ``watch_positions``) changed a position, and otherwise
after ``trading.fill_rest_poll_s`` with a REST read (fallback and reconciliation of the stream's
view). Run the hot path's position poll with a short interval and a fill reaches the evaluation,
and its alert, within milliseconds of the venue's message instead of at the next 5 s poll.
Fills (``watch_my_trades``) go into a :class:`FillLedger`: recent fills for the dashboard and the
realised P&L rebuilt from them (``domain/realised.py``) next to the venue's own figure.

A stream that is down or silent never reads as "no change": its venue falls back to REST at once
and the stream reconnects with backoff. Nothing here trades: the ccxt.pro client is the same
read-only client (gate + disabled write methods); only Binance's listen-key keepalive is let
through, because the user-data stream dies without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from prometheus_client import Counter, Gauge

from risk_monitor.adapters.ccxt_trades import map_trade
from risk_monitor.adapters.errors import map_exception
from risk_monitor.domain.realised import Fill, RealisedPnl, apply_fill, settle_of
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.metrics import record_error
from risk_monitor.platform.settings import Settings, VenueSettings
from risk_monitor.ports import ExchangeAccount

log = get_logger(__name__)
#: longest long poll of a streamed account: positions are re-stamped at least this often
HEARTBEAT_S = 1.0
#: trades looked at per private-stream message (more than a burst of partial fills)
TRADE_TAIL = 200

STREAM_UP = Gauge("risk_monitor_private_stream_up",
                  "1 while a venue's private stream delivers positions, else 0 (REST fallback).",
                  ["venue"])
STREAM_EVENTS = Counter("risk_monitor_private_stream_events_total",
                        "Private-stream updates handled, by venue and kind.", ["venue", "kind"])


class PositionHub:
    """The streams' latest positions per venue and a change counter the accounts wait on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.version = 0
        self._frames: dict[str, pd.DataFrame] = {}
        self._alive: dict[str, bool] = {}
        self._closed = False
        #: (venue, account, instrument) -> (signed base quantity, average entry) at the first
        #: REST read: where the fill ledger's books start
        self._opening: dict[tuple[str, str, str], tuple[float, float]] = {}
        self._opened: set[str] = set()
        self._followers: list[str] = []

    def set_opening(self, venue: str, frame: pd.DataFrame) -> None:
        """Record the venue's positions once (the first REST read before any streamed fill)."""
        with self._cond:
            if venue in self._opened:
                return
            self._opened.add(venue)
            for venue_id, account, instrument, quantity, entry_price in zip(
                    frame["venue"], frame["account"], frame["instrument"], frame["quantity"],
                    frame["entry_price"], strict=True):
                key = (str(venue_id), str(account), str(instrument))
                qty, entry = self._opening.get(key, (0.0, 0.0))
                self._opening[key] = (qty + float(quantity),
                                      float(entry_price) if qty == 0 else entry)

    def opening_of(self, key: tuple[str, str, str]) -> tuple[float, float]:
        return self._opening.get(key, (0.0, 0.0))

    def publish(self, venue: str, frame: pd.DataFrame) -> None:
        with self._cond:
            self._frames[venue] = frame
            self._alive[venue] = True
            self.version += 1
            self._cond.notify_all()

    def set_alive(self, venue: str, alive: bool) -> None:
        with self._cond:
            if self._alive.get(venue) != alive:
                self._alive[venue] = alive
                if not alive:
                    self._frames.pop(venue, None)
                self.version += 1
                self._cond.notify_all()
        STREAM_UP.labels(venue=venue).set(1 if alive else 0)

    def alive(self, venue: str) -> bool:
        return self._alive.get(venue, False)

    def any_alive(self) -> bool:
        return any(self._alive.values())

    def register(self, venue: str) -> bool:
        """Note a follower of ``venue``; True for the hub's first (it waits for everyone)."""
        with self._cond:
            self._followers.append(venue)
            return len(self._followers) == 1

    def frame(self, venue: str) -> pd.DataFrame | None:
        return self._frames.get(venue)

    def wait_change(self, seen: int, timeout_s: float) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self.version != seen or self._closed,
                                timeout=max(0.0, timeout_s))
            return self.version

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class StreamedAccount:
    """An ``ExchangeAccount`` answering from the private stream, REST behind it."""

    def __init__(self, rest: ExchangeAccount, hub: PositionHub, *, rest_every_s: float,
                 fallback_every_s: float | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.rest = rest
        self.venue = rest.venue
        self.account = rest.account
        self.hub = hub
        self.rest_every_s = rest_every_s
        #: REST cadence while the venue has no live stream (none, down, reconnecting): the
        #: service's normal position poll, not the hot path's 20 ms long-poll loop
        self.fallback_every_s = fallback_every_s or rest_every_s
        self.clock = clock
        self._seen = -1
        self._was_alive = False
        self._last_rest = -math.inf
        #: the first account of the hub waits for the cycle; the others answer at once
        self.leads = hub.register(self.venue)
        self._baseline: pd.DataFrame | None = None
        self._balances: pd.DataFrame | None = None
        self._balances_at = -math.inf

    @property
    def endpoint_override(self) -> str | None:
        return self.rest.endpoint_override

    def fetch_tickers(self, symbols: Sequence[str] | None = None) -> pd.DataFrame:
        return self.rest.fetch_tickers(symbols)  # type: ignore[attr-defined, no-any-return]

    def fetch_positions(self) -> pd.DataFrame:
        """Long poll: the stream's positions as soon as they change, REST when it is due.

        The hot path reads its accounts one after the other, so only the first account of the
        hub waits (for a change on any venue, or a heartbeat); the others answer their current
        view at once. A venue without a live stream is read over REST at ``fallback_every_s``
        (at once when its stream just went down) and answers its last REST view in between."""
        if self._dropped():
            return self._rest()
        due = self._due()
        if time.monotonic() >= due:
            return self._rest()
        if self.leads and self._seen == self.hub.version:
            # a quiet stream still answers every HEARTBEAT_S: its view is current, and the hot
            # path must not see the positions age into "stale"; with no live stream anywhere
            # the cycle waits for the next REST read (or a stream coming up)
            left = due - time.monotonic()
            self._seen = self.hub.wait_change(
                self._seen, min(left, HEARTBEAT_S) if self.hub.any_alive() else left)
            if self._dropped() or time.monotonic() >= self._due():
                return self._rest()
        else:
            self._seen = self.hub.version
        streamed = self.hub.frame(self.venue)
        if streamed is not None and self.hub.alive(self.venue):
            return self._current(streamed)
        return self._baseline if self._baseline is not None else self._rest()

    def _dropped(self) -> bool:
        """True once when this venue's stream went down since the last read."""
        alive = self.hub.alive(self.venue)
        dropped = self._was_alive and not alive
        self._was_alive = alive
        return dropped

    def _due(self) -> float:
        every = self.rest_every_s if self.hub.alive(self.venue) else self.fallback_every_s
        return self._last_rest + every

    def _rest(self) -> pd.DataFrame:
        frame = self.rest.fetch_positions()
        self._last_rest = time.monotonic()
        self._seen = self.hub.version
        self._baseline = frame
        self.hub.set_opening(self.venue, frame)
        return frame

    def _current(self, streamed: pd.DataFrame) -> pd.DataFrame:
        """The stream's rows as of now (a connected stream is current), marks filled in from
        the last REST read where the stream gives none."""
        frame = streamed.copy()
        now = pd.Timestamp(self.clock()).as_unit("ns")
        for column in ("received_at", "timestamp"):
            frame[column] = pd.Series(now, index=frame.index, dtype="datetime64[ns, UTC]")
        if len(frame) and frame["mark_price"].isna().any():
            marks: dict[str, float] = {}
            if self._baseline is not None and len(self._baseline):
                marks = dict(zip(self._baseline["instrument"], self._baseline["mark_price"],
                                 strict=True))
            fill = frame["instrument"].map(marks).fillna(frame["entry_price"])
            frame["mark_price"] = frame["mark_price"].fillna(fill)
            frame["notional"] = frame["quantity"].abs() * frame["mark_price"]
        return frame

    def fetch_balances(self) -> pd.DataFrame:
        if self._balances is None or time.monotonic() - self._balances_at >= self.rest_every_s:
            self._balances = self.rest.fetch_balances()
            self._balances_at = time.monotonic()
        return self._balances


class FillLedger:
    """Fills seen on the private streams (or REST), newest last, with realised P&L books."""

    def __init__(self, capacity: int = 1000) -> None:
        self._lock = threading.Lock()
        self._recent: deque[tuple[datetime, Fill]] = deque(maxlen=capacity)
        self.books: dict[tuple[str, str, str], RealisedPnl] = {}
        #: where a new book starts: the position held before the first followed fill
        self.opening: Callable[[tuple[str, str, str]], tuple[float, float]] = \
            lambda _key: (0.0, 0.0)
        #: told of every new fill and the book's position after it (the trading control
        #: releases pending orders by them)
        self.listeners: list[Callable[[Fill, datetime, float], None]] = []

    def add(self, fill: Fill, seen_at: datetime) -> bool:
        """Book one fill; False when it was seen before (streams replay on reconnect)."""
        with self._lock:
            book = self.books.get(fill.key)
            if book is None:
                position, entry = self.opening(fill.key)
                book = self.books[fill.key] = RealisedPnl(
                    *fill.key, settle=settle_of(fill.instrument), position=position,
                    avg_entry=entry)
            before = book.fills
            apply_fill(book, fill)
            if book.fills == before:
                return False
            self._recent.append((seen_at, fill))
            position = book.position
        for listener in self.listeners:
            listener(fill, seen_at, position)
        return True

    def recent(self, limit: int = 100) -> list[tuple[datetime, Fill]]:
        with self._lock:
            return list(self._recent)[-limit:][::-1]

    def snapshot(self) -> list[RealisedPnl]:
        with self._lock:
            return [RealisedPnl(**{**b.__dict__, "trade_ids": set(),
                                   "foreign_fees": dict(b.foreign_fees)})
                    for b in self.books.values()]


def _cached_positions(client: Any) -> list[Any]:
    cache = client.positions
    if isinstance(cache, dict):  # binance keeps one cache per market type
        return [p for part in cache.values() for p in (part or [])]
    return list(cache or [])


class PrivateStreams:
    """One follower task per venue whose ccxt.pro client has private watches."""

    def __init__(self, settings: Settings, hub: PositionHub, ledger: FillLedger, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings = settings
        self.hub = hub
        self.ledger = ledger
        self.clock = clock
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for venue in self.settings.venues:
            self._tasks.append(asyncio.create_task(self._follow(venue),
                                                   name=f"private-stream-{venue.id}"))

    async def stop(self) -> None:
        self._stop.set()
        self.hub.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    async def _follow(self, venue: VenueSettings) -> None:
        delay = self.settings.market_data.reconnect_initial_s
        while not self._stop.is_set():
            client = None
            try:
                client = _pro_client(venue)
                if not (client.has.get("watchPositions") and client.has.get("watchMyTrades")):
                    log.info("private_stream_unavailable", venue=venue.id)
                    return
                await client.load_markets()
                await asyncio.gather(self._positions(venue, client),
                                     self._trades(venue, client))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = map_exception(exc, source=venue.id, endpoint="private_stream")
                record_error(error)
                log.warning("private_stream_down", venue=venue.id, error=str(error),
                            retry_in_s=delay)
            finally:
                self.hub.set_alive(venue.id, False)
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=delay)
            delay = min(delay * 2, self.settings.market_data.reconnect_max_s)

    async def _positions(self, venue: VenueSettings, client: Any) -> None:
        from risk_monitor.adapters.ccxt_exchange import map_positions

        symbols = list(venue.symbols) or None
        while not self._stop.is_set():
            await client.watch_positions(symbols)
            frame = map_positions(_cached_positions(client), venue=venue.id,
                                  account=venue.account, markets=client.markets or {},
                                  received_at=self.clock())
            self.hub.publish(venue.id, frame)
            STREAM_EVENTS.labels(venue=venue.id, kind="positions").inc()

    async def _trades(self, venue: VenueSettings, client: Any) -> None:
        while not self._stop.is_set():
            await client.watch_my_trades()
            # the cache is bounded (it stops growing when full): look at its tail, the
            # ledger drops what it has seen
            for trade in list(client.myTrades or [])[-TRADE_TAIL:]:
                fill = map_trade(trade, venue=venue.id, account=venue.account,
                                 markets=client.markets or {})
                if self.ledger.add(fill, self.clock()):
                    STREAM_EVENTS.labels(venue=venue.id, kind="fill").inc()


def _pro_client(venue: VenueSettings) -> Any:
    from risk_monitor.adapters.ccxt_exchange import build_client

    client = build_client(venue, flavour="pro")
    # the user-data stream's listen key must be kept alive (a session, not a trade)
    for name in ("fapiPrivatePutListenKey", "fapiPrivatePostListenKey"):
        vars(client).pop(name, None)  # drop the refusal: the class's own method shows again
    return client


#: the hot path's position poll while private streams run: the poll is a long poll that
#: returns on a stream change, so this only bounds the gap between two polls
STREAMED_POLL_S = 0.02


def streamed_accounts(settings: Settings, ledger: FillLedger
                      ) -> tuple[Settings, list[StreamedAccount], PrivateStreams] | None:
    """(settings for the hot path, its accounts, the followers) when private streams are on."""
    if not (settings.trading.private_streams and settings.venues):
        return None
    from risk_monitor.adapters.ccxt_exchange import CcxtExchangeAccount

    hub = PositionHub()
    ledger.opening = hub.opening_of
    accounts = [StreamedAccount(CcxtExchangeAccount.from_settings(settings, v), hub,
                                rest_every_s=settings.trading.fill_rest_poll_s
                                or settings.service.positions_poll_s,
                                fallback_every_s=settings.service.positions_poll_s)
                for v in settings.venues]
    hot = settings.model_copy(update={"service": settings.service.model_copy(
        update={"positions_poll_s": STREAMED_POLL_S})})
    return hot, accounts, PrivateStreams(settings, hub, ledger)
