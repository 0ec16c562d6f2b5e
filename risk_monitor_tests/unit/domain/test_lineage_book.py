"""The quote book's incremental versions (domain/book_lineage.py): byte-identical to hashing
the admitted frame (what the Dagster assets record), whatever the ticks, and the frame is
hashed instead whenever the book cannot tell."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import hypothesis.strategies as st
import numpy as np
import pandas as pd
from hypothesis import given, settings

from risk_monitor.domain.book_lineage import BookDigest
from risk_monitor.domain.lineage import _compute_venue_versions
from risk_monitor.domain.quotes import QuotePolicy, quotes_from_rows
from risk_monitor.domain.schemas import prices_frame
from risk_monitor_tests.unit.domain.test_lineage_digest_pinned import desk_quotes

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(seconds=1)
POLICY = QuotePolicy(max_age_s=60, max_future_skew_s=5, max_deviation=0.5)
VENUES = ("binance", "okx")
SYMBOLS = {venue: [f"S{i}/USDT:USDT" for i in range(8)] for venue in VENUES}


def row(venue: str, i: int, last: float, **changes: Any) -> dict[str, Any]:
    return {"venue": venue, "instrument": f"S{i}/USDT:USDT", "base": f"S{i}", "quote": "USDT",
            "bid": last - 0.01, "ask": last + 0.01, "last": last, "mark": last,
            "timestamp": pd.Timestamp(T0 + timedelta(milliseconds=i)), "received_at": T0,
            **changes}


class Book:
    """A quote book as the service keeps one: latest row per instrument, hashed as stored."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.digest = BookDigest(prices_frame([]))

    def store(self, venue: str, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            self.rows[(venue, r["instrument"])] = r
        self.digest.update(venue, rows)

    def check(self) -> bool:
        """The book's versions equal the frame's; True when the book could tell them."""
        prices = quotes_from_rows(list(self.rows.values()), SYMBOLS, NOW, POLICY)
        versions = self.digest.view().versions(prices)
        if versions is None:
            return False
        assert versions == _compute_venue_versions(prices)
        return True


def full_book() -> Book:
    book = Book()
    for venue in VENUES:
        book.store(venue, [row(venue, i, 100.0 + i) for i in range(8)])
    return book


VALUES = {
    "last": st.floats(min_value=99, max_value=101),
    "bid": st.one_of(st.none(), st.just(float("nan")), st.just(-0.0),
                     st.integers(90, 99), st.floats(min_value=90, max_value=99)),
    "mark": st.one_of(st.none(), st.floats(min_value=99, max_value=101)),
    "timestamp": st.one_of(
        st.integers(0, 5000).map(lambda ms: pd.Timestamp(T0 + timedelta(milliseconds=ms))),
        st.integers(0, 5000).map(lambda ms: T0 + timedelta(microseconds=ms)),
        st.just(datetime(2026, 3, 2, 9, 0, 0, 7))),  # naive: UTC
    "base": st.one_of(st.none(), st.sampled_from(["S1", "café", ""])),
}
TICK = st.tuples(st.sampled_from(VENUES), st.integers(0, 7),
                 st.fixed_dictionaries({}, optional=VALUES))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(TICK, min_size=1, max_size=40), min_size=1, max_size=4))
def test_book_versions_are_the_frames(evaluations: list[list[Any]]) -> None:
    """Any ticks (several per update, across batches), any evaluation moments: equal bytes."""
    book = full_book()
    assert book.check()
    for ticks in evaluations:
        for venue, i, changes in ticks:
            last = changes.pop("last", 100.0 + i)
            book.store(venue, [row(venue, i, last, **changes)])
        book.check()


def test_ticks_between_evaluations_move_the_version() -> None:
    book = full_book()
    prices = quotes_from_rows(list(book.rows.values()), SYMBOLS, NOW, POLICY)
    before = book.digest.view().versions(prices)
    for n in range(BookDigest.BATCH + 5):  # across a combined batch and a rest
        book.store("okx", [row("okx", n % 8, 100.5 + n % 8)])
    assert book.check()
    after = book.digest.view().versions(
        quotes_from_rows(list(book.rows.values()), SYMBOLS, NOW, POLICY))
    assert before is not None and after is not None
    assert after["binance"] == before["binance"]
    assert after["okx"] != before["okx"]


def test_a_venue_that_lost_quotes_or_holds_odd_values_hashes_the_frame() -> None:
    book = full_book()
    book.store("okx", [row("okx", 2, 100.0, timestamp=pd.Timestamp(T0 - timedelta(hours=1)))])
    assert not book.check()  # a stale quote was not admitted
    book.store("okx", [row("okx", 2, 102.0)])
    assert book.check()
    book.store("binance", [row("binance", 3, 103.0, bid=np.float32(103.0))])
    assert not book.check()  # a value the frame converts its own way
    book.store("binance", [row("binance", 3, 103.0)])
    assert book.check()


def test_pinned_versions_through_the_book() -> None:
    """The pinned desk quotes (test_lineage_digest_pinned), stored tick by tick."""
    expected = desk_quotes()
    digest = BookDigest(expected.frame.iloc[0:0])
    for record in expected.frame.to_dict("records"):
        digest.update(str(record["venue"]), [record])
    versions = digest.view().versions(expected)
    assert versions is not None
    assert {venue: v.data_version for venue, v in versions.items()} == {
        "binance": "c8e2f5c56e9093d8bf16db2b", "okx": "44ac2aca45a277c13b6f011d"}
