"""Content-addressed data versions of an evaluation's inputs: one hash for both data paths.

The Dagster collection assets and the service's hot path hash their inputs with the functions
here, so the same rows carry the same data version whichever path evaluated them, and an alert
from either path names the exact data it was computed from.

The unit of hashing is **one venue's part of a dataset** (:func:`venue_versions`): its rows and
the coverage of its sources. A dataset's data version (:func:`content_version`) is a hash of its
venues' versions, so a tick on one venue changes that venue's version and the dataset's, and a
reviewer sees which venue's quotes moved. The hash is

* **order-free**: each row is hashed alone (vectorised per column), and a venue's row hashes
  are sorted before the digest, so two paths that built the same rows in any order agree;
* **type-canonical**: numbers hash as float64 (``-0.0`` as ``0.0``, one NaN), times as UTC
  nanoseconds whatever their unit; other values hash as text;
* **cached by object**: positions and balances objects re-evaluated between polls are hashed
  once (a small identity cache, holding the objects weakly); the quote book's frame, rebuilt
  per evaluation, comes with versions composed from its rows' hashes, taken as its ticks
  arrived (``domain/book_lineage.py``, :func:`adopt_versions`), by the rules here.
"""

from __future__ import annotations

import functools
import hashlib
import math
import operator
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import numpy as np
import pandas as pd

from risk_monitor.domain.audit_chain import canonical, digest_of_canonical, feed
from risk_monitor.domain.engine import RiskSnapshot
from risk_monitor.domain.model import Collected, SourceKind, SourceStatus

#: hex characters of a data version
VERSION_CHARS = 24
#: ``venue`` of rows in a dataset without a venue column
NO_VENUE = ""
_CACHE_SIZE = 8  # the hot path reuses positions, exchange balances, custody: a few objects
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


@dataclass(frozen=True)
class VenueVersion:
    """One venue's part of a dataset: content hash, oldest source time, row count."""

    data_version: str
    as_of: datetime | None
    rows: int

    def as_dict(self) -> dict[str, Any]:
        return {"data_version": self.data_version,
                "as_of": self.as_of.isoformat() if self.as_of else None, "rows": self.rows}


_NS_PER = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_NAT = np.iinfo(np.int64).min


