"""Find ids by their first characters, as the CLI's tables show them (``52286e9f``).

The match is exact (case-sensitive, ``%`` and ``_`` in the prefix are plain characters) and
served by an index: a range ``prefix <= id < successor`` on the SQLite primary key (its
BINARY collation orders by code point), and PostgreSQL's byte-wise ``~>=~``/``~<~`` on the
``varchar_pattern_ops`` index of ``schema.py`` (right in any database collation, and usable by
a generic plan too). ``LIKE 'prefix%'`` guards both ranges.
"""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa

__all__ = ["prefix_match", "successor"]

_MAX_CODE_POINT: Final = 0x10FFFF
_SURROGATES: Final = range(0xD800, 0xE000)


def successor(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix``; None when none is."""
    text = prefix
    while text:
        last = ord(text[-1]) + 1
        if last in _SURROGATES:  # not encodable: the next code point that is
            last = _SURROGATES.stop
        if last <= _MAX_CODE_POINT:
            return text[:-1] + chr(last)
        text = text[:-1]
    return None


def prefix_match(
    column: sa.ColumnElement[str], prefix: str, dialect: str
) -> sa.ColumnElement[bool]:
    """``column`` starts with ``prefix``, as a condition an index on ``column`` serves."""
    if not prefix:
        raise ValueError("an empty prefix matches every id")
    upper = successor(prefix)
    conds: list[sa.ColumnElement[bool]] = []
    if dialect == "postgresql":  # byte-wise, whatever the database's collation
        conds.append(column.op("~>=~", is_comparison=True)(prefix))
        if upper is not None:
            conds.append(column.op("~<~", is_comparison=True)(upper))
    else:
        conds.append(column >= prefix)
        if upper is not None:
            conds.append(column < upper)
    conds.append(column.startswith(prefix, autoescape=True))  # % _ and / escaped
    return sa.and_(*conds)
