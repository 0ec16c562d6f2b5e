"""Concrete limit scopes and their canonical keys.

A scope restricts data by venue, account, instrument and base asset; ``None`` means "any".
The canonical key (``portfolio``, ``venue:binance``, ``venue:binance|instrument:BTC/USDT:USDT``)
is what LimitResult.scope and alert fingerprints carry, so it must never change shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

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


@lru_cache(maxsize=1 << 16)
def parse_scope_key(key: str) -> Scope:
    """Inverse of :attr:`Scope.key` (instrument symbols may contain ':' but never '|').
    Cached (scopes are immutable): every full evaluation's per-tick evaluator and the alert
    policy parse the key of each result, and a desk's keys repeat from one to the next."""
    if key == PORTFOLIO_KEY:
        return Scope()
    values: dict[str, str] = {}
    for part in key.split("|"):
        dim, sep, value = part.partition(":")
        if not sep or dim not in SCOPE_DIMS or not value:
            raise ValueError(f"not a scope key: {key!r}")
        values[dim] = value
    return Scope.of(values)


def scope_builder(fixed: Mapping[str, str], wild: Sequence[str]
                  ) -> Callable[[tuple[str, ...]], Scope]:
    """Scope of a wildcard expansion's group key (values of ``wild``, in order), its canonical
    key included: the fixed parts are laid out once, so a scope costs a join and a
    :func:`keyed_scope`."""
    args: list[str | None] = [fixed.get(d) for d in SCOPE_DIMS]
    slots = [SCOPE_DIMS.index(d) for d in wild]
    if not wild:
        key = scope_key(fixed)
        return lambda _: keyed_scope(args[0], args[1], args[2], args[3], key)
    # the key's text between the wildcard values, cut out of Scope.key itself (the one
    # spelling of the canonical key) with a marker in each wildcard's place
    marker = "\x00"
    marked = Scope(*(marker if d in wild else v for d, v in zip(SCOPE_DIMS, args, strict=True)))
    *pieces, tail = marked.key.split(marker)
    if len(wild) == 1:
        (slot,), (head,) = slots, pieces

        def one_scope(key: tuple[str, ...]) -> Scope:
            args[slot] = key[0]
            return keyed_scope(args[0], args[1], args[2], args[3], head + key[0] + tail)

        return one_scope

    if len(wild) == 2:
        (slot0, slot1), (head, middle) = slots, pieces

        def two_scope(key: tuple[str, ...]) -> Scope:
            args[slot0], args[slot1] = key
            return keyed_scope(args[0], args[1], args[2], args[3],
                               head + key[0] + middle + key[1] + tail)

        return two_scope

    def scope_of(key: tuple[str, ...]) -> Scope:
        for slot, value in zip(slots, key, strict=True):
            args[slot] = value
        text = "".join([part for pair in zip(pieces, key, strict=True) for part in pair]) + tail
        return keyed_scope(args[0], args[1], args[2], args[3], text)

    return scope_of
