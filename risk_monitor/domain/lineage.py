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


def _entry(collected: Collected) -> dict[str, Any]:
    times = [s.as_of for s in collected.sources]
    return {"data_version": content_version(collected),
            "as_of": min(times).isoformat() if times else None,  # the oldest source
            "rows": len(collected.frame)}


def input_versions(snapshot: RiskSnapshot, config_version: str) -> dict[str, dict[str, Any]]:
    """Data version, as-of time and rows of each input of one evaluation, named like the
    Dagster assets they correspond to, plus the limit configuration version."""
    return {
        "market_prices": _entry(snapshot.prices),
        "exchange_positions": _entry(snapshot.positions),
        "exchange_balances": _entry(of_kind(snapshot.balances, SourceKind.EXCHANGE)),
        "custodian_balances": _entry(of_kind(snapshot.balances, SourceKind.CUSTODIAN)),
        "limit_config": {"data_version": config_version, "as_of": None, "rows": None},
    }
