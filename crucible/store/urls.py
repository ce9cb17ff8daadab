"""Database URLs: the default store location and turning user input into an async URL."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from sqlalchemy.engine import URL, make_url

from crucible.errors import StoreError

__all__ = ["DEFAULT_URL", "check_folder", "is_default_file", "normalize_url", "sqlite_path"]

DEFAULT_URL: Final = "sqlite+aiosqlite:///.crucible/runs.db"
_DEFAULT_FILE: Final = Path(".crucible") / "runs.db"


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
    if parsed.drivername == "postgresql+asyncpg":
        parsed = _asyncpg_query(parsed)
    return parsed


def _asyncpg_query(url: URL) -> URL:
    """``?sslmode=require``, as libpq URLs write it, as asyncpg's ``ssl`` (the same values;
    asyncpg refuses libpq's name with a TypeError)."""
    if "sslmode" not in url.query:
        return url
    query = dict(url.query)
    sslmode = query.pop("sslmode")
    query.setdefault("ssl", sslmode)
    return url.set(query=query)


def sqlite_path(url: URL) -> Path | None:
    """The SQLite file of ``url``; None for PostgreSQL, in-memory and ``file:`` URI databases."""
    db = url.database
    if url.get_backend_name() != "sqlite" or not db or db == ":memory:":
        return None
    return None if db.startswith("file:") or "mode=memory" in db else Path(db)


def is_default_file(path: Path) -> bool:
    """Whether ``path`` is the default store, ``.crucible/runs.db`` in the working directory."""
    return path == _DEFAULT_FILE.absolute()


def check_folder(url: URL) -> None:
    """Refuse a SQLite file whose folder does not exist, so a typo makes no folders anywhere.

    Only the default ``.crucible/runs.db`` gets its folder made (when the store is first used).
    """
    path = sqlite_path(url)
    if path is None or path.parent.is_dir() or is_default_file(path):
        return
    what = "is not a folder" if path.parent.exists() else "does not exist"
    raise StoreError(
        "configure",
        f"cannot use the SQLite file {path}: its folder {path.parent} {what}; create the "
        "folder first (only the default .crucible/ folder is made for you)",
    )
