"""The dataset rules as data, and a vectorised check of a frame against them.

Why: pandera validates 100k positions in ~5 s (row-wise regexes, element type checks, a
hashed uniqueness pass), while an evaluation must cost ~100 ms. The rules are written once, as
:class:`ColumnRule` / :class:`FrameRules`; :mod:`risk_monitor.domain.schemas` builds the pandera
schemas (Dagster checks, detailed failure reports) from them, and :func:`passes` checks the same
rules with numpy: string rules on the distinct values only (a column of 1M rows holds a few
hundred), numbers and times as array comparisons, uniqueness on integer codes.

:func:`passes` answers one question, "would pandera accept this frame unchanged?", and is
conservative: any doubt (a dtype that pandera would have to coerce, a failing row) answers
False and the caller runs pandera, which then names every failure. So a valid frame costs the
fast check, a broken one the full report.
"""

from __future__ import annotations

import ctypes
import math
import re
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

FrameCheck = Callable[[pd.DataFrame], pd.Series]
UTC_TIMESTAMP = pd.DatetimeTZDtype("ns", "UTC")


@dataclass(frozen=True)
class ColumnRule:
    """One column: its type, whether it may be null, and the checks on its non-null values."""

    kind: Literal["str", "number", "time"]
    nullable: bool = False
    pattern: str | None = None  # str: ``re.match`` (pandera ``str_matches``)
    allowed: tuple[str, ...] | None = None  # str: one of (pandera ``isin``)
    length: tuple[int, int] | None = None  # str: min / max length (pandera ``str_length``)
    ge: float | None = None  # number: >= (pandera ``ge``)
    gt: float | None = None  # number: > (pandera ``gt``)


@dataclass(frozen=True)
class FrameRules:
    """A dataset's rules: columns, frame-wide checks (named), unique key."""

    name: str
    columns: dict[str, ColumnRule]
    checks: tuple[tuple[str, FrameCheck], ...] = ()
    unique: tuple[str, ...] = ()


#: rows per slice of a chunked pass over a large frame: temporaries of 64k rows (512 KiB a
#: float64) instead of one per 1M-row column (8 MB each, which the allocator keeps mapped)
ROW_CHUNK = 1 << 16


def row_chunks(n: int, size: int = ROW_CHUNK) -> Iterator[slice]:
    """Consecutive slices covering ``range(n)`` (none for ``n == 0``): elementwise work done
    slice by slice gives the same bits as on the whole column, with bounded temporaries."""
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


#: factorised key columns per live frame (by id; a finaliser drops the entry with the frame):
#: validation hashes each string column once and valuation reuses the codes. An entry is used
#: only while the column still holds the very array it was computed from.
_CODES: dict[int, dict[str, tuple[int, int, np.ndarray, np.ndarray]]] = {}


