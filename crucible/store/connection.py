"""The store's database connection: one async engine, made on first use, and its locks.

SQLite files run in WAL mode with a busy timeout, and this process serialises its SQLite write
transactions behind one lock so that many concurrent runs in an event loop never trip over each
other. PostgreSQL uses a normal pool. Failures become StoreError, without SQL text or parameters.
"""

from __future__ import annotations

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

__all__ = ["Database", "describe"]

_SQLITE_BUSY_TIMEOUT_S: Final = 30.0
_MAX_ERROR_CHARS: Final = 500


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

    def __init__(self, url: URL, *, connect_timeout: float, echo: bool) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self._echo = echo
        self._engine: AsyncEngine | None = None
        self._write_lock: anyio.Lock | None = None

    @property
    def display(self) -> str:
        """The URL with any password hidden."""
        return self.url.render_as_string(hide_password=True)

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def in_memory(self) -> bool:
        """An in-memory SQLite database (one shared connection)."""
        db = self.url.database
        return self.is_sqlite and (not db or db == ":memory:" or "mode=memory" in db)

    def _create_engine(self) -> AsyncEngine:
        kwargs: dict[str, Any] = {"echo": self._echo}
        connect_args: dict[str, Any] = {}
        if self.is_sqlite:
            connect_args["timeout"] = _SQLITE_BUSY_TIMEOUT_S
            db = self.url.database
            if db and not self.in_memory and not db.startswith("file:"):
                Path(db).parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs["pool_pre_ping"] = True
            if self.url.get_driver_name() == "asyncpg" and "timeout" not in self.url.query:
                connect_args["timeout"] = self.connect_timeout
        kwargs["connect_args"] = connect_args
        engine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            sa.event.listen(engine.sync_engine, "connect", _configure_sqlite)
        return engine

    def engine(self, operation: str, run_id: str | None) -> AsyncEngine:
        """The engine, created (with the write lock) on first use."""
        if self._engine is None:
            try:
                self._engine = self._create_engine()
            except Exception as exc:
                raise StoreError(
                    operation, f"cannot use {self.display}: {describe(exc)}", run_id=run_id
                ) from exc
            self._write_lock = anyio.Lock()
        return self._engine

    async def create_tables(self, metadata: sa.MetaData) -> None:
        """Create the missing tables of ``metadata`` (StoreError names the ``open`` operation)."""
        # Two processes may race to create the same tables; the loser retries and finds them.
        for attempt in range(3):
            try:
                async with self.write("open", None) as conn:
                    await conn.run_sync(metadata.create_all)
                return
            except StoreError:
                if attempt == 2:
                    raise
                await anyio.sleep(0.1 * (attempt + 1))

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


def _configure_sqlite(dbapi_connection: Any, connection_record: Any) -> None:
    """Per-connection SQLite settings: WAL, a busy timeout and enforced foreign keys."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(_SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()
