"""``json_rows.records``: the hot path's rows sent as one JSON document read back on PostgreSQL
(``json_to_recordset``) exactly as each value psycopg2 adapts alone (texts with quotes,
backslashes and control characters, times with offsets, floats at the edges, nested
documents for ``jsonb``)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
import pytest

from risk_monitor.adapters.sql import Storage
from risk_monitor.adapters.sql.json_rows import records as pg_records

_COLUMNS: list[tuple[str, list[Any]]] = [
    ("text", ["plain", "", "NULL", None, 'say "hi"', "back\\slash\\", "{a,b}", "x,y", " sp ",
              "é 漢 \u2028", "tab\tnl\n\x1f\x7f", "'single'", 5]),
    ("timestamptz", [datetime(2026, 12, 6, 0, 33, 10, 625787, tzinfo=UTC), None,
                     datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=5,
                                                                          minutes=30))),
                     datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59,
                                                              999999, tzinfo=UTC),
                     pd.Timestamp("2026-12-06 00:33:10.625787", tz="UTC")]),
    ("integer", [0, -1, 2**31 - 1, None, np.int64(7)]),
    ("bigint", [2**62, -(2**62), None]),
    ("double precision", [0.0, -0.0, 1e16, 1e-320, 1.7976931348623157e308, 0.1 + 0.2,
                          math.inf, -math.inf, math.nan, None, 999959.7799999999, 3,
                          np.float64(-0.0), np.float64(0.1 + 0.2)]),
]
_FLOATS = {"double precision"}
_TIMES = {"timestamptz"}


@pytest.mark.parametrize(("kind", "values"), _COLUMNS, ids=[c[0] for c in _COLUMNS])
def test_the_document_reads_back_as_each_adapted_value(
        pg_storage: Storage, kind: str, values: list[Any]) -> None:
    text = pg_records([{"v": v, "other": "left out"} for v in values], ["v"],
                      times=["v"] if kind in _TIMES else [],
                      floats=["v"] if kind in _FLOATS else [])
    assert "left out" not in text
    sent = [v.item() if isinstance(v, np.generic) else v for v in values]
    sql = (f"SELECT v::text FROM ROWS FROM (json_to_recordset(CAST(%(doc)s AS json))"
           f" AS (v {kind})) WITH ORDINALITY AS r(v, n) ORDER BY n")
    with pg_storage.engine.connect() as conn:
        conn.exec_driver_sql("SET extra_float_digits = 3")  # every digit compared
        as_document = [v for (v,) in conn.exec_driver_sql(sql, {"doc": text})]
        alone = [conn.exec_driver_sql(f"SELECT CAST(%(v)s AS {kind})::text", {"v": v}).scalar()
                 for v in sent]
    assert as_document == alone


def test_a_nested_document_is_the_jsonb_of_its_text(pg_storage: Storage) -> None:
    payloads = [{"a": 'q"b\\', "n": 1.5, "u": "é", "big": 1e16, "neg": -0.0, "none": None},
                [], None, {"nested": {"list": [1, 2.0, "x"]}}]
    text = pg_records([{"p": p} for p in payloads], ["p"])
    sql = ("SELECT p::text FROM ROWS FROM (json_to_recordset(CAST(%(doc)s AS json))"
           " AS (p jsonb)) WITH ORDINALITY AS r(p, n) ORDER BY n")
    with pg_storage.engine.connect() as conn:
        as_document = [v for (v,) in conn.exec_driver_sql(sql, {"doc": text})]
        alone = [conn.exec_driver_sql("SELECT CAST(%(v)s AS jsonb)::text",
                                      {"v": None if p is None else json.dumps(p)}).scalar()
                 for p in payloads]
    assert as_document == alone


def test_naive_times_and_unknown_types_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        pg_records([{"t": datetime(2026, 1, 1)}], ["t"], times=["t"])
    with pytest.raises(TypeError):  # a subclass, refused by orjson's fallback
        pg_records([{"t": pd.Timestamp("2026-01-01")}], ["t"])
    with pytest.raises(TypeError):
        pg_records([{"x": object()}], ["x"])
    assert pg_records([], ["x"]) == "[]"
