"""SqliteProcess: a SQLite store's batches committed by a small process of their own.

Binding a batch's rows and SQLite's work on them hold the GIL of whichever thread runs them, so
in the callers' process they take CPU from the runs (a thread cannot move them off the loop).
Here the writer pickles each batch down a pipe to ``_sqlite_worker.py`` (standard library only)
and awaits its answer; the callers' loop only pickles, through non-blocking pipes watched by
whichever event loop is running. The process ends when its pipe closes, so it never outlives the
store's process, and it ignores SIGINT and SIGTERM: a stopping parent still commits its records.

``Unavailable`` means it cannot run here (no interpreter to start, no pipes on this loop): the
writer then writes in its own process, as before. ``ProcessGone`` (an ``OSError``) means it
exited meanwhile; the writer retries the batch, and the next batch starts a new process.

A forked child (``multiprocessing``, a data loader's workers) closes its copies of the pipes at
once: holding them, it would keep the parent's worker from seeing its pipe close, and the
parent's ``close()`` would wait for the child to exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import sqlite3
import struct
import subprocess
import sys
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from sqlalchemy.exc import DBAPIError

from crucible.store.connection import FileLost
from crucible.store.rows import RUNS, Record
from crucible.store.sql import Applied, Statements, owners_found
from crucible.store.sqlite_bulk import PRAGMAS, SHAPES, Sorted, owners_of, statements
from crucible.store.tidy import RowsRejected

__all__ = ["ProcessGone", "SqliteProcess", "Unavailable"]

_WORKER: Final = Path(__file__).with_name("_sqlite_worker.py")
_LENGTH: Final = struct.Struct("<Q")
_PIPE_SIZE: Final = 1 << 20  # a whole batch fits: one write, no waiting for the reader


class Unavailable(Exception):
    """The writer process cannot run here; write in this process instead."""


class ProcessGone(OSError):
    """The writer process exited or its pipe broke before it answered."""


def _dumps(value: Any) -> bytes:
    """Rows hold plain values only (no Crucible type: the worker imports none)."""
    return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


class SqliteProcess:
    """The worker process for one SQLite file; started on first use, one request at a time."""

    def __init__(self, path: Path, busy_timeout: float, identity: Callable[[], Any]) -> None:
        self.path = Path(os.path.abspath(path))  # the same file if the parent changes folder
        self.busy_timeout = busy_timeout
        self._identity = identity  # the file the store opened: (dev, inode), or None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid = 0  # the process that started it (a fork must start its own)
        self._opened = False
        self._answered = False  # a worker of this store has answered once
        self._sql: Statements | None = None
        self._broken: str | None = None
        _instances.add(self)
        if not sys.executable:
            self._broken = "no Python interpreter to start (sys.executable is empty)"
        elif sys.platform == "win32":
            self._broken = "Windows event loops cannot watch pipes"

    def start(self) -> None:
        """Start the worker now, so its interpreter starts while this process goes on."""
        if self._broken is None:
            with contextlib.suppress(Unavailable):  # the first batch reports it, then falls back
                self._process()

    async def apply(self, sql: Statements, records: Sequence[Record]) -> Applied:
        """Commit ``records`` in the worker; as ``SqliteBulk.apply``."""
        if self._broken is not None:
            raise Unavailable(self._broken)
        rows = Sorted(records)
        ops = [
            (i, sql.driver_rows(shape, values))
            for i, (shape, values) in enumerate(zip(SHAPES, rows.tables(), strict=True))
            if values
        ]
        rid = RUNS.index["id"]  # the owner check's ids; its rows only when the worker asks
        ids = [r[rid] for r in rows.starts] + [r[-1] for r in rows.finishes]
        self._process()  # an exited worker is replaced here, so _opened speaks of this one
        if not self._opened or self._sql is not sql:
            stmts = [*statements(sql), sql.select_owners]
            await self._request(("open", str(self.path), self.busy_timeout, list(PRAGMAS), stmts))
            self._opened, self._sql = True, sql
        reply = await self._request(("write", ops, rows.count, ids, self._identity()))
        if reply[0] == "unopened":  # it exited between the open and the write: the writer retries
            self._opened = False
            raise ProcessGone("the SQLite writer process was replaced before the batch reached it")
        if reply[0] == "lost":
            raise FileLost("write", f"the database file {self.path} changed while it was written")
        found = reply[1]
        if found is None:
            return Applied()
        ours, finished, _ = owners_of(sql, rows)
        return owners_found(ours, finished, found)

    async def _request(self, request: tuple[Any, ...]) -> Any:
        proc = self._process()
        data = _dumps(request)
        try:
            reply = await _exchange(proc, _LENGTH.pack(len(data)) + data)
        except ProcessGone as err:
            self.close(wait=False)
            if not self._answered:  # it never worked here (not a Python that runs the worker?)
                self._broken = f"the SQLite writer process never answered: {err}"
                raise Unavailable(self._broken) from err
            raise
        except BaseException:
            self.close(wait=False)  # cancelled or broken mid-exchange: the pipe's state is unknown
            raise
        self._answered = True
        if reply[0] == "sqlite":
            self._opened = False  # the worker closed its connection
            failure = getattr(sqlite3, reply[1], sqlite3.Error)(reply[3])
            failure.sqlite_errorcode = reply[2]
            raise DBAPIError.instance(None, None, failure, sqlite3.Error)
        if reply[0] == "rejected":  # the batch is rolled back; the writer tries it row by row
            raise RowsRejected("write", reply[1])
        if reply[0] == "bug":
            self._broken = f"the writer process failed: {reply[1]}"
            self.close()
            raise Unavailable(self._broken)
        return reply

    def _process(self) -> subprocess.Popen[bytes]:
        proc = self._proc
        if proc is not None and self._pid == os.getpid() and proc.poll() is None:
            return proc
        if proc is not None and self._pid == os.getpid():
            self.close(wait=False)  # it has exited: this only reaps it
        self._proc, self._opened = None, False
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(_WORKER)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, close_fds=True,
            )  # fmt: skip
        except OSError as err:
            if not self._answered:
                self._broken = f"cannot start {sys.executable}: {err}"
                raise Unavailable(self._broken) from err
            raise ProcessGone(f"cannot start the SQLite writer process: {err}") from err
        assert proc.stdin is not None and proc.stdout is not None
        for pipe in (proc.stdin, proc.stdout):
            os.set_blocking(pipe.fileno(), False)
            _grow(pipe.fileno())
        self._proc, self._pid = proc, os.getpid()
        return proc

    def _drop_inherited(self) -> None:
        """In a forked child: let go of the parent's worker without touching it."""
        proc, self._proc = self._proc, None
        self._opened, self._answered = False, False
        if proc is not None:
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()

    def close(self, *, wait: bool = True) -> None:
        """End the worker: it sees its stdin close, finishes what it does, and exits.

        ``wait=False`` kills it at once (SQLite's journal undoes a transaction it was in).
        """
        proc, self._proc = self._proc, None
        self._opened = False
        if proc is None or self._pid != os.getpid():
            return
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        if not wait:
            proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_instances: weakref.WeakSet[SqliteProcess] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for worker in list(_instances):
        worker._drop_inherited()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _grow(fd: int) -> None:
    """A bigger pipe buffer where the platform allows it (Linux), so a batch goes in one write."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), _PIPE_SIZE)
    except (ImportError, OSError):
        pass


async def _exchange(proc: subprocess.Popen[bytes], message: bytes) -> Any:
    """Write ``message`` to the worker and read its answer, without blocking the loop."""
    assert proc.stdin is not None and proc.stdout is not None
    loop = asyncio.get_running_loop()
    out_fd, in_fd = proc.stdin.fileno(), proc.stdout.fileno()
    done: asyncio.Future[Any] = loop.create_future()
    view = memoryview(message)
    sent = 0
    received = bytearray()

    def fail(err: BaseException) -> None:
        if not done.done():
            done.set_exception(err)

    def on_readable() -> None:
        try:
            chunk = os.read(in_fd, 1 << 20)
        except BlockingIOError:
            return
        except OSError as err:
            fail(ProcessGone(f"the SQLite writer process's pipe broke: {err}"))
            return
        if not chunk:
            fail(ProcessGone("the SQLite writer process exited"))
            return
        received.extend(chunk)
        if len(received) >= _LENGTH.size:
            size = _LENGTH.unpack_from(received)[0]
            if len(received) >= _LENGTH.size + size and not done.done():
                done.set_result(pickle.loads(received[_LENGTH.size :]))

    def on_writable() -> None:
        nonlocal sent
        try:
            sent += os.write(out_fd, view[sent:])
        except BlockingIOError:
            return
        except OSError as err:
            fail(ProcessGone(f"the SQLite writer process's pipe broke: {err}"))
            return
        if sent >= len(view):
            loop.remove_writer(out_fd)
            watch_reply()

    def watch_reply() -> None:
        try:
            loop.add_reader(in_fd, on_readable)
        except NotImplementedError as err:  # a loop without pipe watching (Windows' proactor)
            fail(Unavailable(f"this event loop cannot watch pipes: {err}"))

    try:
        on_writable()  # most batches fit the pipe at once
        if sent < len(view) and not done.done():
            try:
                loop.add_writer(out_fd, on_writable)
            except NotImplementedError as err:
                fail(Unavailable(f"this event loop cannot watch pipes: {err}"))
        return await done
    finally:
        loop.remove_writer(out_fd)
        loop.remove_reader(in_fd)
