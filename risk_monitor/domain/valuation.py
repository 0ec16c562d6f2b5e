"""Asset → USD prices and freshness rules shared by every risk calculation.

Stablecoins count as 1 USD by convention; any other asset needs a fresh market price, and an
asset without one gets NaN so that everything depending on it turns UNKNOWN (fail closed).
Timestamps travel as int64 nanoseconds inside the hot loops (``NAT`` marks a missing time) so
1M-row frames stay vectorised.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, cast

import numpy as np
import pandas as pd
from pandas.core.arrays import DatetimeArray

from risk_monitor.domain.frame_rules import key_codes

#: Valued at exactly 1 USD (see docs/risk-math.md for why and what that hides).
DEFAULT_STABLECOINS: frozenset[str] = frozenset({"USDT", "USDC", "USD", "BUSD", "FDUSD", "DAI", "TUSD"})

#: int64 value numpy/pandas use for NaT.
NAT = np.iinfo(np.int64).min
_NS = 1_000_000_000


def ns_of(moment: datetime) -> int:
    """A timezone-aware datetime as int64 ns since the epoch; naive datetimes are refused.

    A plain ``datetime`` (whole µs) by integer arithmetic: the same value as
    ``pd.Timestamp(moment).value`` without building a Timestamp (~2 µs; hundreds of source
    statuses per evaluation). A pandas Timestamp (it may carry ns) goes through pandas."""
    if moment.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware (UTC)")
    if type(moment) is datetime:
        return (moment - _EPOCH) // _US * 1000
    return int(pd.Timestamp(moment).value)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


@lru_cache(maxsize=1 << 16)
def datetime_of(ns: int) -> datetime | None:
    """Inverse of :func:`ns_of` to the microsecond (nanoseconds dropped, as
    ``Timestamp.to_pydatetime`` does); ``NAT`` gives None. Plain arithmetic, memoised: every
    limit result calls it and thousands of results share a handful of input times (a hit costs
    ~0.1 µs against ~2 µs for the arithmetic; datetimes are immutable, so sharing is safe)."""
    if ns == NAT:
        return None
    return _EPOCH + timedelta(microseconds=ns // 1000)


def min_ns(a: int, b: int) -> int:
    """The older of two ns times, NAT counting as no time."""
    return b if a == NAT else a if b == NAT else min(a, b)


def times_ns(frame: pd.DataFrame, primary: str, fallback: str) -> np.ndarray:
    """Row times as int64 ns: ``primary`` where present, else ``fallback``, else NAT."""
    out = np.full(len(frame), NAT, dtype=np.int64)
    for column in (fallback, primary):  # primary last so it wins
        if column not in frame.columns or len(frame) == 0:
            continue
        values = column_ns(frame[column])
        np.copyto(out, values, where=values != NAT)
    return out


def column_ns(series: pd.Series) -> np.ndarray:
    """A datetime column as int64 UTC nanoseconds (NaT and unparsable values -> NAT)."""
    if not isinstance(series.dtype, pd.DatetimeTZDtype) or series.dtype.unit != "ns":
        series = pd.to_datetime(series, utc=True, errors="coerce")
        if series.dt.tz is not None:
            series = series.dt.tz_convert("UTC")
        series = series.astype("datetime64[ns, UTC]")
    return asi8(series)


def utc_times(ns: np.ndarray) -> pd.DatetimeIndex:
    """int64 nanoseconds (NAT → NaT) as UTC datetimes, without copying or parsing: a view of
    ``ns`` (do not change ``ns`` afterwards). ``pd.to_datetime`` on 1M integers costs ~15x
    more and ``tz_localize`` copies (8 MB at 1M rows); ``DatetimeArray._simple_new`` is
    pandas-internal (pandas is pinned < 3), ``test_valuation`` pins the result."""
    values = np.asarray(ns, dtype=np.int64).view("datetime64[ns]")
    return pd.DatetimeIndex(cast(Any, DatetimeArray)._simple_new(values, dtype=_UTC_NS),
                            copy=False)


_UTC_NS = pd.DatetimeTZDtype("ns", "UTC")


def frame_of(data: dict[str, Any], columns: tuple[str, ...]) -> pd.DataFrame:
    """``pd.DataFrame(data, columns=columns)`` that adopts every array as is: no copy and no
    block consolidation (``copy=False`` keeps one block per array). At 1M rows consolidation
    (stack + reorder copies) cost more than the P&L arithmetic itself, and ~100 MB; columns
    computed into the rows of one :func:`float_block` and arrays of the input frame are shared,
    so the frame must be read, not written in place."""
    return pd.DataFrame({name: data[name] for name in columns}, columns=list(columns), copy=False)


def float_block(names: Sequence[str], n: int) -> dict[str, np.ndarray]:
    """A writable float64 row per name, all rows of one uninitialised (len(names), n) block:
    compute columns into them with ``out=`` and :func:`frame_of` adopts the rows (no
    temporaries, no copy, one allocation)."""
    block = np.empty((len(names), n), dtype=np.float64)
    return dict(zip(names, block, strict=True))


def asi8(series: pd.Series) -> np.ndarray:
    """int64 nanoseconds of a datetime64[ns, UTC] series (NaT → NAT)."""
    return np.asarray(cast(Any, series.array).asi8, dtype=np.int64)


def floats(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A numeric column as float64 (missing column or bad values → NaN)."""
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    series = frame[column]
    if series.dtype != np.float64:
        series = pd.to_numeric(series, errors="coerce")
    return np.asarray(series, dtype=np.float64)


