"""Plain-JSON guard for payloads we parse: string keys, finite numbers, bounded depth and size.

Python's json module reads ``NaN`` and ``Infinity`` and any depth its recursion allows; a
payload carrying them must end as our typed error at the boundary, not as a bare ValueError or
RecursionError somewhere downstream.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from risk_monitor.platform.errors import ConfigError

#: nesting and size bounds of a configuration document: generous for any real one
MAX_DOCUMENT_DEPTH = 32
MAX_DOCUMENT_NODES = 200_000


def check_plain_json(value: Any, key: str) -> None:
    """Plain JSON only: string keys, finite numbers, bounded depth and size (ConfigError).
    A NaN would otherwise fail the canonical (``allow_nan=False``) version hash later."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if depth > MAX_DOCUMENT_DEPTH or nodes > MAX_DOCUMENT_NODES:
            raise ConfigError(f"'{key}' is nested deeper than {MAX_DOCUMENT_DEPTH} levels or "
                              f"has more than {MAX_DOCUMENT_NODES} values", source="config",
                              key=key)
        if isinstance(item, Mapping):
            for name, child in item.items():
                if not isinstance(name, str):
                    raise ConfigError(f"'{key}' has a non-string key", source="config", key=key)
                stack.append((child, depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ConfigError(f"'{key}' holds a non-finite number", source="config",
                                  key=key)
        elif item is not None and not isinstance(item, str | int):  # bool is an int
            raise ConfigError(f"'{key}' holds a {type(item).__name__}, not JSON", source="config",
                              key=key)
