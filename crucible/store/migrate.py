"""Additive schema migration: add the tables, columns and indexes of ``schema.py`` a database lacks.

Runs at every open, so a database made by an earlier version keeps working after an upgrade.
Only additions: nothing is dropped, renamed or retyped. A new column must be nullable or have a
``server_default`` (existing rows need a value); anything else is refused with a clear error.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.schema import CreateColumn

__all__ = ["MigrationError", "upgrade"]


class MigrationError(Exception):
    """The database cannot be brought to the current schema by additions alone."""


def upgrade(conn: sa.Connection, metadata: sa.MetaData) -> list[str]:
    """Create missing tables, then add missing columns and indexes; return what was added."""
    metadata.create_all(conn)  # checkfirst: only the tables (with their indexes) that are missing
    inspector = sa.inspect(conn)
    preparer = conn.dialect.identifier_preparer
    added: list[str] = []
    for table in metadata.sorted_tables:
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            if column.primary_key or (not column.nullable and column.server_default is None):
                raise MigrationError(
                    f"cannot add column {table.name}.{column.name} to an existing database: "
                    "a new column must be nullable or have a server_default"
                )
            ddl = CreateColumn(column).compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {ddl}")
            added.append(f"column {table.name}.{column.name}")
        indexes = {i["name"] for i in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name in indexes or index.info.get("dialect", conn.dialect.name) != (
                conn.dialect.name
            ):
                continue  # there already, or made for another database only
            try:
                index.create(conn)
            except sa.exc.IntegrityError as exc:
                raise MigrationError(
                    f"cannot add unique index {index.name}: rows of {table.name} already "
                    f"repeat ({', '.join(c.name for c in index.columns)})"
                ) from exc
            added.append(f"index {index.name}")
    return added
