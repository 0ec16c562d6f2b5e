"""The Redis quote cache: the one owner of its keys, its encoding and its decoding.

Writers (the feeders' stream consumer, the REST fallback) and readers (the Dagster snapshot and
sensor, the service's hot path) all go through here, so the format is written once. Layout,
under ``settings.market_data.key_prefix`` (``P``):

* ``P:quotes:<venue>`` hash, field = instrument, value = JSON of the latest quote
  ``{base, quote, bid, ask, last, mark, ts, recv, via}`` (epoch ms; ``via`` stream / rest);
* ``P:stream:<venue>`` capped stream of the accepted quotes (same fields, as strings): every
  tick from a ``risk-monitor stream`` feeder, the latest per instrument once per second from
  the service's own feed (``service.market_stream.CACHE_CONFLATE_S``);
* ``P:status:<venue>`` hash describing the feeder (``mode``, ``updated_at``, ``error``).

Bad data is isolated per entry: an unreadable hash field or stream entry is logged with the
field that failed and skipped, so only that instrument reads as missing (UNKNOWN); the other
instruments and venues keep flowing and the reader loop never stops on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from risk_monitor.adapters.errors import map_exception
from risk_monitor.domain.quotes import QuotePolicy, tick_rejection
from risk_monitor.domain.schemas import prices_frame
from risk_monitor.platform.errors import DataValidationError
from risk_monitor.platform.logging import get_logger
from risk_monitor.platform.metrics import record_error
from risk_monitor.platform.settings import MarketDataSettings

log = get_logger(__name__)

QuoteListener = Callable[[str, list[dict[str, Any]]], Awaitable[None] | None]

# --- keys and encoding ---------------------------------------------------------------------------
def quotes_key(prefix: str, venue: str) -> str:
    return f"{prefix}:quotes:{venue}"


def stream_key(prefix: str, venue: str) -> str:
    return f"{prefix}:stream:{venue}"


def status_key(prefix: str, venue: str) -> str:
    return f"{prefix}:status:{venue}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _ms(value: Any) -> int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if type(value) is datetime and value.tzinfo is not None:  # the feed's rows: no pandas
        return (value - _EPOCH) // _MS
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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _number(fields: Mapping[str, Any], name: str, *, required: bool = False) -> float | None:
    raw = fields.get(name)
    text = "" if raw is None else _text(raw)
    if text in ("", "None", "null"):
        if required:
            raise DataValidationError(f"field {name!r} is missing")
        return None
    if isinstance(raw, bool):
        raise DataValidationError(f"field {name!r} is not a number: {raw!r}")
    try:
        number = float(text)
    except ValueError:
        raise DataValidationError(f"field {name!r} is not a number: {text[:40]!r}") from None
    if not math.isfinite(number):
        raise DataValidationError(f"field {name!r} is not finite: {text[:40]!r}")
    return number


def _label(fields: Mapping[str, Any], name: str) -> str:
    raw = fields.get(name)
    if raw is None or isinstance(raw, bool | int | float) or not _text(raw):
        raise DataValidationError(f"field {name!r} is missing or not text: {raw!r}")
    return _text(raw)


def _row(venue: str, instrument: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """One decoded quote; DataValidationError names the first field that failed."""
    ts = _number(fields, "ts", required=True)
    recv = _number(fields, "recv")
    assert ts is not None
    return {
        "venue": venue, "instrument": instrument,
        "base": _label(fields, "base"), "quote": _label(fields, "quote"),
        "bid": _number(fields, "bid"), "ask": _number(fields, "ask"),
        "last": _number(fields, "last"), "mark": _number(fields, "mark"),
        "timestamp": pd.Timestamp(int(ts), unit="ms", tz="UTC"),
        "received_at": pd.Timestamp(int(recv if recv is not None else ts), unit="ms", tz="UTC"),
    }


def _dropped(venue: str, where: str, exc: DataValidationError) -> None:
    error = DataValidationError(f"unreadable quote {where} dropped: {exc.message}", source=venue)
    record_error(error)
    log.warning("quote_entry_unreadable", venue=venue, entry=where, error=exc.message)


def decode_quotes(venue: str, raw: Mapping[Any, Any]) -> pd.DataFrame:
    """A venue's quotes hash (field -> JSON) as a PRICE_COLUMNS frame; unreadable entries are
    logged and skipped (their instruments read as missing)."""
    rows = []
    for field, value in raw.items():
        instrument = _text(field)
        try:
            try:
                quote = json.loads(value)
            except (TypeError, ValueError):
                raise DataValidationError("value is not JSON") from None
            if not isinstance(quote, Mapping):
                raise DataValidationError("value is not a JSON object")
            rows.append(_row(venue, instrument, quote))
        except DataValidationError as exc:
            _dropped(venue, f"hash field {instrument!r}", exc)
    return prices_frame(rows)


def stream_entry_row(venue: str, fields: Mapping[Any, Any]) -> dict[str, Any]:
    """One entry of ``P:stream:<venue>`` as a PRICE row; DataValidationError names the field."""
    data = {_text(k): v for k, v in fields.items()}
    return _row(venue, _label(data, "instrument"), data)


def _stream_fields(instrument: str, quote: Mapping[str, Any]) -> dict[str, str]:
    return {"instrument": instrument,
            **{k: "" if v is None else str(v) for k, v in quote.items()}}


def _queue_quotes(pipe: Any, prefix: str, maxlen: int, venue: str,
                  rows: Sequence[Mapping[str, Any]], via: str) -> int:
    """The one encoding of a write (sync or async pipeline): each row becomes the venue's latest
    quote and an entry of its capped stream."""
    latest: dict[str, str] = {}
    for row in rows:
        quote = encode_quote(row, via)
        latest[row["instrument"]] = json.dumps(quote)
        pipe.xadd(stream_key(prefix, venue), _stream_fields(row["instrument"], quote),
                  maxlen=maxlen, approximate=True)
    pipe.hset(quotes_key(prefix, venue), mapping=latest)
    return len(latest)


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
        rows = [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]
        return self.write_rows(venue, rows, via=via)

    def write_rows(self, venue: str, rows: Sequence[Mapping[str, Any]], *, via: str) -> int:
        """``write`` for quote rows (the service feed's conflated flush, in its own thread)."""
        if not rows:
            return 0
        pipe = self.client.pipeline(transaction=False)
        written = _queue_quotes(pipe, self.prefix, self.maxlen, venue, rows, via)
        pipe.execute()
        return written

    def read(self, venue: str) -> pd.DataFrame:
        return decode_quotes(venue, self.client.hgetall(quotes_key(self.prefix, venue)))

    def latest_ids(self, venues: Sequence[str]) -> dict[str, str]:
        """The newest stream entry id per venue (venues without a stream are left out)."""
        latest: dict[str, str] = {}
        for venue in venues:
            entries = self.client.xrevrange(stream_key(self.prefix, venue), count=1)
            if entries:
                latest[venue] = _text(entries[0][0])
        return latest

    def status(self, venue: str) -> dict[str, str]:
        raw = self.client.hgetall(status_key(self.prefix, venue))
        return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes)
                                                              else v) for k, v in raw.items()}


