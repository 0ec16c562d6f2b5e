"""The desk's expected book as its trading client publishes it in Redis.

Wire format (one HASH, default key ``rm:desk:book``; ``trading.desk_book_key``): field
``<venue>|position|<instrument>`` holds the signed base quantity the desk believes it holds,
``<venue>|balance|<asset>`` a balance it expects (e.g. at the custodian); values are decimal
strings. The trading client adds each of its own fills with ``HINCRBYFLOAT`` (atomic), and sets
``<key>:updated_at`` (unix seconds). It also records, in the HASH ``<key>:as_of`` under the same
field, when it last changed each item (unix seconds, in the same MULTI as the change): the
reconciliation compares an item only with a venue report as of after that time (a monitor
lagging the desk is "desk ahead", not a break). Without ``:as_of`` the book-wide ``updated_at``
stands for every item (coarser: a desk trading on one venue then delays the comparison of all);
without either, items are compared by value alone. A missing key is "no desk book published",
never zeros. Both HASHes are read in one MULTI, so a value never pairs with another time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from risk_monitor.domain.reconciliation import DeskBook, ItemKey
from risk_monitor.platform.errors import DataValidationError

DEFAULT_KEY = "rm:desk:book"


def read_desk_book(client: Any, key: str = DEFAULT_KEY) -> DeskBook | None:
    """The published book with its items' times, or None when the desk published none."""
    pipe = client.pipeline(transaction=True)
    pipe.hgetall(key)
    pipe.hgetall(f"{key}:as_of")
    pipe.get(f"{key}:updated_at")
    raw, times, updated = pipe.execute()
    if not raw:
        return None
    book: dict[ItemKey, float] = {}
    as_of: dict[ItemKey, datetime] = {}
    stamped = {_text(name): value for name, value in (times or {}).items()}
    everything = _when(updated, "updated_at") if updated is not None else None
    for name, value in raw.items():
        text = _text(name)
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
        changed = _when(stamped[text], text) if text in stamped else everything
        if changed is not None:
            as_of[(venue, item, kind)] = changed
    return DeskBook(book, as_of)


def _text(name: Any) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def _when(value: Any, field: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(_text(value)), UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise DataValidationError(f"desk book time of {field[:100]!r}: not unix seconds",
                                  source="desk_book", details={"field": field}) from exc
