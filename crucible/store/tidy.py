"""What a database refuses in a record, and the record with it replaced.

PostgreSQL keeps no NUL character in text or JSON, and no database can encode a lone UTF-16
surrogate (``"\\ud800"``, which Python strings may hold) as UTF-8. A stage's metric, output or
error message may hold either. The writer tries a record as it is; only a record the database
refused is tidied (each such character becomes U+FFFD) and tried once more, so the usual path
pays nothing and one bad value never costs any other record.

``refused(err)`` says whether an error is the database refusing the rows themselves (a value or
a constraint): retrying the same rows cannot help, unlike a database that is busy or away.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from crucible.errors import StoreError
from crucible.store.rows import EXPERIMENTS, SHAPES, Record

__all__ = ["RowsRejected", "refused", "tidy"]

_BAD: Final = re.compile("[\x00\ud800-\udfff]")
_BAD_ESCAPE: Final = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")  # how JSON text may write them
_REPLACEMENT: Final = "\ufffd"
# SQLSTATE classes of a refused value: 22 data exception (bad character, too long, out of
# range), 23 integrity constraint violation.
_VALUE_CLASSES: Final = ("22", "23")


class RowsRejected(StoreError):
    """The SQLite writer process could not bind or store a value of the batch."""


def refused(err: BaseException) -> bool:
    """Whether ``err`` is the database (or its driver) refusing a value of the rows."""
    if isinstance(err, IntegrityError | DataError | RowsRejected | UnicodeError | OverflowError):
        return True
    if isinstance(err, DBAPIError):
        state = getattr(err.orig, "sqlstate", None)
        if isinstance(state, str) and state[:2] in _VALUE_CLASSES:
            return True
        cause = getattr(err.orig, "__cause__", None)  # asyncpg refusing an argument client-side
        if type(cause).__name__ == "DataError" and type(cause).__module__.startswith("asyncpg"):
            return True
        return isinstance(cause, UnicodeError)
    return False


def tidy(rec: Record) -> Record | None:
    """``rec`` with every NUL and lone surrogate replaced; None when it holds none."""
    shape = SHAPES.get(rec.op)
    row = _row(rec.row, () if shape is None else shape.json)
    exp = None if rec.experiment is None else _row(rec.experiment, EXPERIMENTS.json)
    if row == rec.row and exp == rec.experiment:
        return None
    return rec._replace(row=row, experiment=exp)


def _row(row: tuple[Any, ...], json_at: tuple[int, ...]) -> tuple[Any, ...]:
    return tuple(_json(v) if i in json_at else _value(v) for i, v in enumerate(row))


def _json(value: Any) -> Any:
    """A JSON column's text, re-encoded without what the database refuses."""
    if not isinstance(value, str):
        return value
    if _BAD.search(value) is None and _BAD_ESCAPE.search(value) is None:
        return value
    try:
        return json.dumps(_walk(json.loads(value)))
    except ValueError:
        return _BAD.sub(_REPLACEMENT, value)


def _value(value: Any) -> Any:
    if isinstance(value, str):
        return _BAD.sub(_REPLACEMENT, value)
    return value


def _walk(value: Any) -> Any:
    if isinstance(value, str):
        return _BAD.sub(_REPLACEMENT, value)
    if isinstance(value, list):
        return [_walk(v) for v in value]
    if isinstance(value, dict):
        return {_walk(k): _walk(v) for k, v in value.items()}
    return value
