"""The local journal: records the database could not take, kept until a later open replays them.

One append-only file per process and database in the journal folder (default
``.crucible/journal/``), named after a fingerprint of the database URL: JSON lines, a header line
first, then one line per record, flushed and fsynced per batch. A process holds an exclusive
``flock`` on its own file while it may still write there, and a replay takes the same lock, so two
processes never replay one file and nobody replays a file that is still being written.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import secrets
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, Final

import structlog

from crucible.store.process import host_name
from crucible.store.rows import EXPERIMENTS, SHAPES, Record

__all__ = ["DEFAULT_JOURNAL_DIR", "Journal"]

DEFAULT_JOURNAL_DIR: Final = ".crucible/journal"
_FORMAT: Final = 1
_REPLAY_CHUNK: Final = 1000

_log = structlog.get_logger("crucible.store")

Commit = Callable[[list[Record]], Awaitable[None]]


def encode(rec: Record) -> str:
    """One journal line for ``rec`` (a start carries its experiment, for the foreign key)."""
    line: dict[str, Any] = {"op": rec.op, "run_id": rec.run_id,
                            "row": SHAPES[rec.op].to_plain(rec.row)}  # fmt: skip
    if rec.experiment is not None:
        line["experiment"] = EXPERIMENTS.to_plain(rec.experiment)
    return json.dumps(line, separators=(",", ":")) + "\n"


def decode(line: dict[str, Any]) -> Record:
    """A Record back from a journal line (columns a newer schema added are NULL)."""
    op = line["op"]
    exp = line.get("experiment")
    return Record(op, line["run_id"], SHAPES[op].from_plain(line["row"]),
                  None if exp is None else EXPERIMENTS.from_plain(exp))  # fmt: skip


class Journal:
    """The journal files of one database in ``folder``: this process's own, and earlier ones."""

    def __init__(self, folder: Path, database: str) -> None:
        self.folder = folder
        self.database = database
        self.prefix = hashlib.sha256(database.encode()).hexdigest()[:16]
        self._own: IO[bytes] | None = None
        self.own_path: Path | None = None

    def files(self) -> list[Path]:
        """Every journal file of this database, oldest name first."""
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob(f"{self.prefix}-*.jsonl"))

    def pending(self) -> int:
        """How many records wait in the journal files of this database."""
        total = 0
        for path in self.files():
            with suppress(OSError), path.open("rb") as f:
                total += max(0, sum(1 for line in f if line.endswith(b"\n")) - 1)  # the header
        return total

    def append(self, records: Sequence[Record]) -> Path:
        """Append ``records`` to this process's file (made on first use), flushed and fsynced."""
        if self._own is None:
            self._own = self._create()
        self._own.write("".join(encode(r) for r in records).encode())
        self._own.flush()
        os.fsync(self._own.fileno())
        assert self.own_path is not None
        return self.own_path

    def _create(self) -> IO[bytes]:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{self.prefix}-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        path = self.folder / name
        f = path.open("xb")
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # a new file: nobody else holds it
        header = {
            "journal": _FORMAT,
            "database": self.database,
            "pid": os.getpid(),
            "host": host_name(),
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
        }
        f.write((json.dumps(header) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the new name survives a crash too
        finally:
            os.close(dir_fd)
        self.own_path = path
        return f

    def close(self) -> None:
        """Let go of this process's file (and its lock); a later open replays what it holds."""
        own, self._own, self.own_path = self._own, None, None
        if own is not None:
            own.close()

    async def replay_own(self, commit: Commit) -> int:
        """Replay this process's file into the database, then remove it; return the records."""
        if self._own is None or self.own_path is None:
            return 0
        count = await _replay(self.own_path, commit)
        self.own_path.unlink()
        self.close()
        return count

    async def replay_others(self, commit: Commit) -> int:
        """Replay the files earlier processes left (each under its lock); return the records."""
        count = 0
        for path in self.files():
            if path == self.own_path:
                continue
            with _locked(path) as held:
                if not held:
                    continue  # its process still writes there, or another process replays it
                count += await _replay(path, commit)
                path.unlink()
        return count


@contextmanager
def _locked(path: Path) -> Iterator[bool]:
    """Try to take ``path``'s lock without waiting: True when held (and the file still there)."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        yield False
        return
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield os.fstat(f.fileno()).st_nlink > 0  # removed meanwhile by whoever replayed it


async def _replay(path: Path, commit: Commit) -> int:
    """Commit the records of one journal file in chunks; a torn last line is skipped."""
    records: list[Record] = []
    count = 0
    with path.open("rb") as f:
        f.readline()  # the header
        for number, raw in enumerate(f, start=2):
            try:
                records.append(decode(json.loads(raw)))
            except (ValueError, KeyError, TypeError) as err:
                _log.warning("run store journal line skipped", journal=str(path), line=number,
                             error=repr(err))  # fmt: skip
                continue
            if len(records) >= _REPLAY_CHUNK:
                await commit(records)
                count += len(records)
                records = []
    if records:
        await commit(records)
        count += len(records)
    if count:
        _log.info("run store journal replayed", journal=str(path), records=count)
    return count
