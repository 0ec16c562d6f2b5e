"""The quote book's data versions, kept up to date tick by tick.

The hot path evaluates a quote frame rebuilt from its quote book; hashing that frame whole at
every alerting evaluation made the lineage cost grow with the desk. Instead each quote is
hashed as it is stored (:meth:`BookDigest.update`, one row's hash: a few µs), and an
evaluation's versions are composed from the stored hashes (:meth:`BookView.versions`: a sort
and a digest per venue), so the alert-time cost does not depend on how many quotes are hashed.

The versions are byte-identical to ``domain.lineage.venue_versions`` of the admitted frame
(what the Dagster assets record for the same data): a row's hash goes through the same
``combine_rows`` and a venue's version through the same ``venue_version``; each value is
hashed as the frame's column would hold it (``schemas.typed_frame``: texts as they are,
numbers as float64, times as UTC nanoseconds), by the per-value form of
``lineage._column_hash``. A value the frame would convert some other way (a number in a text
column, a time given as text) marks its venue *unhashed*, and that venue's evaluations hash
the frame instead (:meth:`BookView.versions` returns ``None``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import numpy as np
import pandas as pd

from risk_monitor.domain.lineage import (
    VenueVersion,
    column_labels,
    column_values,
    columns_text,
    combine_rows,
    text_hash,
    venue_version,
)
from risk_monitor.domain.model import Collected, SourceStatus

_MASK = (1 << 64) - 1
_NAT = np.iinfo(np.int64).min & _MASK  # a missing time, as the frame's hash has it
_NAN = int(np.array([np.nan]).view(np.uint64)[0])  # the one NaN a number hashes as
_DOUBLE = struct.Struct("<d")
_WORD = struct.Struct("<Q")
TEXT, NUMBER, TIME = "text", "number", "time"


def _number(value: Any) -> int | None:
    if value is None:
        return _NAN
    if not isinstance(value, (float, int)):  # bool is an int: 1.0 / 0.0, as float64 has it
        return None
    number = float(value) + 0.0  # -0.0 -> 0.0
    return _NAN if math.isnan(number) else int(_WORD.unpack(_DOUBLE.pack(number))[0])


def _time(value: Any) -> int | None:
    if value is None or value is pd.NaT:
        return _NAT
    if type(value) is pd.Timestamp:  # UTC nanoseconds (a naive time is taken as UTC)
        return int(value.value) & _MASK
    if isinstance(value, datetime):
        return int(pd.Timestamp(value).value) & _MASK
    return None


def _text(value: Any) -> int | None:
    return text_hash(value) if value is None or type(value) is str else None


_VALUE = {TEXT: _text, NUMBER: _number, TIME: _time}


def _kind(dtype: Any) -> str:
    if isinstance(dtype, pd.DatetimeTZDtype) or getattr(dtype, "kind", "") == "M":
        return TIME
    return NUMBER if getattr(dtype, "kind", "") in "biuf" else TEXT


@dataclass(frozen=True)
class BookView:
    """The book's row hashes at one moment (read with the rows an evaluation uses)."""

    columns: tuple[str, ...]
    hashes: Mapping[str, Mapping[str, int]]  # venue -> instrument -> row hash
    unhashed: frozenset[str]  # venues holding a row the frame would convert otherwise

    def versions(self, prices: Collected) -> dict[str, VenueVersion] | None:
        """``lineage.venue_versions(prices)`` from the stored hashes, for ``prices`` admitted
        from exactly this view's rows (``domain.quotes.quotes_from_rows``); ``None`` when it
        cannot be told that way: then the frame is hashed. Admission keeps a subset of each
        venue's rows, so a venue whose admitted count is the book's kept every row; a venue
        that lost some (stale, absurd) is not composed here."""
        frame = prices.frame
        if tuple(map(str, frame.columns)) != self.columns:
            return None
        sources: dict[str, list[SourceStatus]] = {}
        for source in prices.sources:
            sources.setdefault(source.venue, []).append(source)
        venues = np.asarray(column_values(frame, self.columns.index("venue")), dtype=object)
        named = set(venues.tolist())
        if not named <= set(sources) or named & self.unhashed:
            return None
        columns = columns_text(self.columns)
        out: dict[str, VenueVersion] = {}
        for venue in sorted(sources):
            rows = self.hashes.get(venue, {}) if venue in named else {}
            if venue in named and int((venues == venue).sum()) != len(rows):
                return None  # some of the venue's quotes were not admitted
            hashes = np.fromiter(rows.values(), dtype=np.uint64, count=len(rows))
            out[venue] = venue_version(venue, columns, hashes, sources[venue])
        return out


class BookDigest:
    """Row hashes of a quote book (venue, instrument) -> latest row, updated as rows are
    stored. Not locked: the book calls it under its own lock.

    A stored row's values are hashed at once (a few µs); the rows' hashes are combined in
    batches of :attr:`BATCH` (``combine_rows`` costs about the same for one row or for 32),
    and what is left when an evaluation reads the book (:meth:`view`), at most a batch."""

    BATCH = 32

    def __init__(self, empty: pd.DataFrame) -> None:
        """``empty``: the typed frame the book's rows become (its columns and dtypes)."""
        self.columns = tuple(map(str, empty.columns))
        order = sorted(range(len(self.columns)), key=self.columns.__getitem__)
        self._fields = [(self.columns[i], _VALUE[_kind(empty.dtypes.iloc[i])]) for i in order]
        self._labels = column_labels(tuple(self.columns[i] for i in order))
        self._hashes: dict[str, dict[str, int]] = {}
        self._pending: dict[tuple[str, str], list[int]] = {}  # values hashed, rows not yet
        self._unhashed: dict[str, set[str]] = {}

    def update(self, venue: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Hash ``venue``'s newly stored rows."""
        for row in rows:
            key = (venue, str(row["instrument"]))
            values = [value(row.get(name)) for name, value in self._fields]
            if None in values:  # the frame converts it some other way: hash the frame
                self._unhashed.setdefault(venue, set()).add(key[1])
                self._pending.pop(key, None)
                self._hashes.get(venue, {}).pop(key[1], None)
                continue
            self._pending[key] = cast(list[int], values)
            unhashed = self._unhashed.get(venue)
            if unhashed is not None:
                unhashed.discard(key[1])
                if not unhashed:
                    del self._unhashed[venue]
        if len(self._pending) >= self.BATCH:
            self._combine()

    def _combine(self) -> None:
        block = np.array(list(self._pending.values()), dtype=np.uint64).T
        for (venue, instrument), hashed in zip(self._pending, combine_rows(block, self._labels)
                                               .tolist(), strict=True):
            self._hashes.setdefault(venue, {})[instrument] = hashed
        self._pending.clear()

    def view(self) -> BookView:
        """The hashes as they are now (copied: later updates do not change it)."""
        if self._pending:
            self._combine()
        return BookView(self.columns, {v: dict(rows) for v, rows in self._hashes.items()},
                        frozenset(self._unhashed))