def key_codes(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """``pd.factorize`` of an object column (integer codes, -1 for null; uniques), once per
    frame."""
    series = frame[column]
    if isinstance(series.dtype, pd.CategoricalDtype):  # already coded (collection's keys)
        cat = cast(pd.Categorical, series.array)
        return np.asarray(cat.codes), np.asarray(cat.categories, dtype=object)
    values = series.to_numpy()
    pointer = values.__array_interface__["data"][0] if values.dtype == object else -1
    cached = _CODES.get(id(frame), {}).get(column)
    if cached is not None and cached[0] == pointer and cached[1] == len(values) and pointer != -1 \
            and _agrees(values, cached[2], cached[3]):
        return cached[2], cached[3]
    codes, uniques = factorize_objects(values) if values.dtype == object else \
        pd.factorize(values, use_na_sentinel=True)
    codes = np.asarray(codes, dtype=_code_dtype(len(uniques)))
    uniques = np.asarray(uniques, dtype=object)
    if pointer != -1:
        entry = _CODES.get(id(frame))
        if entry is None:
            entry = _CODES[id(frame)] = {}
            weakref.finalize(frame, _CODES.pop, id(frame), None)
        entry[column] = (pointer, len(values), codes, uniques)
    return codes, uniques


def categorize(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``frame`` with its object key ``columns`` as Categoricals: one small integer code a row
    (int8 / int16) instead of an 8-byte pointer, categories sorted, so the codes order rows as
    the strings do. A 1M-position frame holds ~53 MB less. The other columns are the frame's
    own arrays (no copy); a column with a null or a non-str value stays as it is (validation
    then names it)."""
    data: dict[str, Any] = {}
    changed = False
    for name in frame.columns:
        series = frame[name]
        data[name] = series
        if name not in columns or series.dtype != object:
            continue
        codes, uniques = factorize_objects(series.to_numpy())
        if (len(codes) and int(codes.min()) < 0) or not all(type(u) is str for u in uniques):
            continue
        order = np.argsort(uniques.astype(str), kind="stable")
        rank = np.empty(len(order), dtype=_code_dtype(len(order)))
        rank[order] = np.arange(len(order))
        data[name] = pd.Categorical.from_codes(
            cast(Any, rank[codes]), categories=pd.Index(uniques[order], dtype=object))
        changed = True
    if not changed:
        return frame
    out = pd.DataFrame(data, columns=frame.columns, index=frame.index, copy=False)
    out.attrs.update(frame.attrs)
    return out


def plain_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its Categorical columns as object str columns (what pandera's ``str``
    columns and a report expect); the frame itself when it has none."""
    keys = [name for name, dtype in frame.dtypes.items()
            if isinstance(dtype, pd.CategoricalDtype)]
    if not keys:
        return frame
    return frame.astype({name: object for name in keys})


def factorize_objects(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``pd.factorize(values)`` of an object column, same codes and uniques, ~5x faster when
    rows share their str objects (a collected frame: ids from settings, ccxt's market symbols,
    literals): the rows are first grouped by object identity (the array's pointers as
    integers), then only the distinct objects are hashed and compared by value."""
    n = len(values)
    if n < 1024:
        return pd.factorize(values, use_na_sentinel=True)  # type: ignore[no-any-return]
    values = np.ascontiguousarray(values)
    pointers = np.frombuffer(memoryview((ctypes.c_size_t * n).from_address(values.ctypes.data)),
                             dtype=np.uintp)  # a view: read while ``values`` holds the objects
    by_object, objects = pd.factorize(pointers)
    first = np.empty(len(objects), dtype=np.intp)
    first[by_object[::-1]] = np.arange(n - 1, -1, -1)  # first row of each object
    # objects are numbered by first appearance, so values are too (as pd.factorize numbers them)
    by_value, uniques = pd.factorize(values[first], use_na_sentinel=True)
    return by_value[by_object], uniques


def _code_dtype(distinct: int) -> type[np.signedinteger[Any]]:
    """The smallest signed integer type for codes 0..distinct-1 and -1 (1 byte a row for a
    venue column instead of 4: at 1M rows, 8 key columns)."""
    for dtype in (np.int8, np.int16, np.int32):
        if distinct < np.iinfo(dtype).max:
            return dtype
    return np.int64


def _agrees(values: np.ndarray, codes: np.ndarray, uniques: np.ndarray) -> bool:
    """Spot check that cached codes still describe the column (first, middle, last row): a
    guard against an array reallocated at the same address."""
    n = len(values)
    for row in {0, n // 2, n - 1} if n else ():
        code = int(codes[row])
        if code < 0:
            if not pd.isna(values[row]):
                return False
        elif values[row] != uniques[code]:
            return False
    return True


def passes(frame: pd.DataFrame, rules: FrameRules) -> bool:
    """True when every rule holds and no dtype needs coercing (see module doc)."""
    if set(map(str, frame.columns)) != set(rules.columns) or frame.columns.has_duplicates:
        return False
    codes: dict[str, np.ndarray] = {}
    for name, rule in rules.columns.items():
        series = frame[name]
        if rule.kind == "str":
            found = _string_codes(frame, name, rule)
            if found is None:
                return False
            codes[name] = found
        elif rule.kind == "number":
            if not _number_ok(series, rule):
                return False
        elif not _time_ok(series, rule):
            return False
    for _, check in rules.checks:
        result = check(frame)
        if not bool(np.asarray(result, dtype=bool).all()):
            return False
    return not rules.unique or _unique(frame, rules.unique, codes)


def _string_codes(frame: pd.DataFrame, name: str, rule: ColumnRule) -> np.ndarray | None:
    series = frame[name]
    if series.dtype != object and not isinstance(series.dtype, pd.CategoricalDtype):
        return None
    found, uniques = key_codes(frame, name)
    if len(found) and int(found.min()) < 0:  # a null
        return None
    regex = re.compile(rule.pattern) if rule.pattern is not None else None  # re's cache
    allowed = frozenset(rule.allowed) if rule.allowed is not None else None
    for value in uniques:
        if not isinstance(value, str):
            return None
        if regex is not None and regex.match(value) is None:
            return None
        if allowed is not None and value not in allowed:
            return None
        if rule.length is not None and not rule.length[0] <= len(value) <= rule.length[1]:
            return None
    return found


def _number_ok(series: pd.Series, rule: ColumnRule) -> bool:
    if series.dtype != np.float64:
        return False  # pandera would coerce: let it
    values = series.to_numpy()
    null = np.isnan(values)
    if not rule.nullable and null.any():
        return False
    with np.errstate(invalid="ignore"):
        if np.isinf(values).any():
            return False
        if rule.ge is not None and (values < rule.ge).any():  # NaN compares False: skipped
            return False
        if rule.gt is not None and (values <= rule.gt).any():
            return False
    return True


def _time_ok(series: pd.Series, rule: ColumnRule) -> bool:
    if series.dtype != UTC_TIMESTAMP:
        return False
    return rule.nullable or not bool(series.isna().any())


def _unique(frame: pd.DataFrame, key: Sequence[str], codes: dict[str, np.ndarray]) -> bool:
    if len(frame) < 2:
        return True
    columns = [codes[name] if name in codes else key_codes(frame, name)[0] for name in key]
    widths = [int(column.max()) + 2 for column in columns]
    if math.prod(widths) >= 2**62:  # key space too wide for one int64: hash the rows
        return not bool(frame.duplicated(list(key)).any())
    # in place, in the narrowest type the key space fits (at 1M rows an int64 is 8 MB)
    combined = np.zeros(len(frame), dtype=np.int32 if math.prod(widths) < 2**31 else np.int64)
    space = 1
    for column, width in zip(columns, widths, strict=True):
        np.multiply(combined, width, out=combined)
        np.add(combined, column, out=combined)  # codes >= -1: shifted by one, as width allows
        np.add(combined, 1, out=combined)
        space *= width
    if space <= 4 * len(frame) + 1024:  # one flag per possible key (1 byte, not a count's 8)
        seen = np.zeros(space, dtype=bool)
        seen[combined] = True
        return int(np.count_nonzero(seen)) == len(frame)
    combined.sort()
    return not bool((combined[1:] == combined[:-1]).any())
