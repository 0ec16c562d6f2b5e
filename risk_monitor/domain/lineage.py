"""Content-addressed data versions of an evaluation's inputs: one hash for both data paths.

The Dagster collection assets and the service's hot path hash their inputs with
:func:`content_version`, so the same rows carry the same data version whichever path evaluated
them, and an alert from either path names the exact data it was computed from.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pandas as pd

from risk_monitor.domain.engine import RiskSnapshot
from risk_monitor.domain.model import Collected, SourceKind


def content_version(collected: Collected) -> str:
    """A content hash of the rows and of each source's coverage (24 hex chars): two
    observations with equal data versions held the same data."""
    digest = hashlib.sha256()
    frame = collected.frame
    if len(frame):
        hashed = pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy()
        digest.update(hashed.tobytes())
    for source in sorted(collected.sources, key=lambda s: s.key):
        digest.update(f"{source.key}|{source.ok}|{source.rows}|{source.error_code}".encode())
    return digest.hexdigest()[:24]


def of_kind(collected: Collected, kind: SourceKind) -> Collected:
    """The part of a merged dataset that came from sources of one kind."""
    sources = tuple(s for s in collected.sources if s.kind is kind)
    venues = {s.venue for s in sources}
    frame = collected.frame
    if len(frame) and "venue" in frame.columns:
        frame = frame[frame["venue"].isin(venues)].reset_index(drop=True)
    return Collected(frame=frame, sources=sources)


class VersionCache:
    """Content versions of the last few input objects, by identity (the object is kept, so its
    id cannot be reused): hash each dataset once per version, not once per evaluation."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._seen: dict[int, tuple[Collected, str]] = {}
        self._parts: dict[tuple[int, SourceKind], tuple[Collected, Collected]] = {}

    def version(self, collected: Collected) -> str:
        hit = self._seen.get(id(collected))
        if hit is not None and hit[0] is collected:
            return hit[1]
        version = content_version(collected)
        if len(self._seen) >= self.size:
            self._seen.pop(next(iter(self._seen)))
        self._seen[id(collected)] = (collected, version)
        return version

    def part(self, collected: Collected, kind: SourceKind) -> Collected:
        """``of_kind(collected, kind)``, the same object while ``collected`` is."""
        key = (id(collected), kind)
        hit = self._parts.get(key)
        if hit is not None and hit[0] is collected:
            return hit[1]
        part = of_kind(collected, kind)
        if len(self._parts) >= 2 * self.size:
            self._parts.pop(next(iter(self._parts)))
        self._parts[key] = (collected, part)
        return part


def _entry(collected: Collected, cache: VersionCache | None = None) -> dict[str, Any]:
    times = [s.as_of for s in collected.sources]
    version = content_version(collected) if cache is None else cache.version(collected)
    return {"data_version": version,
            "as_of": min(times).isoformat() if times else None,  # the oldest source
            "rows": len(collected.frame)}


def input_versions(snapshot: RiskSnapshot, config_version: str, *,
                   cache: VersionCache | None = None) -> dict[str, dict[str, Any]]:
    """Data version, as-of time and rows of each input of one evaluation, named like the
    Dagster assets they correspond to, plus the limit configuration version."""
    balances = snapshot.balances
    if cache is not None:  # the split parts are new objects each time: key them on the whole
        exchange = cache.part(balances, SourceKind.EXCHANGE)
        custodian = cache.part(balances, SourceKind.CUSTODIAN)
    else:
        exchange = of_kind(balances, SourceKind.EXCHANGE)
        custodian = of_kind(balances, SourceKind.CUSTODIAN)
    return {
        "market_prices": _entry(snapshot.prices, cache),
        "exchange_positions": _entry(snapshot.positions, cache),
        "exchange_balances": _entry(exchange, cache),
        "custodian_balances": _entry(custodian, cache),
        "limit_config": {"data_version": config_version, "as_of": None, "rows": None},
    }
