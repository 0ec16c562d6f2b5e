"""Concrete limit scopes and their canonical keys.

A scope restricts data by venue, account, instrument and base asset; ``None`` means "any".
The canonical key (``portfolio``, ``venue:binance``, ``venue:binance|instrument:BTC/USDT:USDT``)
is what LimitResult.scope and alert fingerprints carry, so it must never change shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: Scope dimensions in canonical key order.
SCOPE_DIMS: tuple[str, ...] = ("venue", "account", "instrument", "asset")
WILDCARD = "*"
PORTFOLIO_KEY = "portfolio"


class _Key:
    """``functools.cached_property`` without its lock (Python 3.11 takes a class-wide RLock on
    every first access; thousands of scopes per evaluation): computes :meth:`Scope._key` once and
    stores it in the instance ``__dict__``, which shadows this non-data descriptor afterwards."""

    def __get__(self, scope: Scope, owner: type | None = None) -> str:
        value = scope._key()
        scope.__dict__["key"] = value
        return value


@dataclass(frozen=True)
class Scope:
    """A concrete scope (no wildcards)."""

    venue: str | None = None
    account: str | None = None
    instrument: str | None = None
    asset: str | None = None

    #: canonical key, computed once: sorting and result building read it many times
    key = _Key()

    def _key(self) -> str:
        # spelled out (no items() dict, no getattr): thousands of scopes per evaluation
        parts = []
        if self.venue is not None:
            parts.append(f"venue:{self.venue}")
        if self.account is not None:
            parts.append(f"account:{self.account}")
        if self.instrument is not None:
            parts.append(f"instrument:{self.instrument}")
        if self.asset is not None:
            parts.append(f"asset:{self.asset}")
        return "|".join(parts) if parts else PORTFOLIO_KEY

    def items(self) -> dict[str, str]:
        """The restricted dimensions, in canonical order."""
        return {d: v for d in SCOPE_DIMS if (v := getattr(self, d)) is not None}

    def contains(self, venue: str, account: str, instrument: str | None, asset: str) -> bool:
        """Does a position / balance at these coordinates fall inside the scope?"""
        return (
            (self.venue is None or self.venue == venue)
            and (self.account is None or self.account == account)
            and (self.instrument is None or self.instrument == instrument)
            and (self.asset is None or self.asset == asset)
        )

    @classmethod
    def of(cls, mapping: Mapping[str, str | None]) -> Scope:
        get = mapping.get
        return cls(get("venue"), get("account"), get("instrument"), get("asset"))


_new = object.__new__
_set = object.__setattr__


def keyed_scope(venue: str | None, account: str | None, instrument: str | None,
                asset: str | None, key: str) -> Scope:
    """``Scope(venue, account, instrument, asset)`` whose canonical ``key`` the caller already
    built (a wildcard expansion joins it from laid-out parts): one instance dict instead of a
    frozen ``__init__`` (four ``object.__setattr__``) plus the key, for thousands of scopes
    per evaluation. The same instance: equal, hashable, immutable."""
    scope = _new(Scope)
    _set(scope, "__dict__", {"venue": venue, "account": account, "instrument": instrument,
                             "asset": asset, "key": key})
    return scope


def scope_key(mapping: Mapping[str, str | None]) -> str:
    """Canonical key of a scope mapping (order of the mapping does not matter)."""
    return Scope.of(mapping).key


def parse_scope_key(key: str) -> Scope:
    """Inverse of :attr:`Scope.key` (instrument symbols may contain ':' but never '|')."""
    if key == PORTFOLIO_KEY:
        return Scope()
    values: dict[str, str] = {}
    for part in key.split("|"):
        dim, sep, value = part.partition(":")
        if not sep or dim not in SCOPE_DIMS or not value:
            raise ValueError(f"not a scope key: {key!r}")
        values[dim] = value
    return Scope.of(values)