def _nanoseconds(values: np.ndarray, unit: str) -> np.ndarray:
    factor = _NS_PER.get(unit, 1)
    if factor == 1:
        return values
    return np.where(values == _NAT, _NAT, values * factor)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, vectorised: every input bit moves every output bit (array
    arithmetic wraps modulo 2**64 silently)."""
    x = x ^ (x >> _S30)  # a new array, then changed in place: fewer temporaries to allocate
    x *= _M1
    x ^= x >> _S27
    x *= _M2
    x ^= x >> _S31
    return x


def _text_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _as_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "\x00null"
    return str(value)


class _TextHashes:
    """Stable 64-bit hashes of texts. Venue, instrument and asset ids repeat on every
    evaluation: each is hashed once per process (bounded), and so is a whole column of texts
    seen before (the quote frame is rebuilt per evaluation with the same ids in it)."""

    #: columns longer than this are not kept whole (memory); their texts still are
    COLUMN_ROWS = 10_000
    COLUMNS = 64

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._known: dict[str, int] = {}
        self._columns: dict[tuple[str, ...], np.ndarray] = {}

    def column(self, values: np.ndarray) -> np.ndarray:
        """Hashes of a column of objects: one look-up of the whole column once known (texts
        only: equal tuples of ``str`` hold equal texts), else one per value."""
        # ``tolist`` first: the same objects, built in half the time of ``tuple(values)``
        key = tuple(values.tolist()) if len(values) <= self.COLUMN_ROWS else None
        try:
            known = self._columns.get(key) if key is not None else None
        except TypeError:  # an unhashable value
            known, key = None, None
        if known is not None:
            return known
        hashes = self._values(values)
        if key is not None and all(type(value) is str for value in key):
            if len(self._columns) >= self.COLUMNS:
                self._columns.clear()
            hashes.flags.writeable = False  # shared by later calls
            self._columns[key] = hashes
        return hashes

    def _values(self, values: np.ndarray) -> np.ndarray:
        try:
            found = list(map(self._known.get, values))
        except TypeError:  # an unhashable value: through its text
            found = [None] * len(values)
        if None in found:
            found = [h if h is not None else self.of(v)
                     for h, v in zip(found, values, strict=True)]
        return np.array(found, dtype=np.uint64)

    def of(self, value: Any) -> int:
        found = self._known.get(value) if type(value) is str else None
        if found is not None:
            return found
        text = value if type(value) is str else _as_text(value)
        found = self._known.get(text)
        if found is None:
            if len(self._known) >= self.size:
                self._known.clear()
            found = self._known[text] = _text_hash(text)
        return found


_texts = _TextHashes()


def text_hash(value: Any) -> int:
    """The hash of one value of a text column, as :func:`_column_hash` gives it."""
    return _texts.of(value)


def _first_value(values: np.ndarray) -> Any:
    for value in values:
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return value
    return None


def _column_hash(values: np.ndarray | pd.api.extensions.ExtensionArray) -> np.ndarray:
    """One uint64 per value of a column's values, equal for equal values whichever path built
    the column: numbers as float64 (``-0.0`` as ``0.0``, one NaN), times as UTC nanoseconds,
    the rest as text."""
    dtype = values.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):  # stored as UTC already
        return _nanoseconds(values.asi8, dtype.unit).view(np.uint64)  # type: ignore[union-attr]
    if not isinstance(values, np.ndarray):  # an extension array: as ``Series.to_numpy`` gives it
        values = values.to_numpy()
    kind = values.dtype.kind
    if kind == "M":
        unit, _ = np.datetime_data(values.dtype)
        return _nanoseconds(values.view("int64"), unit).view(np.uint64)
    if kind in "biuf":
        floats = values.astype(np.float64) + 0.0  # -0.0 -> 0.0; a new array
        floats[np.isnan(floats)] = np.nan
        return floats.view(np.uint64)
    if kind != "O":  # durations, complex, fixed-width texts: each value as text
        return _texts.column(values.astype(object))
    first = _first_value(values)
    if isinstance(first, (float, int, np.number)) and not isinstance(first, (bool, np.bool_)):
        try:  # numbers in an object column (an empty frame concatenated) hash as numbers
            return _column_hash(values.astype(np.float64))
        except (TypeError, ValueError):
            pass
    if isinstance(first, datetime):  # Timestamps in an object column
        try:
            return _column_hash(pd.to_datetime(values, utc=True).array)
        except (TypeError, ValueError):
            pass
    return _texts.column(values)


@functools.lru_cache(maxsize=256)
def column_labels(names: tuple[str, ...]) -> np.ndarray:
    """The label hashes of columns (sorted names), shaped to mix into a block of values."""
    return np.array([[_text_hash(name)] for name in names], dtype=np.uint64)


def column_values(frame: pd.DataFrame, position: int) -> Any:
    """The values of a frame's column without building a ``Series``: measured on the bench's
    200-quote frame, 10 columns, 16 µs this way against 115-175 µs through the public
    ``frame[name].array``, ``frame.items()`` or ``frame.iloc[:, i].array`` (a poll's
    positions and balances are hashed on the alert path). ``_get_column_array`` is
    pandas-internal (pandas is pinned < 3); ``test_lineage_versions`` checks it against
    ``frame.iloc[:, i]``."""
    return cast(Any, frame)._get_column_array(position)  # not in pandas-stubs


def combine_rows(block: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Row hashes from their values' hashes (``block``: one row of ``block`` per column, in
    the order of ``labels``, :func:`column_labels`): each value mixed with its column's
    label, a row's values summed (modulo 2**64), the sum mixed again. The one rule of a row's
    hash: the frames here and the quote book (``domain/book_lineage.py``) both go through it."""
    return _mix(_mix(block ^ labels).sum(axis=0, dtype=np.uint64))


def _hashed(frame: pd.DataFrame) -> tuple[np.ndarray, Any]:
    """One hash per row over every column, by name (column order does not matter:
    :func:`combine_rows`), and the values of the ``venue`` column (``None`` without one)."""
    if not len(frame):
        return np.zeros(0, dtype=np.uint64), None
    labels = [str(name) for name in frame.columns]
    order = sorted(range(len(labels)), key=labels.__getitem__)
    block = np.empty((len(order), len(frame)), dtype=np.uint64)
    venues = None
    for row, position in enumerate(order):
        values = column_values(frame, position)
        block[row] = _column_hash(values)
        if venues is None and labels[position] == "venue":
            venues = values
    return combine_rows(block, column_labels(tuple(labels[i] for i in order))), venues


def _source_text(sources: Iterable[SourceStatus]) -> bytes:
    keyed = sorted(((s.key, s) for s in sources), key=operator.itemgetter(0))
    return "\n".join(f"{key}|{s.ok}|{s.rows}|{s.error_code}" for key, s in keyed).encode()


