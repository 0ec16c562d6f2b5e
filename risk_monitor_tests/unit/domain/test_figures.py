"""The one number rule (``domain.figures.finite``): every reader of a figure and the hot path's
per-tick float checks (tick hook, quote intake, ``unit/service/test_hot_path.py``) use it."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from risk_monitor.domain.figures import finite


@pytest.mark.parametrize(("value", "expected"), [
    (1.5, 1.5), (0.0, 0.0), (-2.0, -2.0), (3, 3.0), (np.float64(4.5), 4.5), (Decimal("2.5"), 2.5),
    ("100.25", 100.25),  # venues send prices as text
    (math.nan, None), (math.inf, None), (-math.inf, None), ("nan", None), ("inf", None),
    (np.float64("nan"), None), (None, None), (True, None), (False, None), ("", None),
    ("abc", None), ([1.0], None), ({}, None),
])
def test_a_finite_number_or_none(value: Any, expected: float | None) -> None:
    got = finite(value)
    assert got == expected and (got is None or type(got) is float)

