"""The audit log's hash chain, as pure functions: canonical content, entry hashes, row digests.

Every audit entry stores the hash of the entry before it and the hash of its own canonical
content, so editing, deleting or inserting an entry anywhere breaks the chain from that point.
A covered row (an alert state, an outbox notification, a compliance interval, a limit
configuration version) is sealed by an entry whose ``row_digest`` is the digest of the row's
audited columns; the row carries that entry's hash. Nothing here reads a clock or a database:
the SQL adapter and ``audit verify`` call these with values they already hold.

Canonical form: JSON with sorted keys and no whitespace; datetimes as ISO 8601 UTC; every
number as a float written with ``repr``. The last rule makes the digest survive the database:
PostgreSQL's JSONB prints ``1e16`` back as ``10000000000000000`` (an int to Python), and
SQLite may hand back ``2`` where ``2.0`` went in; both canonicalise to the same text.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

import orjson

#: prev_hash of the first entry of a chain
GENESIS_HASH = "0" * 64


def _normalise(value: Any) -> Any:
    kind = type(value)  # the common exact types first, each as the general rules below treat it
    if kind is str or value is None or kind is bool:
        return value
    if kind is float:
        return repr(value) if math.isfinite(value) else None
    if kind is dict:
        return {str(k): _normalise(v) for k, v in value.items()}
    if kind is int:
        return _normalise(float(value))
    return _normalise_any(value)


def _normalise_any(value: Any) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        number = float(value)
        return repr(number) if math.isfinite(number) else None
    if isinstance(value, enum.Enum):
        return _normalise(value.value)
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    return str(value)


#: ``json.dumps`` with these arguments builds this encoder per call; built once here
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
#: how that encoder writes a key (a ``str``)
_encode_key = json.encoder.encode_basestring


def canonical(value: Any) -> str:
    """The one text a value hashes as (module docstring): ``_ENCODER.encode(_normalise(value))``.
    The plain types (dicts, lists, text, numbers, aware times) are normalised in one walk
    that leaves text alone, and orjson writes the result: every number and time is text by
    then, and orjson escapes text, separates and sorts keys (by code point) exactly as that
    encoder does. The hot path hashes ~8 documents per change (~2 kB each): the encoder's
    escaping and joining per member in Python were ~2/3 of the audit seal's CPU. Any other
    value is normalised by ``_normalise``, so the text is the definition's exactly."""
    return orjson.dumps(_plain(value), option=orjson.OPT_SORT_KEYS).decode()


def _plain(value: Any) -> Any:
    """``_normalise(value)`` with the common exact types inline (text left as is)."""
    kind = type(value)
    if kind is dict:
        plain: dict[str, Any] = {}
        for key, item in value.items():
            member = type(item)
            name = key if type(key) is str else str(key)  # a later duplicate wins
            if member is str or item is None or member is bool:
                plain[name] = item
            elif member is float:
                plain[name] = repr(item) if math.isfinite(item) else None
            else:
                plain[name] = _plain(item)
        return plain
    if kind is str or value is None or kind is bool:
        return value
    if kind is float:
        return repr(value) if math.isfinite(value) else None
    if kind is int:
        return repr(float(value))
    if kind is list or kind is tuple:
        return [_plain(item) for item in value]
    if kind is datetime and value.tzinfo is not None:
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return _normalise(value)


def canonical_mapping(members: Mapping[str, str]) -> str:
    """:func:`canonical` of a mapping of text keys, from its values' canonical texts: the same
    bytes, without walking values whose text is known already (the hot path's unchanged
    inputs between evaluations)."""
    return "{" + ",".join(f"{_encode_key(key)}:{members[key]}" for key in sorted(members)) + "}"


#: hashlib lets go of the interpreter lock while it hashes 2048 bytes or more at once
#: (CPython's ``HASHLIB_GIL_MINSIZE``): cheap for a big file, but on the hot path (an
#: evaluation's versions, an alert's entry: 2-4 kB) getting the lock back waited for another
#: thread's switch interval (up to 5 ms; profiled at 0.27 ms a digest on average). Fed in
#: smaller pieces, the digest (the same bytes) is computed holding the lock: ~10 µs.
_PIECE = 2047


def feed(digest: Any, data: bytes) -> None:
    """``digest.update(data)`` in pieces the interpreter lock is kept for (see ``_PIECE``)."""
    if len(data) <= _PIECE:
        digest.update(data)
        return
    view = memoryview(data)
    for start in range(0, len(data), _PIECE):
        digest.update(view[start:start + _PIECE])


def sha256_hex(text: str) -> str:
    digest = hashlib.sha256()
    feed(digest, text.encode())
    return digest.hexdigest()


def row_digest(values: Mapping[str, Any], columns: tuple[str, ...]) -> str:
    """Digest of a row's audited columns (missing columns count as None)."""
    return sha256_hex(canonical({c: values.get(c) for c in columns}))


def entry_hash(*, prev_hash: str, at: datetime, event: str, correlation_id: str | None,
               run_id: str | None, subject: str | None, row_digest: str | None,
               payload: Mapping[str, Any]) -> str:
    """Hash of one entry's canonical content, chained to the previous entry's hash."""
    return sha256_hex(canonical({
        "prev_hash": prev_hash, "at": at, "event": event, "correlation_id": correlation_id,
        "run_id": run_id, "subject": subject, "row_digest": row_digest, "payload": payload,
    }))


def versions_digest(versions: Mapping[str, Any]) -> str:
    """Content address of one evaluation's input data versions: the audit entries seal this
    digest, the versions are stored once under it (``evaluation_lineage``), and ``audit verify``
    recomputes it from the stored versions, so an edited version row no longer matches."""
    if not isinstance(versions, Mapping):  # a forged row's versions: hashed all the same
        return sha256_hex(canonical(versions))
    return digest_of_canonical({str(k): canonical(v) for k, v in versions.items()})


def digest_of_canonical(members: Mapping[str, str]) -> str:
    """:func:`versions_digest` from each input's canonical text (``canonical(entry)``): the
    hot path keeps the texts of the inputs it evaluated before and canonicalises only what
    is new."""
    return sha256_hex(canonical_mapping(members))