class AsyncRedisQuoteCache:
    """Async writer for the stream consumer (redis.asyncio client).

    With ``blocking`` (a sync client to the same Redis), :meth:`write_off_loop` encodes and
    sends in a thread of its own: encoding and packing cost ~40 µs of interpreter time a row,
    which on the event loop held the service's tick loop in 0.5-0.7 ms slices (16-row
    pipelines, 200 rows a second); in a thread the interpreter switches away from it every
    switch interval (``service.switch_interval_ms``) and the ticks are decided meanwhile.
    """

    def __init__(self, client: Any, settings: MarketDataSettings, *,
                 blocking: Any | None = None) -> None:
        self.client = client
        self.prefix = settings.key_prefix
        self.maxlen = settings.stream_maxlen
        self._blocking = None if blocking is None else RedisQuoteCache(blocking, settings)
        self._thread: ThreadPoolExecutor | None = None

    @property
    def off_loop(self) -> bool:
        """True when :meth:`write_off_loop` writes in a thread (a blocking client was given)."""
        return self._blocking is not None

    async def write_off_loop(self, venue: str, rows: Sequence[Mapping[str, Any]], *,
                             via: str) -> int:
        """``write`` in this cache's own thread, with the blocking client (class docstring)."""
        if self._blocking is None:
            return await self.write(venue, rows, via=via)
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="redis-quotes")
        blocking = self._blocking
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, lambda: blocking.write_rows(venue, rows, via=via))

    def close(self) -> None:
        """End the writing thread and close the blocking client (the async one is the
        caller's)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.shutdown(wait=True)
        if self._blocking is not None:
            self._blocking.client.close()

    async def write(self, venue: str, rows: Sequence[Mapping[str, Any]], *, via: str) -> int:
        if not rows:
            return 0
        pipe = self.client.pipeline(transaction=False)
        written = _queue_quotes(pipe, self.prefix, self.maxlen, venue, rows, via)
        await pipe.execute()
        return written

    async def set_status(self, venue: str, mode: str, at: datetime, error: str = "") -> None:
        await self.client.hset(status_key(self.prefix, venue), mapping={
            "mode": mode, "updated_at": str(_ms(at)), "error": error})


def redis_client(url: str) -> Any:
    """A sync Redis client with short timeouts (a Dagster run must never hang on Redis)."""
    import redis

    return redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)


def latest_stream_ids(url: str, settings: MarketDataSettings,
                      venues: Sequence[str]) -> dict[str, str]:
    """The newest stream entry id per venue, on a client opened and closed here (sensors)."""
    client = redis_client(url)
    try:
        return RedisQuoteCache(client, settings).latest_ids(list(dict.fromkeys(venues)))
    finally:
        client.close()


async def follow_quote_streams(redis_url: str, settings: MarketDataSettings,
                               venues: Sequence[str], policy: QuotePolicy, stop: asyncio.Event,
                               listener: QuoteListener, *, block_ms: int = 1000) -> None:
    """Feed ``listener`` from the Redis quote streams the feeders write (no websocket here).

    Seeds from each venue's latest-quote hash, then ``XREAD``s every venue's stream from the
    entry it had reached. Each tick is checked as the feed checks it
    (``domain.quotes.tick_rejection``); an unreadable entry is logged and skipped alone. Redis
    errors are logged and retried with a backoff.
    """
    import redis.asyncio as aioredis

    prefix = settings.key_prefix
    keys = {stream_key(prefix, v): v for v in venues}
    last_ts: dict[tuple[str, str], pd.Timestamp] = {}

    async def deliver(venue: str, rows: list[dict[str, Any]]) -> None:
        now = datetime.now(UTC)
        accepted = []
        for raw in rows:
            row: dict[str, Any] = {k: None if isinstance(v, float) and math.isnan(v) else v
                                   for k, v in raw.items()}
            key = (venue, str(row["instrument"]))
            stamp = pd.Timestamp(row["timestamp"])
            if last_ts.get(key) == stamp or tick_rejection(
                    row, now=now, policy=policy, last_accepted=last_ts.get(key)):
                continue
            last_ts[key] = stamp
            accepted.append(row)
        if accepted:
            result = listener(venue, accepted)
            if asyncio.iscoroutine(result):
                await result

    attempt = 0
    while not stop.is_set():
        client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=5.0,
                                         socket_timeout=block_ms / 1000 + 5.0)
        try:
            positions: dict[str, str] = {}
            for key, venue in keys.items():
                newest = await client.xrevrange(key, count=1)
                positions[key] = _text(newest[0][0]) if newest else "0-0"
                seeded = decode_quotes(venue, await client.hgetall(quotes_key(prefix, venue)))
                await deliver(venue, [{str(k): v for k, v in r.items()}
                                      for r in seeded.to_dict("records")])
            attempt = 0
            log.info("quote_streams_followed", venues=list(venues), prefix=prefix)
            while not stop.is_set():
                answer: Any = await client.xread(positions, count=1000,  # type: ignore[arg-type]
                                                 block=block_ms)
                for raw_key, entries in answer or []:
                    key = _text(raw_key)
                    venue = keys[key]
                    rows = []
                    for entry_id, fields in entries:
                        positions[key] = _text(entry_id)
                        try:
                            rows.append(stream_entry_row(venue, fields))
                        except DataValidationError as exc:
                            _dropped(venue, f"stream entry {positions[key]}", exc)
                    await deliver(venue, rows)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = map_exception(exc, source="redis", endpoint="xread")
            record_error(error)
            attempt += 1
            delay = min(30.0, 0.5 * 2 ** min(attempt, 6))
            log.warning("quote stream follower failed; retrying", error_code=error.code,
                        error=error.message, retry_in_s=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()
