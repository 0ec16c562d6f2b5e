"""Many rows as one JSON document that PostgreSQL expands (``json_to_recordset`` /
``jsonb_to_recordset``): the one way the hot path's writers send rows in bulk.

The change transaction (a status change's states, outbox rows and audit entries), the
compliance step and the periodic write (latest results, metrics) store rows in the service
process, on the interpreter lock the tick loop needs. SQLAlchemy's multi-row statements (or
psycopg2's adaptation of a list) bind, process and quote every value in Python; here orjson
writes the whole table in one C call, psycopg2 quotes one text, and the server turns it back
into typed columns.

What each value becomes:
* times must be aware (a naive one raises: PostgreSQL would read it in the session's zone);
  aware ones keep their offset, which the server reads as the same instant;
* floats of the ``floats`` columns read back as psycopg2 sends a float alone: every digit,
  ``-0.0`` as ``0`` (a numeric literal: numeric has no negative zero), NaN and infinities as
  PostgreSQL spells them;
* any other non-finite number is JSON's ``null`` (a NULL column);
* numpy's scalars and pandas' ``Timestamp`` read as Python's; a nested document is a ``jsonb``
  column's value.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ColumnElement

from risk_monitor.adapters.errors import map_exception

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def records(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *,
            times: Collection[str] = (), floats: Collection[str] = ()) -> str:
    """``rows`` (only their ``columns``) as one JSON array of objects (module docstring):
    ``times`` are checked aware, ``floats`` spelled as psycopg2 sends them."""
    document = []
    for row in rows:
        record = {c: row[c] for c in columns}
        for c in times:
            _aware(record[c])
        for c in floats:
            record[c] = _float(record[c])
        document.append(record)
    return orjson.dumps(document, default=_default, option=_OPTIONS).decode()


def document(rows: Sequence[Mapping[str, Any]], *, source: str,
             times: Sequence[str] = ()) -> str:
    """The rows as they are (every key, for :func:`recordset`), as one JSON array text; a
    naive time in ``times`` raises the adapter's typed error (``UtcDateTime``'s rule)."""
    try:
        for row in rows:
            for name in times:
                _aware(row[name])
    except ValueError as error:
        raise map_exception(error, source=source) from error
    return orjson.dumps(rows, default=_default, option=_OPTIONS).decode()


def recordset(parameter: str, columns: Sequence[sa.Column[Any]]) -> sa.TableValuedAlias:
    """``jsonb_to_recordset(:parameter) AS r(column type, ...)``: the rows of a
    :func:`document` bound as ``parameter``, typed as ``columns`` (keys not named are ignored,
    a missing key reads NULL)."""
    rows: ColumnElement[Any] = sa.cast(sa.bindparam(parameter, type_=sa.Text()),
                                       postgresql.JSONB())
    return (sa.func.jsonb_to_recordset(rows)
            .table_valued(*[sa.column(c.name, c.type) for c in columns])
            .render_derived(name="r", with_types=True))


def _float(value: Any) -> Any:
    if value is None or type(value) is int:
        return value
    number = float(value)
    if math.isfinite(number):
        return number if number else 0.0
    return "NaN" if math.isnan(number) else "Infinity" if number > 0 else "-Infinity"


def _aware(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: pass timezone-aware UTC times")
    return value


def _default(value: Any) -> Any:
    """What orjson does not write itself: a datetime subclass (pandas' ``Timestamp``) as its
    ISO text (aware only), other numbers as Python's (non-finite: ``null``)."""
    if isinstance(value, datetime):
        return _aware(value).isoformat()
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    raise TypeError(f"{type(value).__name__} {value!r} has no JSON text for PostgreSQL")
