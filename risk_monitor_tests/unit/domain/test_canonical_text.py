"""The audit chain's canonical text, written in one walk, is exactly the text of its
definition (``_ENCODER.encode(_normalise(value))``, module docstring of
``domain/audit_chain.py``) for every kind of value a payload or row holds: a byte apart
and every stored hash would stop verifying."""

from __future__ import annotations

import enum
from collections import OrderedDict
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from risk_monitor.domain.audit_chain import _ENCODER, _normalise, canonical
from risk_monitor.domain.lineage import LineageDigest


class Status(enum.Enum):
    OK = "OK"


_TIMES = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                      timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=5))]))
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**300), max_value=10**300),
    st.floats(allow_nan=True, allow_infinity=True), st.text(), _TIMES, st.dates(),
    st.sampled_from([Status.OK, Decimal("1.50"), LineageDigest("ab" * 32, {}),
                     "\u007f\u2028é\"\\\n", -0.0, 1e16, 2**53 + 1]))
_KEYS = st.one_of(st.text(max_size=6), st.integers(-3, 3), st.booleans(), st.none())
_VALUES = st.recursive(
    _SCALARS, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.tuples(inner, inner),
        st.dictionaries(_KEYS, inner, max_size=5),
        st.dictionaries(st.text(max_size=4), inner, max_size=3).map(OrderedDict)),
    max_leaves=50)


@given(_VALUES)
@settings(max_examples=600, deadline=None)
def test_the_text_is_the_definitions(value: Any) -> None:
    assert canonical(value) == _ENCODER.encode(_normalise(value))


def test_an_audit_entry_of_each_kind() -> None:
    at = datetime(2026, 12, 6, 0, 33, 10, 625787, tzinfo=UTC)
    entry: dict[Any, Any] = {
        "prev_hash": "0" * 64, "at": at, "event": "alert.firing", "run_id": None,
        "payload": {"value": 1_000_040.0, "episode": 3, "ok": True, "when": date(2026, 1, 2),
                    "inputs": {"m": {"rows": 200, "as_of": at.isoformat()}},
                    "triggers": ("tick",), 1: "int key", "1": "text key"}}
    assert canonical(entry) == _ENCODER.encode(_normalise(entry))


def test_keys_sort_by_code_point_and_text_escapes_as_the_encoders() -> None:
    """orjson writes the text (``canonical``): its key order and escapes are the encoder's,
    across planes (UTF-16 would put U+10000 before U+E000) and for control characters."""
    value = {"\uffff": 1, "\U00010000": 2, "\ue000": 3, "Z": 4, "a": 5, "é": 6, "": 7,
             "a\x00": "\x00\x08\x1f\x7f\u2028\"\\/", "nested": [{"b": 1, "a": [0.1, None]}]}
    assert canonical(value) == _ENCODER.encode(_normalise(value))