def _digest(*parts: bytes) -> str:
    digest = hashlib.blake2b(digest_size=VERSION_CHARS // 2)
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        feed(digest, part)  # in pieces: the interpreter lock is kept (audit_chain._PIECE)
    return digest.hexdigest()


def _rows_by_venue(venues: np.ndarray, hashes: np.ndarray) -> dict[str, np.ndarray]:
    """Row hashes grouped by venue name. Venue ids are texts on both paths: a set and one
    comparison per venue (a few µs for a desk's two or three venues, where ``pd.factorize``
    costs ~0.3 ms); anything else (a missing venue) goes through ``pd.factorize``."""
    names = set(venues.tolist())
    if all(type(name) is str for name in names):
        return {name: hashes[venues == name] for name in names}
    codes, found = pd.factorize(venues, use_na_sentinel=False)
    return {str(name): hashes[codes == i] for i, name in enumerate(found)}


def columns_text(names: Iterable[str]) -> bytes:
    """What a venue's version says of the dataset's columns (sorted names)."""
    return "\x1f".join(sorted(names)).encode()


def venue_version(venue: str, columns: bytes, hashes: np.ndarray,
                  sources: Sequence[SourceStatus]) -> VenueVersion:
    """One venue's version from its rows' hashes (any order), the dataset's
    :func:`columns_text` and the venue's sources: the frames here and the quote book
    (``domain/book_lineage.py``) both build it here."""
    mine = np.sort(hashes)
    return VenueVersion(
        data_version=_digest(venue.encode(), columns if len(mine) else b"", mine.tobytes(),
                             _source_text(sources)),
        as_of=min((s.as_of for s in sources), default=None),  # the venue's oldest source
        rows=len(mine))


def _compute_venue_versions(collected: Collected) -> dict[str, VenueVersion]:
    frame = collected.frame
    hashes, venue_column = _hashed(frame)
    columns = columns_text(map(str, frame.columns))
    if venue_column is not None:
        rows_of = _rows_by_venue(np.asarray(venue_column, dtype=object), hashes)
    else:
        rows_of = {NO_VENUE: hashes} if len(frame) else {}
    sources: dict[str, list[SourceStatus]] = {}
    for source in collected.sources:
        sources.setdefault(source.venue, []).append(source)
    return {venue: venue_version(venue, columns, rows_of.get(venue, hashes[:0]),
                                 sources.get(venue, []))
            for venue in sorted(set(sources) | set(rows_of))}


#: an entry of :func:`evaluated_inputs` and its canonical text
_Entry = tuple[dict[str, Any], str]


@dataclass
class _Seen:
    """What is known of one dataset object: its venues' versions and, built once, its entries
    in :func:`evaluated_inputs` (shared by every evaluation of the object: read-only) and their
    canonical texts (``audit_chain.canonical``, what the evaluation's digest is made of)."""

    versions: dict[str, VenueVersion]
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)

    def entry(self, key: str, build: Callable[[], dict[str, Any]]) -> _Entry:
        """The entry ``key`` and its canonical text, built once (``build()``)."""
        entry = self.entries.get(key)
        if entry is None:  # the text is stored first: an entry found always has its text
            entry = build()
            text = self.texts[key] = canonical(entry)
            self.entries[key] = entry
            return entry, text
        return entry, self.texts[key]


class _IdentityCache:
    """What is known of the last few dataset objects, while they live: weakly held, so the
    cache neither keeps a frame alive nor frees one on the hot path (evicting a strongly held
    quote frame cost its deallocation inside the next evaluation's lineage)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[int, tuple[weakref.ref[Collected], _Seen]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, collected: Collected) -> _Seen | None:
        with self._lock:
            found = self._items.get(id(collected))
            if found is None or found[0]() is not collected:
                return None
            self._items.move_to_end(id(collected))
            return found[1]

    def put(self, collected: Collected, seen: _Seen) -> None:
        key = id(collected)
        # the object's death drops its entry (before its id can be reused); no lock in the
        # callback: it may run inside a locked section of this thread
        ref = weakref.ref(collected, lambda _: self._items.pop(key, None))
        with self._lock:
            self._items[key] = (ref, seen)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


_cache = _IdentityCache(_CACHE_SIZE)


def _seen(collected: Collected) -> _Seen:
    found = _cache.get(collected)
    if found is None:
        found = _Seen(_compute_venue_versions(collected))
        _cache.put(collected, found)
    return found


def adopt_versions(collected: Collected, versions: Mapping[str, VenueVersion]) -> None:
    """Take ``versions`` as ``collected``'s, computed elsewhere by the same rules (the quote
    book's incremental digest, ``domain/book_lineage.py``): its frame is not hashed again."""
    if _cache.get(collected) is None:
        _cache.put(collected, _Seen(dict(versions)))


