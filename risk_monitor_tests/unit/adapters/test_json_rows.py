"""Rows as one JSON document for PostgreSQL (``adapters/sql/json_rows.py``): what each value
becomes in the text the server expands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import orjson
import pandas as pd
import pytest

from risk_monitor.adapters.sql.json_rows import document
from risk_monitor.platform.errors import DataValidationError

AT = datetime(2026, 12, 6, 8, 0, 0, 123456, tzinfo=UTC)


def test_values_are_written_as_the_columns_read_them() -> None:
    rows = [{"at": AT, "east": AT.astimezone(timezone(timedelta(hours=2))),
             "stamp": pd.Timestamp(AT), "nan": float("nan"), "inf": -float("inf"),
             "np_float": np.float64(1.5), "np_nan": np.float64("nan"), "np_int": np.int64(7),
             "none": None, "text": 'a "b" \\ ü', "labels": {"venue": "binance"}}]
    (decoded,) = orjson.loads(document(rows, source="test", times=("at", "east", "stamp")))
    assert datetime.fromisoformat(decoded["at"]) == AT
    assert datetime.fromisoformat(decoded["east"]) == AT  # the same instant, its own offset
    assert datetime.fromisoformat(decoded["stamp"]) == AT
    assert decoded["nan"] is None and decoded["inf"] is None and decoded["np_nan"] is None
    assert (decoded["np_float"], decoded["np_int"], decoded["none"]) == (1.5, 7, None)
    assert decoded["text"] == 'a "b" \\ ü' and decoded["labels"] == {"venue": "binance"}


def test_a_naive_time_is_refused_as_the_column_type_refuses_it() -> None:
    with pytest.raises(DataValidationError, match="naive datetime"):
        document([{"at": AT.replace(tzinfo=None)}], source="test", times=("at",))
