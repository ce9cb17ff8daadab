"""The store's database connection: one async engine, made on first use, and its locks.

SQLite files run in WAL mode with a busy timeout, and this process serialises its SQLite write
transactions behind one lock. PostgreSQL uses a normal pool. Failures become StoreError, without
SQL text or parameters; a URL or location that can never work raises UnusableStore.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from pathlib import Path
from typing import Any, Final

import anyio
import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from crucible.errors import StoreError
from crucible.redact import is_secret_key
from crucible.store.migrate import MigrationError, upgrade
from crucible.store.schema import add_dialect_indexes
from crucible.store.urls import is_default_file

__all__ = ["Database", "FileLost", "UnusableStore", "describe"]

_SQLITE_BUSY_TIMEOUT_S: Final = 30.0
_PG_COMMAND_TIMEOUT_S: Final = 60.0  # a statement on a dead connection fails instead of hanging
_MAX_ERROR_CHARS: Final = 500


class UnusableStore(StoreError):
    """The URL or location can never work (no such driver, a file where a folder must be)."""


class FileLost(StoreError):
    """The SQLite file was deleted or replaced while the store had it open."""


def describe(exc: BaseException) -> str:
    """A short message for an error, without SQL text or bound parameters."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        inner: BaseException = exc.orig
        root = inner.__cause__ or inner  # asyncpg's own exception behind the DB-API adapter
        text = f"{type(root).__name__}: {inner}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split("(Background on this error at")[0].split())
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


class Database:
    """An async SQLAlchemy engine for one URL, with read and write transactions.

    Every failure inside ``read``/``write`` is raised as StoreError naming the operation and run.
    """

    def __init__(
        self,
        url: URL,
        *,
        connect_timeout: float,
        echo: bool,
        busy_timeout: float | None = None,
        lean: bool = False,
    ) -> None:
        self.url = url
        self._lean = lean
        self.connect_timeout = connect_timeout
        self.busy_timeout = _SQLITE_BUSY_TIMEOUT_S if busy_timeout is None else busy_timeout
        self._echo = echo
        self._engine: AsyncEngine | None = None
        self._write_lock: anyio.Lock | None = None
        self.opened_identity: tuple[int, int] | None = None  # the SQLite file open() found

    def twin(self) -> Database:
        """Another Database for the same URL and settings, for the writer alone.

        It skips the pool's ping on checkout and its rollback on return: the writer only ever
        uses whole transactions, and a dead connection fails the commit, which is retried on a
        fresh one (SQLAlchemy drops connections that report a disconnect).
        """
        return Database(self.url, connect_timeout=self.connect_timeout, echo=self._echo,
                        busy_timeout=self.busy_timeout, lean=True)  # fmt: skip

    @property
    def display(self) -> str:
        """The URL with any password hidden: its userinfo's, and a secret-named query parameter's
        (``?password=...``, which libpq and asyncpg read too)."""
        url = self.url
        if any(is_secret_key(k) for k in url.query):
            url = url.set(query={k: "***" if is_secret_key(k) else v for k, v in url.query.items()})
        return url.render_as_string(hide_password=True).replace("=%2A%2A%2A", "=***")

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def in_memory(self) -> bool:
        """An in-memory SQLite database (one shared connection)."""
        db = self.url.database
        return self.is_sqlite and (not db or db == ":memory:" or "mode=memory" in db)

    @property
    def sqlite_file(self) -> Path | None:
        """The SQLite database file, for a file given by path (not in memory, not a URI)."""
        db = self.url.database
        if not self.is_sqlite or self.in_memory or not db or db.startswith("file:"):
            return None
        return Path(db)

    def file_identity(self) -> tuple[int, int] | None:
        """(st_dev, st_ino) of the SQLite file now; None when it does not exist (or no file)."""
        path = self.sqlite_file
        if path is None:
            return None
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def check_file(self) -> None:
        """Raise FileLost when the SQLite file is no longer the one open() found."""
        if self.opened_identity is None:
            return
        now = self.file_identity()
        if now != self.opened_identity:
            what = "deleted" if now is None else "replaced by another file"
            raise FileLost(
                "write",
                f"the database file {self.sqlite_file} was {what} while the store had it open; "
                "records go to the journal until the store is opened again",
            )

    def _create_engine(self) -> AsyncEngine:
        kwargs: dict[str, Any] = {"echo": self._echo}
        if self._lean:
            kwargs["pool_reset_on_return"] = None
        connect_args: dict[str, Any] = {}
        if self.is_sqlite:
            connect_args["timeout"] = self.busy_timeout
            if self.sqlite_file is not None and is_default_file(self.sqlite_file):
                self.sqlite_file.parent.mkdir(parents=True, exist_ok=True)  # others: check_folder
        else:
            kwargs["pool_pre_ping"] = not self._lean
            if self.url.get_driver_name() == "asyncpg":
                if "timeout" not in self.url.query:
                    connect_args["timeout"] = self.connect_timeout
                if "command_timeout" not in self.url.query:
                    connect_args["command_timeout"] = _PG_COMMAND_TIMEOUT_S
        kwargs["connect_args"] = connect_args
        engine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            busy_ms = int(self.busy_timeout * 1000)
            sa.event.listen(
                engine.sync_engine, "connect", lambda conn, _: _configure_sqlite(conn, busy_ms)
            )
        return engine

    def engine(self, operation: str, run_id: str | None) -> AsyncEngine:
        """The engine, created (with the write lock) on first use."""
        if self._engine is None:
            try:
                self._engine = self._create_engine()
            except Exception as exc:
                raise UnusableStore(
                    operation, f"cannot use {self.display}: {describe(exc)}", run_id=run_id
                ) from exc
            self._write_lock = anyio.Lock()
        return self._engine

    async def prepare(self, metadata: sa.MetaData) -> list[str]:
        """Bring the database to ``metadata`` by additions (``migrate``); return what was added.

        StoreError names the ``open`` operation; a database that additions cannot fix raises
        UnusableStore.
        """
        add_dialect_indexes(self.url.get_backend_name())
        # Two processes may race to add the same things; the loser retries and finds them.
        for attempt in range(3):
            try:
                async with self.write("open", None) as conn:
                    return await conn.run_sync(upgrade, metadata)
            except StoreError as err:
                if isinstance(err.__cause__, MigrationError):
                    raise UnusableStore("open", str(err.__cause__)) from err.__cause__
                if attempt == 2 or isinstance(err, UnusableStore):
                    raise
                await anyio.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    async def dispose(self) -> None:
        """Drop the engine and its connections; the next use creates them again."""
        engine, self._engine = self._engine, None
        self._write_lock = None
        if engine is not None:
            await engine.dispose()

    def _lock_for_writes(self) -> AbstractAsyncContextManager[Any]:
        if self.is_sqlite and self._write_lock is not None:
            return self._write_lock
        return nullcontext()

    def _lock_for_reads(self) -> AbstractAsyncContextManager[Any]:
        # One shared in-memory connection: reads must not interleave with a write transaction.
        if self.in_memory and self._write_lock is not None:
            return self._write_lock
        return nullcontext()

    @asynccontextmanager
    async def begin(self, operation: str) -> AsyncIterator[AsyncConnection]:
        """A write transaction whose driver errors propagate as they are (the writer sorts them)."""
        engine = self.engine(operation, None)
        async with self._lock_for_writes(), engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def autocommit(self, operation: str) -> AsyncIterator[AsyncConnection]:
        """A connection whose every statement commits on its own (driver errors propagate)."""
        engine = self.engine(operation, None)
        async with self._lock_for_writes(), engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    @asynccontextmanager
    async def write(self, operation: str, run_id: str | None) -> AsyncIterator[AsyncConnection]:
        """A write transaction, committed on success (serialised per process on SQLite)."""
        engine = self.engine(operation, run_id)
        try:
            async with self._lock_for_writes(), engine.begin() as conn:
                yield conn
        except StoreError:
            raise
        except IntegrityError as exc:
            raise StoreError(operation, describe(exc), run_id=run_id) from exc
        except Exception as exc:
            msg = f"{self.display}: {describe(exc)}"
            raise StoreError(operation, msg, run_id=run_id) from exc

    @asynccontextmanager
    async def read(self, operation: str, run_id: str | None) -> AsyncIterator[AsyncConnection]:
        """A connection for reading."""
        engine = self.engine(operation, run_id)
        try:
            async with self._lock_for_reads(), engine.connect() as conn:
                yield conn
        except StoreError:
            raise
        except Exception as exc:
            msg = f"{self.display}: {describe(exc)}"
            raise StoreError(operation, msg, run_id=run_id) from exc


def _configure_sqlite(dbapi_connection: Any, busy_ms: int) -> None:
    """Per-connection SQLite settings: WAL, a busy timeout and enforced foreign keys."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()
