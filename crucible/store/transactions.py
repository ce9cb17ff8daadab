"""Transactions: the fastest way this store has to make one batch of records one transaction.

Tried in order, each where it applies:

- SQLite: the writer process (``sqlite_process``); where it cannot run, the rows are bound on
  the callers' thread with a connection that never waits and committed on the writer thread,
  and a locked database is waited for on the writer thread (``sqlite_bulk``);
- PostgreSQL through asyncpg: one statement per batch from the callers' loop (``pg_bulk``);
- anything else: ``sql.apply`` in a SQLAlchemy transaction on the writer thread (in memory:
  in the callers' loop, whose one shared connection cannot move).

The file check of a SQLite store comes last, before COMMIT. Failures propagate: the writer
retries, journals or fails the records.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import anyio
import structlog

from crucible.store.connection import Database
from crucible.store.rows import Record
from crucible.store.sql import Applied, Statements, apply
from crucible.store.sqlite_bulk import AVAILABLE as BULK_AVAILABLE
from crucible.store.sqlite_bulk import Busy, SqliteBulk
from crucible.store.sqlite_process import SqliteProcess, Unavailable
from crucible.store.thread import WriterThread

if TYPE_CHECKING:
    from crucible.store.pg_bulk import PgBulk

__all__ = ["Transactions"]

_log = structlog.get_logger("crucible.store")


class _Host(Protocol):
    """What the transactions need of their RunStore (a protocol: the modules import one way)."""

    _db: Database

    @property
    def url(self) -> str: ...

    async def _writable(self) -> Statements: ...


def _nothing(_: Applied) -> None:
    return None


class Transactions:
    """The ways one store commits a batch, and what they hold open (see module doc)."""

    def __init__(self, store: _Host) -> None:
        self._store = store
        db = store._db  # one shared connection in memory: it cannot move to another thread
        self._thread = None if db.in_memory else WriterThread(db.twin())
        path = db.sqlite_file
        self._bulk = (
            SqliteBulk(path, db.busy_timeout, db.check_file)
            if path is not None and BULK_AVAILABLE
            else None
        )
        # The first try of an in-process SQLite batch: on the callers' thread, never waiting.
        self._now = (
            SqliteBulk(path, 0.0, db.check_file) if path is not None and self._bulk else None
        )
        self.proc = (
            SqliteProcess(path, db.busy_timeout, lambda: store._db.opened_identity)
            if path is not None and os.environ.get("CRUCIBLE_STORE_PROCESS", "1") != "0"
            else None
        )
        self._pg_bulk: PgBulk | None = None
        if db.url.drivername == "postgresql+asyncpg":
            from crucible.store.pg_bulk import PgBulk  # its dialect only for PostgreSQL stores

            self._pg_bulk = PgBulk()
        self._pg_db: Database | None = None  # the bulk statement's engine, in the callers' loop
        self._pg_loop: asyncio.AbstractEventLoop | None = None

    async def apply(
        self, records: Sequence[Record], on_applied: Callable[[Applied], None] | None = None
    ) -> Applied:
        """One transaction for ``records``.

        ``on_applied`` runs once it is committed, as soon as the thread that committed says so
        (before the awaiting task resumes).
        """
        done = on_applied or _nothing
        sql = await self._store._writable()
        check_file = self._store._db.check_file
        bulk, now, pg_bulk, thread = self._bulk, self._now, self._pg_bulk, self._thread
        if self.proc is not None:
            check_file()
            try:
                applied = await self.proc.apply(sql, records)
            except Unavailable as err:
                _log.warning("run store writer process unavailable; writing in this process",
                             database=self._store.url, reason=str(err))  # fmt: skip
                self.proc = None
            else:
                done(applied)
                return applied
        if bulk is not None and now is not None and thread is not None:
            try:
                begun = now.begin_now(sql, records)
            except Busy:  # locked by another connection: wait for it on the writer thread
                pass
            else:
                await thread.call(now.commit, lambda _: done(begun))
                return begun

            def committed(applied: Applied) -> None:
                check_file()  # lost while the batch was written: it goes to the journal as well
                done(applied)

            check_file()
            return await thread.call(lambda: bulk.apply(sql, records), committed)
        if pg_bulk is not None:
            async with self._pg_engine().autocommit("write") as conn:
                written = await pg_bulk.apply(conn, sql, records)
            if written is not None:
                done(written)
                return written

        async def transaction(db: Database) -> Applied:
            async with db.begin("write") as conn:
                applied = await apply(conn, sql, records)
                check_file()
            return applied

        if thread is None:
            applied = await transaction(self._store._db)
            done(applied)
            return applied
        return await thread.run(transaction, done)

    def _pg_engine(self) -> Database:
        """The lean engine for the one-statement batches, made in (and for) this loop.

        One round trip a batch: here it only waits for the server, while on the writer thread
        it would also wait for the GIL on every socket call.
        """
        loop = asyncio.get_running_loop()
        if self._pg_db is None or self._pg_loop is not loop:
            self._pg_db, self._pg_loop = self._store._db.twin(), loop
        return self._pg_db

    async def close(self, *, same_loop: bool) -> None:
        """Close what the transactions hold; ``same_loop``: the loop that wrote is this one."""
        if self._now is not None:
            self._now.close()
        if self.proc is not None:
            await anyio.to_thread.run_sync(self.proc.close)
        pg_db, self._pg_db = self._pg_db, None
        if pg_db is not None and same_loop and self._pg_loop is asyncio.get_running_loop():
            await pg_db.dispose()
        if self._thread is not None:
            if self._bulk is not None and self._thread.running:
                await self._thread.call(self._bulk.close)
            await self._thread.stop()
