"""Additive schema migration: add the tables, columns and indexes of ``schema.py`` a database lacks.

Runs at every open, so a database made by an earlier version keeps working after an upgrade.
Only additions: nothing is dropped, renamed or retyped. A new column must be nullable or have a
``server_default`` (existing rows need a value); anything else is refused with a clear error.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.schema import CreateColumn

__all__ = ["MigrationError", "upgrade"]


class MigrationError(Exception):
    """The database cannot be brought to the current schema by additions alone."""


def upgrade(conn: sa.Connection, metadata: sa.MetaData) -> list[str]:
    """Create missing tables, then add missing columns and indexes; return what was added.

    Everything that would be refused is refused before anything is changed: a SQLite file
    that holds only other tables (another program's database), or a column that cannot be
    added to a table that exists.
    """
    inspector = sa.inspect(conn)
    existing = set(inspector.get_table_names())
    ours = set(metadata.tables)
    if conn.dialect.name == "sqlite" and existing and not existing & ours:
        shown = ", ".join(sorted(existing)[:5]) + (", ..." if len(existing) > 5 else "")
        raise MigrationError(
            f"this SQLite file is not a crucible run store: it holds other tables ({shown}); "
            "give the store a new file"
        )
    missing: dict[str, list[sa.Column[Any]]] = {}
    for table in metadata.sorted_tables:
        if table.name not in existing:
            continue
        have = {c["name"] for c in inspector.get_columns(table.name)}
        missing[table.name] = [c for c in table.columns if c.name not in have]
        for column in missing[table.name]:
            if column.primary_key or (not column.nullable and column.server_default is None):
                raise MigrationError(
                    f"cannot add column {table.name}.{column.name} to an existing database: "
                    "a new column must be nullable or have a server_default"
                )
    metadata.create_all(conn)  # checkfirst: only the tables (with their indexes) that are missing
    inspector = sa.inspect(conn)  # it caches what it read: read the new tables afresh
    preparer = conn.dialect.identifier_preparer
    added: list[str] = []
    for table in metadata.sorted_tables:
        for column in missing.get(table.name, ()):
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
