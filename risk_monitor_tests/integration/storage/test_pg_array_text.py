"""``codec.pg_array``: a column of the hot path's write sent as one array text reads back on
PostgreSQL exactly as the list psycopg2 adapts element by element (texts with quotes,
backslashes, braces and NULL-like words, times with offsets, floats at the edges)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from risk_monitor.adapters.sql import Storage
from risk_monitor.adapters.sql.codec import pg_array

_COLUMNS: list[tuple[str, list[Any]]] = [
    ("text", ["plain", "", "NULL", None, 'say "hi"', "back\\slash\\", "{a,b}", "x,y", " sp ",
              "é 漢 \u2028", "tab\tnl\n", "'single'"]),
    ("timestamptz", [datetime(2026, 12, 6, 0, 33, 10, 625787, tzinfo=UTC), None,
                     datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=5,
                                                                          minutes=30))),
                     datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59,
                                                              999999, tzinfo=UTC)]),
    ("integer", [0, -1, 2**31 - 1, None]),
    ("bigint", [2**62, -(2**62), None]),
    ("double precision", [0.0, -0.0, 1e16, 1e-320, 1.7976931348623157e308, 0.1 + 0.2,
                          math.inf, -math.inf, math.nan, None, 999959.7799999999]),
    ("jsonb", [json.dumps({"a": "q\"b\\", "n": 1.5, "u": "é"}), None, "[]", '"NULL"']),
]


@pytest.mark.parametrize(("kind", "values"), _COLUMNS, ids=[c[0] for c in _COLUMNS])
def test_the_array_text_reads_back_as_the_adapted_list(
        pg_storage: Storage, kind: str, values: list[Any]) -> None:
    text = pg_array(values)
    assert isinstance(text, str)
    sql = f"SELECT CAST(%(a)s AS {kind}[])::text, CAST(%(b)s AS {kind}[])::text"
    with pg_storage.engine.connect() as conn:
        conn.exec_driver_sql("SET extra_float_digits = 3")  # every digit compared
        as_text, as_list = conn.exec_driver_sql(sql, {"a": text, "b": values}).one()
    assert as_text == as_list


def test_other_types_are_left_to_psycopg2() -> None:
    naive = [datetime(2026, 1, 1)]
    assert pg_array(naive) is naive
    flags = [True, False]
    assert pg_array(flags) is flags
    assert pg_array([]) == "{}"
    assert pg_array(["a", None, 1, 2.5]) == '{"a",NULL,1,2.5}'
