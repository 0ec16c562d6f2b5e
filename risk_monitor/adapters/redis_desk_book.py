"""The desk's expected book as its trading client publishes it in Redis.

Wire format (one HASH, default key ``rm:desk:book``; ``trading.desk_book_key``): field
``<venue>|position|<instrument>`` holds the signed base quantity the desk believes it holds,
``<venue>|balance|<asset>`` a balance it expects (e.g. at the custodian); values are decimal
strings. The trading client adds each of its own fills with ``HINCRBYFLOAT`` (atomic), and sets
``<key>:updated_at`` (unix seconds). A missing key is "no desk book published", never zeros.
"""

from __future__ import annotations

from typing import Any

from risk_monitor.domain.reconciliation import ItemKey
from risk_monitor.platform.errors import DataValidationError

DEFAULT_KEY = "rm:desk:book"


def read_desk_book(client: Any, key: str = DEFAULT_KEY) -> dict[ItemKey, float] | None:
    """The published book, or None when the desk published none."""
    raw = client.hgetall(key)
    if not raw:
        return None
    book: dict[ItemKey, float] = {}
    for name, value in raw.items():
        text = name.decode() if isinstance(name, bytes) else str(name)
        venue, kind, item = ([*text.split("|", 2), "", ""])[:3]
        if not venue or kind not in ("position", "balance") or not item:
            raise DataValidationError(f"desk book field {text[:100]!r} is not "
                                      "<venue>|position|<instrument> or <venue>|balance|<asset>",
                                      source="desk_book", details={"field": "desk_book"})
        try:
            book[(venue, item, kind)] = float(value)
        except ValueError as exc:
            raise DataValidationError(f"desk book {text[:100]!r}: not a number",
                                      source="desk_book", details={"field": text}) from exc
    return book

