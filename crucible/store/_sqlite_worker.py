"""The SQLite writer process (run as ``python -I -S <this file>``; see ``sqlite_process``).

Standard library only, and nothing of Crucible: it starts in milliseconds. It reads requests from
stdin and answers on stdout, each a pickle after its 8-byte little-endian length:

- ``("open", path, busy_timeout_s, pragmas, statements)``: connect (never creating the file);
- ``("write", ops, expected, owner_ids, identity)``: in one transaction, ``executemany`` each
  ``(statement_index, rows)``; when the rows changed differ from ``expected``, read the stored
  owners of ``owner_ids`` (the last statement, given their JSON list); before COMMIT, check
  that the file is still ``identity`` (dev, inode).

It checkpoints the WAL itself, outside any request: once no request has come for a moment, and
every few commits while requests keep coming. A checkpoint never delays an answer, and a steady
load pays for one checkpoint per few commits, not one per commit.

Answers: ``("ok", owners_or_None)``, ``("lost",)`` (rolled back), ``("sqlite", class name,
error code, message)`` (rolled back, connection closed) or ``("bug", message)``. It ends when
stdin closes (its parent is gone); SIGINT and SIGTERM are for the parent, which still needs it.
"""

from __future__ import annotations

import json
import os
import pickle
import select
import signal
import sqlite3
import struct
import sys
from typing import Any, BinaryIO

_LENGTH = struct.Struct("<Q")
_CHECKPOINT_EVERY = 16  # commits, when requests keep coming
_QUIET_S = 0.05  # no request for this long: checkpoint now


def _read(stream: BinaryIO, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class _Writer:
    def __init__(self) -> None:
        self.conn: sqlite3.Connection | None = None
        self.path = ""
        self.statements: list[str] = []
        self.uncheckpointed = 0

    def open(self, path: str, busy_timeout: float, pragmas: list[str], stmts: list[str]) -> Any:
        self.close()
        uri = "file:" + path.replace("?", "%3f").replace("#", "%23") + "?mode=rw"
        conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None)
        try:
            for pragma in pragmas:
                conn.execute(pragma)
            conn.execute("PRAGMA wal_autocheckpoint=0")  # see checkpoint()
        except BaseException:
            conn.close()
            raise
        self.conn, self.path, self.statements = conn, path, stmts
        return ("ok", None)

    def write(self, ops: list[tuple[int, list[tuple[Any, ...]]]], expected: int,
              owner_ids: list[str], identity: tuple[int, int] | None) -> Any:  # fmt: skip
        conn = self.conn
        if conn is None:  # a new process the parent took for its exited one: it opens again
            return ("unopened",)
        conn.execute("BEGIN IMMEDIATE")
        try:
            before = conn.total_changes
            for index, rows in ops:
                conn.executemany(self.statements[index], rows)
            owners = None
            if conn.total_changes - before != expected:
                param = json.dumps(owner_ids)
                owners = conn.execute(self.statements[-1], (param,)).fetchall()
            if identity is not None:
                try:
                    st = os.stat(self.path)
                    now: tuple[int, int] | None = (st.st_dev, st.st_ino)
                except FileNotFoundError:
                    now = None
                if now != tuple(identity):
                    conn.execute("ROLLBACK")
                    return ("lost",)
            conn.execute("COMMIT")
            self.uncheckpointed += 1
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return ("ok", owners)

    def checkpoint(self) -> None:
        """Copy the WAL into the database (PASSIVE: never waits for readers)."""
        if self.conn is None or not self.uncheckpointed:
            return
        try:
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            return  # the next commit's checkpoint tries again
        self.uncheckpointed = 0

    def close(self) -> None:
        if self.conn is not None and self.uncheckpointed:
            self.checkpoint()
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()


def main() -> None:
    """Serve requests until stdin closes."""
    for name in ("SIGINT", "SIGTERM"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    writer = _Writer()
    while True:
        if writer.uncheckpointed and not _waiting(stdin, _QUIET_S):
            writer.checkpoint()  # quiet: nobody waits for an answer now
        head = _read(stdin, _LENGTH.size)
        body = None if head is None else _read(stdin, _LENGTH.unpack(head)[0])
        if body is None:
            writer.close()
            return
        try:
            request = pickle.loads(body)
            if request[0] == "open":
                reply = writer.open(*request[1:])
            elif request[0] == "write":
                reply = writer.write(*request[1:])
            else:
                reply = ("bug", f"unknown request {request[0]!r}")
        except sqlite3.Error as err:
            writer_was = writer.conn is not None
            writer.close()  # the next open starts afresh
            reply = ("sqlite", type(err).__name__, getattr(err, "sqlite_errorcode", None),
                     f"{err}" if writer_was else f"cannot open the database: {err}")  # fmt: skip
        except (UnicodeError, ValueError, OverflowError) as err:  # a value SQLite cannot bind
            reply = ("rejected", f"{type(err).__name__}: {err}")
        except Exception as err:
            reply = ("bug", f"{type(err).__name__}: {err}")
        data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.write(_LENGTH.pack(len(data)) + data)
        stdout.flush()
        if writer.uncheckpointed >= _CHECKPOINT_EVERY:
            writer.checkpoint()


def _waiting(stream: BinaryIO, timeout: float) -> bool:
    """Whether a request is there to read within ``timeout`` seconds."""
    try:
        return bool(select.select([stream], [], [], timeout)[0])
    except (OSError, ValueError):
        return True


if __name__ == "__main__":
    main()
