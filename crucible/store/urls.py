"""Database URLs: the default store location and turning user input into an async URL."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from sqlalchemy.engine import URL, make_url

from crucible.errors import StoreError

__all__ = ["DEFAULT_URL", "normalize_url"]

DEFAULT_URL: Final = "sqlite+aiosqlite:///.crucible/runs.db"


def normalize_url(url: str | os.PathLike[str] | None = None) -> URL:
    """Turn what a user passes into an async SQLAlchemy URL.

    ``None`` is ``.crucible/runs.db`` under the current directory; a filesystem path or
    ``sqlite:///x.db`` uses aiosqlite; ``postgresql://`` (or ``postgres://``) uses asyncpg.
    Relative SQLite paths are resolved against the current directory now.
    """
    text = DEFAULT_URL if url is None else os.fspath(url)
    if "://" not in text:
        if not text.strip():
            raise StoreError("configure", "empty database URL or path")
        return URL.create("sqlite+aiosqlite", database=str(Path(text).expanduser().absolute()))
    try:
        parsed = make_url(text)
    except Exception as exc:
        raise StoreError("configure", f"cannot parse database URL: {exc}") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite":
        if driver in ("", "pysqlite"):
            parsed = parsed.set(drivername="sqlite+aiosqlite")
        db = parsed.database
        if db and db != ":memory:" and not db.startswith("file:"):
            parsed = parsed.set(database=str(Path(db).expanduser().absolute()))
    elif backend in ("postgresql", "postgres") and driver in ("", "psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed
