"""``codec.safe_document`` walks a document once: what it returns is exactly what the two
general walks return (``redact(to_jsonable(value))``), types and depth limits included."""

from __future__ import annotations

import enum
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from risk_monitor.adapters.sql.codec import safe_document, to_jsonable
from risk_monitor.domain.lineage import LineageDigest
from risk_monitor.platform.logging import redact


class Colour(enum.Enum):
    RED = "red"


_KEYS = st.sampled_from(["a", "b", "password", "api_key", "api_key_env", "token", "rows", 1,
                         2.5, "Secret"])
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
    st.text(max_size=12), st.sampled_from([
        "", "Bearer abc.def", "xoxb-1234-abcd", "9d63ae44a3527feaf0830715f92215fc",
        "aB3" * 12, LineageDigest("9d63ae44", {}), Colour.RED,
        datetime(2026, 12, 6, tzinfo=UTC), datetime(2026, 12, 6, 0, 33, 10, 625787),
        datetime(2026, 1, 2, tzinfo=timezone(timedelta(hours=-5))), frozenset({1}),
        (1, "x")]))
_DOCUMENTS = st.recursive(
    _SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner),
                                      st.dictionaries(_KEYS, inner, max_size=4)),
    max_leaves=40)


def _same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (``1``, ``1.0`` and ``True`` differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def _nested(depth: int, leaf: Any) -> Any:
    return leaf if depth == 0 else {"k": [_nested(depth - 1, leaf)], "password": "x"}


@given(_DOCUMENTS)
@settings(max_examples=400, deadline=None)
def test_one_walk_returns_what_the_two_return(value: Any) -> None:
    assert _same(safe_document(value), redact(to_jsonable(value)))


def test_deep_documents_meet_the_same_depth_limits() -> None:
    for depth in range(12):
        for leaf in (None, "x", 1, {"a": 1}, [1], Colour.RED, datetime(2026, 1, 1, tzinfo=UTC)):
            value = _nested(depth, leaf)
            assert _same(safe_document(value), redact(to_jsonable(value))), (depth, leaf)
