"""The private-stream account's REST cadence (trading.private_streams is on by default).

The hot path long-polls positions every 20 ms while streams run; a venue whose stream is down
or that has none must then be read over REST at the service's normal poll, not 50 times a
second, and must switch to the stream as soon as it comes up, and back to REST at once when it
drops. Behaviour only: every wait here ends on an event (a stream update, the hub closing).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pandas as pd

from risk_monitor.service.private_stream import PositionHub, StreamedAccount

COLUMNS = ["venue", "account", "instrument", "quantity", "entry_price", "mark_price",
           "notional", "received_at", "timestamp"]
HOUR_S = 3600.0  # never due within a test: any REST read seen here is an event's doing


class CountingRest:
    """A REST account answering an empty book and counting its reads."""

    venue = "binance"
    account = "main"
    endpoint_override = None

    def __init__(self) -> None:
        self.reads = 0

    def fetch_positions(self) -> pd.DataFrame:
        self.reads += 1
        return pd.DataFrame(columns=COLUMNS)

    def fetch_balances(self) -> pd.DataFrame:
        return pd.DataFrame()


def streamed_frame(venue: str = "binance") -> pd.DataFrame:
    return pd.DataFrame([{
        "venue": venue, "account": "main", "instrument": "BTC/USDT:USDT", "quantity": 1.0,
        "entry_price": 100.0, "mark_price": 100.0, "notional": 100.0,
        "received_at": pd.Timestamp("2026-01-01", tz="UTC"),
        "timestamp": pd.Timestamp("2026-01-01", tz="UTC")}], columns=COLUMNS)


def account(hub: PositionHub, rest: CountingRest) -> StreamedAccount:
    return StreamedAccount(rest, hub, rest_every_s=HOUR_S,  # type: ignore[arg-type]
                           fallback_every_s=HOUR_S)


def test_without_a_stream_the_venue_waits_and_takes_the_stream_when_it_comes_up() -> None:
    hub, rest = PositionHub(), CountingRest()
    follower = account(hub, rest)
    assert follower.leads
    assert follower.fetch_positions().empty and rest.reads == 1  # first read: REST at once
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(follower.fetch_positions)
        hub.publish("okx", streamed_frame("okx"))  # another venue's stream: the cycle runs,
        assert waiting.result(timeout=30).empty    # this venue answers its last REST view
        waiting = pool.submit(follower.fetch_positions)
        hub.publish("binance", streamed_frame())  # this venue's stream comes up
        frame = waiting.result(timeout=30)
    assert rest.reads == 1
    assert list(frame["quantity"]) == [1.0]


def test_a_stream_that_drops_falls_back_to_rest_at_once() -> None:
    hub, rest = PositionHub(), CountingRest()
    follower = account(hub, rest)
    follower.fetch_positions()
    hub.publish("binance", streamed_frame())
    assert list(follower.fetch_positions()["quantity"]) == [1.0]
    hub.set_alive("binance", False)
    assert follower.fetch_positions().empty
    assert rest.reads == 2


def test_only_the_first_account_waits_so_one_cycle_sees_every_venue_change() -> None:
    hub, binance_rest, okx_rest = PositionHub(), CountingRest(), CountingRest()
    okx_rest.venue = "okx"  # type: ignore[misc]
    first, second = account(hub, binance_rest), account(hub, okx_rest)
    assert first.leads and not second.leads
    first.fetch_positions(), second.fetch_positions()  # first REST reads
    hub.publish("okx", streamed_frame("okx"))
    hub.publish("binance", streamed_frame())
    first.fetch_positions()
    with ThreadPoolExecutor(1) as pool:
        cycle = pool.submit(lambda: (first.fetch_positions(), second.fetch_positions()))
        hub.publish("okx", streamed_frame("okx").assign(quantity=2.0))  # one change, one cycle
        _, okx = cycle.result(timeout=30)
    assert list(okx["quantity"]) == [2.0]
    assert (binance_rest.reads, okx_rest.reads) == (1, 1)


def test_a_venue_without_a_stream_is_not_read_again_before_its_poll() -> None:
    hub, rest = PositionHub(), CountingRest()
    follower = account(hub, rest)
    follower.fetch_positions()
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(follower.fetch_positions)
        hub.close()  # shutting down: the last REST view, no new read
        frame = waiting.result(timeout=30)
    assert frame.empty
    assert rest.reads == 1
