"""Quote intake's per-tick conversions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from risk_monitor.service.quote_intake import epoch_ns


def test_epoch_ns_remembers_only_the_very_datetime_it_converted_last() -> None:
    """The feed and ``tick_of`` convert the same timestamp object: the second conversion is
    remembered; any other object (an equal one included) is converted."""
    first = datetime(2026, 1, 1, 0, 0, 0, 123_456, tzinfo=UTC)
    second = first + timedelta(microseconds=1)
    expected = int(pd.Timestamp(first).value)
    for _ in range(2):
        assert epoch_ns(first) == expected
        assert epoch_ns(first) == expected
        assert epoch_ns(second) == expected + 1_000
        assert epoch_ns(first.replace()) == expected  # equal, not the same object
    assert epoch_ns(pd.Timestamp(first) + pd.Timedelta(nanoseconds=7)) == expected + 7
    assert epoch_ns(1_767_225_600_123) == 1_767_225_600_123_000_000  # epoch ms
    assert epoch_ns(None) is None
