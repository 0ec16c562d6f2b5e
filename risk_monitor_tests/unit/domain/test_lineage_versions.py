"""Content data versions (domain/lineage.py): one hash per venue's part of a dataset, equal
whichever path built the rows, changed by any change of content or coverage."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from risk_monitor.domain.audit_chain import sha256_hex
from risk_monitor.domain.engine import RiskSnapshot
from risk_monitor.domain.lineage import (
    _column_hash,
    _digest,
    column_values,
    combined_version,
    content_version,
    evaluated_inputs,
    venue_versions,
)
from risk_monitor.domain.model import Collected, SourceKind, SourceStatus

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _source(kind: SourceKind, venue: str, ok: bool = True) -> SourceStatus:
    return SourceStatus(kind=kind, venue=venue, account="main", ok=ok, as_of=T0, rows=1)


def quotes() -> Collected:
    frame = pd.DataFrame({
        "venue": ["binance", "binance", "okx"],
        "instrument": ["BTC/USDT:USDT", "ETH/USDT:USDT", "BTC/USDT:USDT"],
        "last": [65000.0, 3000.0, 65010.0], "bid": [64999.0, float("nan"), 65009.0],
        "timestamp": pd.to_datetime([T0] * 3, utc=True)})
    return Collected(frame, (_source(SourceKind.MARKET, "binance"),
                             _source(SourceKind.MARKET, "okx")))


def test_rows_in_another_order_or_type_hash_the_same() -> None:
    base = quotes()
    frame = base.frame
    same = [
        frame.iloc[::-1].reset_index(drop=True),  # row order
        frame[list(reversed(frame.columns))],  # column order
        frame.assign(last=frame["last"].astype(object)),  # numbers in an object column
        frame.assign(timestamp=frame["timestamp"].dt.as_unit("ms")),  # time unit
        frame.assign(timestamp=frame["timestamp"].dt.tz_localize(None)),  # naive UTC
        frame.assign(timestamp=frame["timestamp"].astype(object)),  # Timestamp objects
    ]
    for variant in same:
        assert content_version(Collected(variant, base.sources)) == content_version(base)


def test_a_change_moves_only_its_venue() -> None:
    base = quotes()
    before = venue_versions(base)
    moved = Collected(base.frame.assign(last=[65000.0, 3000.0, 65020.0]), base.sources)
    after = venue_versions(moved)
    assert after["binance"] == before["binance"]
    assert after["okx"].data_version != before["okx"].data_version
    assert content_version(moved) != content_version(base)
    assert content_version(base) == combined_version(before)
    failed = Collected(base.frame, (_source(SourceKind.MARKET, "binance"),
                                    _source(SourceKind.MARKET, "okx", ok=False)))
    assert venue_versions(failed)["okx"].data_version != before["okx"].data_version
    missing_value = Collected(base.frame.assign(bid=[64999.0, 1.0, 65009.0]), base.sources)
    assert venue_versions(missing_value)["binance"] != before["binance"]


def test_a_venue_without_rows_still_has_a_version() -> None:
    empty = Collected(quotes().frame.iloc[0:0], (_source(SourceKind.MARKET, "okx", ok=False),))
    versions = venue_versions(empty)
    assert set(versions) == {"okx"} and versions["okx"].rows == 0
    assert versions["okx"].as_of == T0


def test_balances_split_by_kind_hash_like_the_two_balance_assets() -> None:
    exchange = Collected(pd.DataFrame({"venue": ["binance"], "asset": ["USDT"],
                                       "total": [1e6]}),
                         (_source(SourceKind.EXCHANGE, "binance"),))
    custody = Collected(pd.DataFrame({"venue": ["fireblocks"], "asset": ["BTC"],
                                      "total": [2.0]}),
                        (_source(SourceKind.CUSTODIAN, "fireblocks"),))
    merged = Collected(pd.concat([exchange.frame, custody.frame], ignore_index=True),
                       exchange.sources + custody.sources)
    snapshot = RiskSnapshot(positions=exchange, balances=merged, prices=quotes(), now=T0)
    versions = evaluated_inputs(snapshot, "cfg-v1").versions
    assert versions["exchange_balances"]["data_version"] == content_version(exchange)
    assert versions["custodian_balances"]["data_version"] == content_version(custody)
    assert set(versions["market_prices"]["venues"]) == {"binance", "okx"}
    assert versions["limit_config"]["data_version"] == "cfg-v1"


def test_a_dataset_object_is_hashed_once() -> None:
    base = quotes()
    assert venue_versions(base) is venue_versions(base)
    assert venue_versions(Collected(base.frame, base.sources)) == venue_versions(base)


def test_versions_are_pinned() -> None:
    """Every stored alert and Dagster event names versions hashed this way: a change of the
    hash (even a faster one) changes every data version, so it must be deliberate."""
    assert content_version(quotes()) == "53bdafa22395ccdf70107826"
    assert {venue: seen.data_version for venue, seen in venue_versions(quotes()).items()} == {
        "binance": "1ee85539369056d7b8940d39", "okx": "66bd2450895074169dc097f9"}


def test_columns_are_read_as_pandas_gives_them() -> None:
    """The hash reads columns through pandas' internal ``_get_column_array`` (no ``Series``
    per column, the hot path's cost): it must hash like the public ``frame.iloc[:, i]``."""
    frame = quotes().frame.assign(
        ms=lambda f: f["timestamp"].dt.as_unit("ms"), naive=lambda f: f["timestamp"].dt
        .tz_localize(None), n=pd.array([1, None, 3], dtype="Int64"),
        text=pd.array(["a", None, "c"], dtype="string"), flag=[True, False, True],
        objects=np.array([None, 1.5, "x"], dtype=object), kind=pd.Categorical(["a", "b", "a"]),
        small=np.array([1, 2, 3], dtype=np.uint8), duration=pd.to_timedelta([1, 2, 3], "s"))
    for position in range(frame.shape[1]):
        public = frame.iloc[:, position].array
        assert (_column_hash(column_values(frame, position)) == _column_hash(public)).all()
    assert content_version(Collected(frame, quotes().sources))  # every kind of column hashes


def test_long_inputs_hash_in_pieces_to_the_same_digest() -> None:
    """Digests are fed in pieces under 2048 bytes (hashlib then keeps the interpreter lock):
    the same bytes as hashing the whole input at once."""
    big = bytes(range(256)) * 40  # 10 240 bytes: several pieces and a rest
    whole = hashlib.blake2b(digest_size=12)
    whole.update(len(big).to_bytes(8, "little"))
    whole.update(big)
    assert _digest(big) == whole.hexdigest()
    text = "é" * 3000  # 6000 bytes encoded
    assert sha256_hex(text) == hashlib.sha256(text.encode()).hexdigest()