def venue_versions(collected: Collected) -> dict[str, VenueVersion]:
    """Data version, oldest source time and rows of each venue's part of a dataset (every venue
    with a source or a row). A dataset is immutable once built: the result is cached by object."""
    return _seen(collected).versions


def combined_version(versions: Mapping[str, VenueVersion]) -> str:
    """A dataset's data version from its venues' versions."""
    return _digest(*(f"{venue}={v.data_version}".encode()
                     for venue, v in sorted(versions.items())))


def content_version(collected: Collected) -> str:
    """A content hash of the rows and of each source's coverage (24 hex chars): two
    observations with equal data versions held the same data."""
    return combined_version(venue_versions(collected))


class LineageDigest(str):
    """The digest of one evaluation's input versions (``audit_chain.versions_digest``) that
    still holds those versions in memory. It is a ``str``, so wherever the alert context is
    serialised (outbox row, sealed audit entry) only the 64-character digest is written; the
    audit adapter stores ``versions`` once under it, and the Dagster report reads them back."""

    versions: Mapping[str, Any]
    #: stores (by id) known to hold the row already: later alerts of the evaluation skip the
    #: write (set by the audit adapter; lives as long as the evaluation's context)
    stored_in: set[int]

    def __new__(cls, digest: str, versions: Mapping[str, Any]) -> LineageDigest:
        made = super().__new__(cls, digest)
        made.versions = versions
        made.stored_in = set()
        return made

    def __reduce__(self) -> tuple[Any, ...]:
        """Copied or pickled, it is what it serialises as: the digest (a plain ``str``)."""
        return (str, (str(self),))


def _entry(versions: Mapping[str, VenueVersion]) -> dict[str, Any]:
    times = [v.as_of for v in versions.values() if v.as_of is not None]
    return {"data_version": combined_version(versions),
            "as_of": min(times).isoformat() if times else None,  # the oldest source
            "rows": sum(v.rows for v in versions.values()),
            "venues": {venue: v.as_dict() for venue, v in sorted(versions.items())}}


def _whole(seen: _Seen) -> _Entry:
    return seen.entry("", lambda: _entry(seen.versions))


def _by_kind(balances: Collected) -> tuple[_Entry, _Entry]:
    """The entries (and texts) of the exchange and the custodian balances in one merged
    dataset."""
    seen = _seen(balances)

    def part(custody: bool) -> dict[str, Any]:  # built only the first time (``_Seen.entry``)
        kinds = {s.venue: s.kind for s in balances.sources}
        return _entry({v: version for v, version in seen.versions.items()
                       if (kinds.get(v, SourceKind.EXCHANGE) is not SourceKind.EXCHANGE)
                       == custody})

    return seen.entry("exchange", lambda: part(False)), seen.entry("custody", lambda: part(True))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _config_entry(config_version: str) -> _Entry:
    """The limit configuration's entry and its canonical text, per version (shared: read-only,
    as every entry of :func:`evaluated_inputs`)."""
    entry = {"data_version": config_version, "as_of": None, "rows": None}
    return entry, canonical(entry)


@dataclass(frozen=True)
class InputVersions:
    """One evaluation's input versions (:func:`evaluated_inputs`) and their digest
    (``audit_chain.versions_digest``, computed from the entries' canonical texts: those of the
    datasets evaluated before are kept with them, only a new dataset's entry is walked)."""

    versions: dict[str, dict[str, Any]]
    digest: str


def evaluated_inputs(snapshot: RiskSnapshot, config_version: str) -> InputVersions:
    """Data version, as-of time and rows of each input of one evaluation, named like the
    Dagster assets they correspond to, each with its per-venue versions (``venues``), plus the
    limit configuration version, and their digest. Equal to what the assets record for the
    same data: the balances' venues split by source kind hash exactly as the two balance
    assets do.

    The entries of a dataset object evaluated before (positions, balances between polls) are
    the same objects as then: read them, never change them."""
    exchange, custody = _by_kind(snapshot.balances)
    named = {
        "market_prices": _whole(_seen(snapshot.prices)),
        "exchange_positions": _whole(_seen(snapshot.positions)),
        "exchange_balances": exchange,
        "custodian_balances": custody,
        "limit_config": _config_entry(config_version),
    }
    return InputVersions(versions={name: entry for name, (entry, _) in named.items()},
                         digest=digest_of_canonical({name: text
                                                     for name, (_, text) in named.items()}))