def strings(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A string column as an object array, as is (no NaN scan: validated upstream, and a NaN
    key simply forms its own group)."""
    if column not in frame.columns:
        return np.full(len(frame), "", dtype=object)
    series = frame[column]
    if isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype(object)
    return np.asarray(series, dtype=object)


def categorical(frame: pd.DataFrame, column: str) -> pd.Categorical:
    """A key column as a Categorical ('' for missing): factorised once, then every grouping
    and lookup downstream works on its integer codes, and the frame never copies strings."""
    if column not in frame.columns:
        return pd.Categorical.from_codes(cast(Any, np.zeros(len(frame), dtype=np.int8)),
                                         categories=pd.Index([""]))
    series = frame[column]
    if isinstance(series.dtype, pd.CategoricalDtype):
        cat = series.array
        assert isinstance(cat, pd.Categorical)
        if (cat.codes < 0).any():
            cat = cat.add_categories([""]) if "" not in cat.categories else cat
            cat = cat.fillna("")
        # a filtered frame keeps every category: only values present name groups and venues
        if not np.bincount(cat.codes, minlength=len(cat.categories)).all():
            cat = cat.remove_unused_categories()
        return cat
    if series.dtype == object:
        codes, uniques = key_codes(frame, column)  # hashed once, shared with validation
    else:
        codes, uniques = pd.factorize(np.asarray(series, dtype=object))
    if (codes < 0).any():
        where = np.flatnonzero(uniques == "")
        fill = int(where[0]) if len(where) else len(uniques)
        if not len(where):
            uniques = np.append(uniques, "")
        codes = np.where(codes < 0, fill, codes)
    return pd.Categorical.from_codes(cast(Any, codes), categories=pd.Index(uniques, dtype=object))


@dataclass(frozen=True)
class Freshness:
    """The freshness budget: a time is usable when ``now - max_age_s <= t <= now + skew``."""

    now: datetime
    max_age_s: float
    max_future_skew_s: float = 0.0

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("now must be timezone-aware (UTC)")
        if not self.max_age_s > 0:
            raise ValueError("max_age_s must be > 0")
        if self.max_future_skew_s < 0:
            raise ValueError("max_future_skew_s must be >= 0")

    @property
    def now_ns(self) -> int:
        return ns_of(self.now)

    @property
    def oldest_ns(self) -> int:
        return self.now_ns - int(self.max_age_s * _NS)

    @property
    def newest_ns(self) -> int:
        return self.now_ns + int(self.max_future_skew_s * _NS)

    def fresh(self, t_ns: np.ndarray) -> np.ndarray:
        """Boolean mask of usable times (NAT is never fresh)."""
        return (t_ns != NAT) & (t_ns >= self.oldest_ns) & (t_ns <= self.newest_ns)

    def age_s(self, t_ns: int) -> float:
        return (self.now_ns - t_ns) / _NS


@dataclass(frozen=True)
class AssetPrices:
    """USD price per asset with the oldest quote time behind it (NAT for stablecoins)."""

    usd: dict[str, float]
    source_ns: dict[str, int]
    stablecoins: frozenset[str]

    def price(self, asset: str) -> float:
        """USD price of one unit; NaN when no fresh price exists (never 0)."""
        if asset in self.stablecoins:
            return 1.0
        return self.usd.get(asset, float("nan"))

    def prices(self, assets: np.ndarray | pd.Categorical) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised :meth:`price` plus the source time per element."""
        if len(assets) == 0:
            return np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.int64)
        if isinstance(assets, pd.Categorical):
            inverse, uniques = assets.codes, np.asarray(assets.categories, dtype=object)
        else:
            inverse, uniques = pd.factorize(assets)
        price, times = self.per_value(uniques)
        return price[inverse], times[inverse]

    def per_value(self, uniques: Sequence[object] | np.ndarray | pd.Index
                  ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`prices` of distinct values (a Categorical's categories): gather them by
        code slice by slice instead of building two full-length columns."""
        names = [str(a) for a in uniques]
        price = np.array([self.price(a) for a in names], dtype=np.float64)
        times = np.array(
            [NAT if a in self.stablecoins else self.source_ns.get(a, NAT) for a in names],
            dtype=np.int64,
        )
        return price, times


def quote_times_ns(prices: pd.DataFrame) -> np.ndarray:
    """A quote's time is the exchange event time, else our receive time."""
    return times_ns(prices, "timestamp", "received_at")


def asset_prices(
    prices: pd.DataFrame, freshness: Freshness, stablecoins: Iterable[str] = DEFAULT_STABLECOINS
) -> AssetPrices:
    """Median ``last`` of the fresh quotes of each base against a stablecoin, any venue.

    The median over venues resists one venue printing a bad tick; a venue with a stale quote
    simply drops out of the median instead of poisoning it.
    """
    stable = frozenset(stablecoins)
    if len(prices) == 0:
        return AssetPrices({}, {}, stable)
    t = quote_times_ns(prices)
    last = floats(prices, "last")
    base = strings(prices, "base")
    quote = strings(prices, "quote")
    usable = freshness.fresh(t) & np.isfinite(last) & (last > 0) & np.isin(quote, list(stable))
    if not usable.any():
        return AssetPrices({}, {}, stable)
    frame = pd.DataFrame({"base": base[usable], "last": last[usable], "t": t[usable]})
    grouped = frame.groupby("base", sort=True)
    median = grouped["last"].median()
    oldest = grouped["t"].min()
    return AssetPrices(
        {str(k): float(v) for k, v in median.items()},
        {str(k): int(v) for k, v in oldest.items()},
        stable,
    )


#: Columns of :func:`latest_quotes`.
LATEST_QUOTE_COLUMNS: tuple[str, ...] = ("venue", "instrument", "base", "quote", "mark", "t_ns")


def latest_quotes(prices: pd.DataFrame, freshness: Freshness) -> pd.DataFrame:
    """The newest fresh quote per (venue, instrument) with the mark to use (mark, else last)."""
    if len(prices) == 0:
        return pd.DataFrame({c: [] for c in LATEST_QUOTE_COLUMNS})
    t = quote_times_ns(prices)
    mark = floats(prices, "mark")
    last = floats(prices, "last")
    mark = np.where(np.isfinite(mark) & (mark > 0), mark, last)
    usable = freshness.fresh(t) & np.isfinite(mark) & (mark > 0)
    # oldest first (stable), then the last row of each (venue, instrument): what
    # ``sort_values`` + ``drop_duplicates(keep="last")`` give, with one frame built instead of
    # four (the hot path runs this on every full evaluation)
    rows = np.flatnonzero(usable)
    rows = rows[np.argsort(t[rows], kind="stable")]
    venue, instrument = strings(prices, "venue")[rows], strings(prices, "instrument")[rows]
    pair = (pd.factorize(venue)[0].astype(np.int64) * (len(rows) + 1)
            + pd.factorize(instrument)[0])
    _, last_of_pair = np.unique(pair[::-1], return_index=True)
    keep = np.sort(len(rows) - 1 - last_of_pair)
    rows = rows[keep]
    return frame_of({"venue": venue[keep], "instrument": instrument[keep],
                     "base": strings(prices, "base")[rows],
                     "quote": strings(prices, "quote")[rows],
                     "mark": mark[rows], "t_ns": t[rows]}, LATEST_QUOTE_COLUMNS)
