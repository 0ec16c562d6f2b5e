"""Factorised scope dimensions of a frame and one-pass group sums over them.

Everything a limit needs is a sum or a minimum over the rows inside a scope. :class:`FrameIndex`
factorises the scope dimensions once (lazily, per dimension) and answers any scope, including a
wildcard expansion, as one ``bincount`` over the whole column, without re-grouping the frame:
1M positions cost one pass per (fixed filter, wildcard dims), not one per scope.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from risk_monitor.domain.frame_rules import row_chunks
from risk_monitor.domain.valuation import NAT

_INT64_MAX = np.iinfo(np.int64).max
#: (fixed items, wild dims, summed columns or None for all)
_CacheKey = tuple[tuple[tuple[str, str], ...], tuple[str, ...], tuple[str, ...] | None]


class Agg(NamedTuple):
    """Sums and minimums over the rows of one group (a tuple: thousands are built per
    evaluation, and a tuple builds ~5x faster than a frozen dataclass)."""

    sums: dict[str, float]
    mins: dict[str, float]
    rows: int
    bad: int
    first_bad: int  # row index of the first unusable row, -1 when none
    oldest_ns: int  # NAT when no row has a time


class Groups(NamedTuple):
    """The aggregates of every group as columns: entry ``g`` of each list belongs to ``keys[g]``
    (what :meth:`FrameIndex.columns` returns; cheaper than one :class:`Agg` per group when
    thousands of scopes only read a few fields)."""

    keys: list[tuple[str, ...]]
    sums: dict[str, list[float]]
    mins: dict[str, list[float]]
    rows: list[int]
    bad: list[int]
    first_bad: list[int]  # row index of the group's first unusable row, -1 when none
    oldest_ns: list[int]  # NAT when no row has a time

    def at(self) -> dict[tuple[str, ...], int]:
        """Position of each key."""
        return {key: g for g, key in enumerate(self.keys)}


_NO_GROUPS = Groups([], {}, {}, [], [], [], [])


#: a value column given as the function of a slice of rows: summed slice by slice, never
#: held whole (a derived 1M-row column read by one grouping costs 8 MB for the evaluation's life)
RowValues = Callable[[slice], np.ndarray]


def _weighted_bins(gcode: np.ndarray, weights: np.ndarray | RowValues, bins: int) -> np.ndarray:
    """``np.bincount(gcode, weights=weights, minlength=bins)``; for :data:`RowValues` the same
    bits by ``np.add.at`` slice by slice (both add each bin's rows in row order from 0.0)."""
    if isinstance(weights, np.ndarray):
        return np.bincount(gcode, weights=weights, minlength=bins)
    out = np.zeros(bins, dtype=np.float64)
    for rows in row_chunks(len(gcode)):
        np.add.at(out, gcode[rows], weights(rows))
    return out


class FrameIndex:
    """Factorised scope dimensions of one frame for repeated scope sums."""

    NO_GROUPS = _NO_GROUPS

    def __init__(
        self,
        dims: Mapping[str, np.ndarray | pd.Categorical],
        values: Mapping[str, np.ndarray | RowValues],
        mins: Mapping[str, np.ndarray],
        bad: np.ndarray,
        t_ns: np.ndarray,
    ) -> None:
        self.n = len(bad)
        self._dims: dict[str, tuple[np.ndarray, pd.Index]] = {}
        self._codes: dict[str, dict[str, int]] = {}
        self._groups_cache: dict[_CacheKey, dict[tuple[str, ...], Agg]] = {}
        self._columns_cache: dict[_CacheKey, Groups] = {}
        self._raw = dict(dims)
        self.values = dict(values)
        self.mins = dict(mins)
        self.bad = bad
        self.t_ns = t_ns
        self._t_min: np.ndarray | None = None  # t_ns with NAT as int64 max, for min-reductions
        self._any_bad = bool(bad.any())

    def _dim(self, name: str) -> tuple[np.ndarray, pd.Index] | None:
        if name not in self._raw:
            return None
        if name not in self._dims:  # factorise lazily: unused dims cost nothing
            raw = self._raw[name]
            if isinstance(raw, pd.Categorical):
                codes, names = np.asarray(raw.codes), pd.Index(raw.categories)
            else:
                found_codes, found = pd.factorize(raw, use_na_sentinel=False)
                codes, names = np.asarray(found_codes), pd.Index(found)
            # the categorical's own codes (int8 / int16: no copy); group keys are built in int64
            self._dims[name] = (codes if codes.dtype.kind == "i" else codes.astype(np.int64),
                                names)
            self._codes[name] = {str(u): i for i, u in enumerate(names)}
        return self._dims[name]

    def code(self, name: str, value: str) -> int:
        """Code of one value of a dimension; -1 when absent (or the dimension is unknown)."""
        if self._dim(name) is None:
            return -1
        return self._codes[name].get(value, -1)

    def uniques(self, name: str) -> list[str]:
        dim = self._dim(name)
        return [] if dim is None else [str(u) for u in dim[1]]

    def groups(self, fixed: Mapping[str, str], wild: Sequence[str],
               sums: Sequence[str] | None = None) -> dict[tuple[str, ...], Agg]:
        """Aggregates of the rows matching ``fixed``, one per combination of ``wild`` values.

        Every reduction is one ``bincount`` / ``ufunc.at`` over the whole column with the
        unselected rows sent to a discard bin: no fancy indexing, no hashing when the key
        space is dense. ``sums`` names the value columns to sum (default: all; each is one
        pass over every row). Results are cached per (fixed, wild, sums): limits share scopes.
        """
        cache_key = (tuple(sorted(fixed.items())), tuple(wild),
                     None if sums is None else tuple(sums))
        cached = self._groups_cache.get(cache_key)
        if cached is not None:
            return cached
        found = self.columns(fixed, wild, sums)
        result = {
            key: Agg(
                sums={name: values[g] for name, values in found.sums.items()},
                mins={name: values[g] for name, values in found.mins.items()},
                rows=found.rows[g],
                bad=found.bad[g],
                first_bad=found.first_bad[g],
                oldest_ns=found.oldest_ns[g],
            )
            for g, key in enumerate(found.keys)
        }
        self._groups_cache[cache_key] = result
        return result

    def columns(self, fixed: Mapping[str, str], wild: Sequence[str],
                sums: Sequence[str] | None = None) -> Groups:
        """:meth:`groups` as columns (same figures, no per-group objects); cached alike."""
        cache_key = (tuple(sorted(fixed.items())), tuple(wild),
                     None if sums is None else tuple(sums))
        cached = self._columns_cache.get(cache_key)
        if cached is None:
            cached = self._from_wider(fixed, wild, cache_key[2])
            if cached is None:
                cached = self._groups(
                    fixed, wild,
                    self.values if sums is None else {name: self.values[name] for name in sums})
            self._columns_cache[cache_key] = cached
        return cached

    def _from_wider(self, fixed: Mapping[str, str], wild: Sequence[str],
                    sums: tuple[str, ...] | None) -> Groups | None:
        """A filtered grouping read off a cached grouping that has the filtered dims as wildcards
        (``venue=binance`` off the per-venue grouping): no pass over the rows. The figures are
        the same bits: ``bincount`` adds each bin's rows in row order either way. None when no
        such grouping is cached."""
        if not fixed:
            return None
        dims = [d for d in self._raw if d in fixed or d in wild]
        if len(dims) != len(fixed) + len(wild):
            return None
        wider = self._columns_cache.get(((), tuple(dims), sums))
        if wider is None:
            return None
        fixed_at = [(i, fixed[d]) for i, d in enumerate(dims) if d in fixed]
        wild_at = [dims.index(d) for d in wild]
        picked = [g for g, key in enumerate(wider.keys)
                  if all(key[i] == value for i, value in fixed_at)]
        if not picked:
            return _NO_GROUPS
        return Groups(
            keys=[tuple(wider.keys[g][i] for i in wild_at) for g in picked],
            sums={name: [values[g] for g in picked] for name, values in wider.sums.items()},
            mins={name: [values[g] for g in picked] for name, values in wider.mins.items()},
            rows=[wider.rows[g] for g in picked],
            bad=[wider.bad[g] for g in picked],
            first_bad=[wider.first_bad[g] for g in picked],
            oldest_ns=[wider.oldest_ns[g] for g in picked],
        )

    def _groups(self, fixed: Mapping[str, str], wild: Sequence[str],
                values: Mapping[str, np.ndarray | RowValues]) -> Groups:
        if self.n == 0:
            return _NO_GROUPS
        selection: np.ndarray | None = None
        for name, value in fixed.items():
            code = self.code(name, value)
            if code < 0:
                return _NO_GROUPS
            mask = self._dims[name][0] == code
            selection = mask if selection is None else selection & mask
        if selection is not None and not selection.any():
            return _NO_GROUPS

        sizes: list[int] = []
        uniques: list[pd.Index] = []
        dense = True
        if wild:  # in place: at 1M rows every temporary is 8 MB of fresh pages
            combined = np.zeros(self.n, dtype=np.int64)
            for name in wild:
                dim = self._dim(name)
                if dim is None:
                    return _NO_GROUPS
                np.multiply(combined, len(dim[1]), out=combined)
                np.add(combined, dim[0], out=combined)
                sizes.append(len(dim[1]))
                uniques.append(dim[1])
            space = int(np.prod(sizes, dtype=np.float64))
            if space <= 2 * self.n + 1024:
                gcode, n_groups = combined, space
            else:  # sparse key space: hash the combinations that occur
                dense = False
                gcode, gvalues = pd.factorize(combined)
                n_groups = len(gvalues)
        else:
            gcode, n_groups = np.zeros(self.n, dtype=np.int64), 1
        if selection is not None:  # bin n_groups = discarded rows (gcode is this call's own)
            gcode[~selection] = n_groups
        bins = n_groups + 1

        rows = np.bincount(gcode, minlength=bins)[:n_groups]
        present = np.flatnonzero(rows)
        sums = {
            name: _weighted_bins(gcode, array, bins)[present] for name, array in values.items()
        }
        first_bad_by_group = np.full(bins, -1, dtype=np.int64)
        if self._any_bad:  # a clean frame (the usual case) skips two passes
            bad_rows = self.bad if selection is None else self.bad & selection
            bad = np.bincount(gcode, weights=bad_rows.astype(np.float64),
                              minlength=bins)[present]
            bad_pos = np.flatnonzero(bad_rows)
            if len(bad_pos):
                groups_of_bad, first = np.unique(gcode[bad_pos], return_index=True)
                first_bad_by_group[groups_of_bad] = bad_pos[first]
        else:
            bad = np.zeros(len(present), dtype=np.float64)
        first_bad = first_bad_by_group[present]
        oldest = self._oldest(gcode, bins)[present]
        mins: dict[str, np.ndarray] = {}
        for name, array in self.mins.items():
            out = np.full(bins, np.nan)
            np.fmin.at(out, gcode, array)
            mins[name] = out[present]

        if not wild:
            keys: list[tuple[str, ...]] = [()]
        else:  # decode the group codes column-wise (vectorised), then zip into tuples
            flat: np.ndarray = present if dense else np.asarray(gvalues)[present]
            parts: list[list[str]] = []
            for size, names in zip(reversed(sizes), reversed(uniques), strict=True):
                digit = flat % size
                flat = flat // size
                labels = np.asarray([str(u) for u in names], dtype=object)
                parts.append(labels[digit].tolist())
            keys = list(zip(*reversed(parts), strict=True))
        return Groups(
            keys=keys,
            sums={name: array.tolist() for name, array in sums.items()},
            mins={name: array.tolist() for name, array in mins.items()},
            rows=rows[present].tolist(),
            bad=bad.astype(np.int64).tolist(),  # counts of 0/1 weights: exact
            first_bad=first_bad.tolist(),
            oldest_ns=np.where(oldest == _INT64_MAX, NAT, oldest).tolist(),
        )

    def _oldest(self, gcode: np.ndarray, bins: int) -> np.ndarray:
        """Oldest time per bin over the rows that have one (``_INT64_MAX`` for a bin without).

        Times after 1970 (every validated input) compare as unsigned integers with NAT
        (int64 min) above them all: a minimum over the unsigned view skips NAT with no masked
        8 MB copy of the column; earlier times take the masked copy."""
        if self._t_min is None:
            t = self.t_ns
            self._t_min = t.view(np.uint64) if not ((t < 0) & (t != NAT)).any() \
                else np.where(t == NAT, _INT64_MAX, t)
        if self._t_min.dtype == np.uint64:
            out = np.full(bins, np.iinfo(np.uint64).max, dtype=np.uint64)
            np.minimum.at(out, gcode, self._t_min)
            # at or above 2**63: only NAT rows (NAT's bits) or no rows (the initial max)
            return np.where(out >= np.uint64(1 << 63), _INT64_MAX, out.view(np.int64))
        oldest = np.full(bins, _INT64_MAX, dtype=np.int64)
        np.minimum.at(oldest, gcode, self._t_min)
        return oldest

    def lookup(self, fixed: Mapping[str, str]) -> np.ndarray:
        """Row indices matching every (dim, value), ascending: one pass over the codes of the
        most selective dim, then the other dims on the rows found. Nothing is kept: a sorted
        copy of the keys cost 8-16 MB at 1M rows plus a one-off sort (~100 ms) at the first
        pre-trade check, where this costs well under a millisecond per book (cached by the
        caller per book)."""
        found: list[tuple[int, np.ndarray, int]] = []
        for name in sorted(fixed):
            dim = self._dim(name)
            code = self.code(name, fixed[name])
            if dim is None or code < 0:
                return np.zeros(0, dtype=np.int64)
            found.append((len(dim[1]), dim[0], code))
        if not found:
            return np.arange(self.n, dtype=np.int64)
        found.sort(key=lambda item: -item[0])  # most distinct values first: fewest rows
        _, codes, code = found[0]
        rows = np.flatnonzero(codes == code)
        for _, codes, code in found[1:]:
            rows = rows[codes[rows] == code]
        return rows
