"""FrameIndex: a filtered scope read off a cached wider grouping is the same bits as a pass
over the rows (``bincount`` adds each bin's rows in row order either way)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from risk_monitor.domain.frame_index import FrameIndex, Groups
from risk_monitor.domain.valuation import NAT

DIMS = (("venue", 4), ("account", 7), ("instrument", 30), ("asset", 9))
CASES = (
    ({"venue": "venue1"}, []),
    ({"venue": "venue2", "instrument": "instrument3"}, []),
    ({"venue": "venue0"}, ["instrument"]),
    ({"instrument": "instrument5"}, ["venue"]),
    ({"venue": "absent"}, []),
)


def _index(seed: int) -> FrameIndex:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    dims = {d: np.array([f"{d}{i}" for i in rng.integers(0, k, n)], dtype=object)
            for d, k in DIMS}
    gross = rng.normal(size=n) * 1e6
    gross[rng.random(n) < 0.05] = np.nan
    liq = rng.random(n) * 50
    liq[rng.random(n) < 0.3] = np.nan
    t_ns = rng.integers(10**18, 2 * 10**18, n)
    t_ns[rng.random(n) < 0.1] = NAT
    return FrameIndex(dims, {"gross": gross, "net": rng.normal(size=n)}, {"liq": liq},
                      rng.random(n) < 0.05, t_ns)


def _by_key(groups: Groups) -> dict[tuple[str, ...], tuple[object, ...]]:
    def same(value: float) -> object:
        return "nan" if isinstance(value, float) and math.isnan(value) else value

    return {
        key: (*(same(groups.sums[s][g]) for s in sorted(groups.sums)),
              *(same(groups.mins[m][g]) for m in sorted(groups.mins)),
              groups.rows[g], groups.bad[g], groups.first_bad[g], groups.oldest_ns[g])
        for g, key in enumerate(groups.keys)
    }


@pytest.mark.parametrize("seed", range(20))
def test_filtered_grouping_from_a_wider_one_equals_a_pass_over_the_rows(seed: int) -> None:
    direct, derived = _index(seed), _index(seed)
    for fixed, wild in CASES:
        wider = [d for d, _ in DIMS if d in fixed or d in wild]
        derived.columns({}, wider, ("gross", "net"))  # cached: the filtered one is read off it
        assert _by_key(derived.columns(fixed, wild, ("gross", "net"))) == \
            _by_key(direct.columns(fixed, wild, ("gross", "net")))


@pytest.mark.parametrize("times", ["recent", "with_pre_1970", "all_missing"])
def test_oldest_time_per_group_skips_missing_times(times: str) -> None:
    """The oldest time of a group is the minimum over its rows that have one (NAT skipped;
    NAT when none has), whichever way the index computes it."""
    rng = np.random.default_rng(5)
    n = 5000
    venues = np.array([f"v{i}" for i in rng.integers(0, 6, n)], dtype=object)
    t_ns = rng.integers(10**18, 2 * 10**18, n)
    t_ns[rng.random(n) < 0.3] = NAT
    t_ns[venues == "v5"] = NAT  # one group without any time
    if times == "with_pre_1970":
        t_ns[rng.random(n) < 0.05] = -rng.integers(1, 10**17)
    if times == "all_missing":
        t_ns[:] = NAT
    index = FrameIndex({"venue": venues}, {}, {}, np.zeros(n, dtype=bool), t_ns)
    groups = index.columns({}, ["venue"])
    for g, (venue,) in enumerate(groups.keys):
        present = t_ns[(venues == venue) & (t_ns != NAT)]
        assert groups.oldest_ns[g] == (int(present.min()) if len(present) else NAT)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("fixed", [
    {"venue": "venue1", "account": "account2", "instrument": "instrument3"},
    {"instrument": "instrument5"},
    {"venue": "venue0", "asset": "asset1"},
    {"venue": "absent", "account": "account1"},
    {},
])
def test_lookup_gives_the_matching_rows_in_order(seed: int, fixed: dict[str, str]) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    dims = {d: np.array([f"{d}{i}" for i in rng.integers(0, k, n)], dtype=object)
            for d, k in DIMS}
    index = FrameIndex(dims, {}, {}, np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64))
    expected = np.arange(n)
    for name, value in fixed.items():
        expected = expected[dims[name][expected] == value]
    np.testing.assert_array_equal(index.lookup(fixed), expected)


def test_row_values_sum_to_the_same_bits_as_a_column() -> None:
    rng = np.random.default_rng(11)
    n = 200_000  # several row slices
    dims = {"venue": np.array([f"v{i}" for i in rng.integers(0, 5, n)], dtype=object),
            "account": np.array([f"a{i}" for i in rng.integers(0, 40, n)], dtype=object)}
    realized = rng.normal(size=n) * 1e5
    bad, t_ns = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64)
    whole = FrameIndex(dims, {"realized": realized}, {}, bad, t_ns)
    sliced = FrameIndex(dims, {"realized": lambda rows: realized[rows].copy()}, {}, bad, t_ns)
    a = whole.columns({}, ["venue", "account"]).sums["realized"]
    b = sliced.columns({}, ["venue", "account"]).sums["realized"]
    assert np.asarray(a).view(np.uint64).tolist() == np.asarray(b).view(np.uint64).tolist()
