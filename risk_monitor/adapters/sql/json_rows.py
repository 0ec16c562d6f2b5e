"""Many rows as one JSON document that PostgreSQL expands (``jsonb_to_recordset``).

The hot path's periodic write stores hundreds of rows every few seconds (latest results,
metrics), in the service process, on the interpreter lock the tick loop needs. SQLAlchemy's
multi-row statements bind, process and quote every value in Python: ~50 ms of CPU a round
for 200 results and 400 metrics. orjson encodes the rows in C, psycopg2 quotes one text,
and the server turns it back into typed columns.

Values read back as the column's own binding stores them: ``jsonb`` keeps numbers as
``numeric`` (``-0.0`` becomes ``0``, as psycopg2's numeric literal did), NaN and infinities
become NULL (orjson), and a naive time is refused (``UtcDateTime``'s rule).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ColumnElement

from risk_monitor.adapters.errors import map_exception

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def document(rows: Sequence[Mapping[str, Any]], *, source: str,
             times: Sequence[str] = ()) -> str:
    """The rows as one JSON array text (for :func:`recordset`). ``times``: the rows' time
    columns, each refused when naive (``UtcDateTime``'s rule and error; aware ones keep their
    offset, which the server reads as the same instant)."""
    for row in rows:
        for name in times:
            value = row[name]
            if value is not None and value.tzinfo is None:
                raise map_exception(ValueError(
                    f"naive datetime {value!r}: pass timezone-aware UTC times"), source=source)
    return orjson.dumps(rows, default=_default, option=_OPTIONS).decode()


def _default(value: Any) -> Any:
    """What orjson leaves alone: a subclass of a time (pandas' ``Timestamp``) or a number."""
    if isinstance(value, datetime):
        return datetime.isoformat(value)
    if isinstance(value, float | int):
        return float(value) if isinstance(value, float) else int(value)
    raise TypeError(f"{type(value).__name__} is not a column value")


def recordset(parameter: str, columns: Sequence[sa.Column[Any]]) -> sa.TableValuedAlias:
    """``jsonb_to_recordset(:parameter) AS r(column type, ...)``: the rows of a
    :func:`document` bound as ``parameter``, typed as ``columns`` (keys not named are ignored,
    a missing key reads NULL)."""
    rows: ColumnElement[Any] = sa.cast(sa.bindparam(parameter, type_=sa.Text()),
                                       postgresql.JSONB())
    return (sa.func.jsonb_to_recordset(rows)
            .table_valued(*[sa.column(c.name, c.type) for c in columns])
            .render_derived(name="r", with_types=True))
