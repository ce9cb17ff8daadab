"""The store's one writer: it group-commits the records of every concurrent run and drops none.

Callers hand it records; an asyncio task in the callers' event loop takes whatever is waiting as
soon as the previous commit is done and commits it in one transaction (``transactions``: the
fastest way the store has). A full queue makes the callers wait. A busy or failing database is
retried with backoff; one that stays unreachable for ``journal_after_s`` sends the records to the
local journal instead, and the writer replays the journal as soon as the database answers again.
A SQLite file deleted or replaced under the store is never written again: its records go to the
journal until the store is opened again.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections import deque
from collections.abc import Awaitable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Final, Protocol, cast

import anyio
import structlog
from sqlalchemy import exc as sa_exc
from sqlalchemy.exc import DBAPIError

from crucible.errors import DuplicateRun, StoreError
from crucible.store.connection import Database, FileLost, UnusableStore, describe
from crucible.store.journal import Journal
from crucible.store.rows import FINISH, START, Record
from crucible.store.sql import Applied, Statements
from crucible.store.tidy import refused, tidy
from crucible.store.transactions import Transactions


class WriterHost(Protocol):
    """What the writer needs of its RunStore (a protocol, so the two modules import one way)."""

    _db: Database
    _journal: Journal

    @property
    def url(self) -> str: ...

    @property
    def journal_dir(self) -> Path: ...

    async def _writable(self) -> Statements: ...

    async def _reopen(self) -> None: ...


__all__ = ["COMMITTED", "JOURNALED", "Writer"]

COMMITTED: Final = "committed"
JOURNALED: Final = "journaled"
_FLUSH: Final = "flush"
_MAX_BATCH: Final = 5000  # records per transaction
_FIRST_RETRY_S: Final = 0.05
_MAX_RETRY_S: Final = 2.0
_FIRST_PROBE_S: Final = 0.5
_MAX_PROBE_S: Final = 5.0

_log = structlog.get_logger("crucible.store")


def _may_pass(err: BaseException) -> bool:
    """A failure of the database or the way to it (busy, down, gone): worth retrying."""
    return isinstance(err, _PASSING) and not refused(err)


_PASSING: Final = (
    StoreError,  # opening failed (UnusableStore is sorted out before)
    DBAPIError,
    OSError,
    TimeoutError,
    sa_exc.TimeoutError,
    sa_exc.DisconnectionError,
    sa_exc.PendingRollbackError,
)


class Writer:
    """Queues a store's records and commits them in batches from one task (see module doc)."""

    def __init__(self, store: WriterHost, *, journal_after_s: float, max_pending: int) -> None:
        self._store = store
        self._tx = Transactions(store)
        self.journal_after_s = journal_after_s
        self._capacity = max_pending
        self._queue: deque[Record] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._live: dict[str, Record] = {}  # started here, not finished: their start records
        self._waiters: dict[int, asyncio.Future[str]] = {}  # id(record) -> who waits for it
        self._quiet: set[int] = set()  # waiters told of a failure by the log, not an exception
        self._journal_runs: set[str] = set()  # runs whose start the current journal file holds
        self._journaling = False
        self._lost: FileLost | None = None
        self._recovered = False
        self._closing = False
        self._hurry = False  # stopping: journal at the first failure (RunStore.hurry)

    # --- what callers use ------------------------------------------------------------------
    def warm_up(self) -> None:
        """Start what commits take time to start (SQLite's writer process) before the first."""
        if self._tx.proc is not None:
            self._tx.proc.start()

    def hurry(self) -> None:
        """Journal at the next failed commit instead of retrying (the process is stopping)."""
        self._hurry = True

    def offer(self, rec: Record) -> Awaitable[None] | None:
        """Queue ``rec``: None when it is queued, else an awaitable that waits for room."""
        task = self._task
        if task is None or task.done() or self._loop is not asyncio.get_running_loop():
            self._ensure_task()
        if len(self._queue) < self._capacity:
            self._queue.append(rec)
            self._wake.set()
            return None
        return self._put_when_room(rec)

    async def _put_when_room(self, rec: Record) -> None:
        try:
            while len(self._queue) >= self._capacity:
                self._space.clear()
                await self._space.wait()
        finally:  # also when the caller is cancelled meanwhile: the record is never dropped
            self._queue.append(rec)
            self._wake.set()

    async def write(self, rec: Record) -> str:
        """Queue ``rec`` and wait until it is committed or journaled; return which."""
        done = self._waiter(rec)
        waiting = self.offer(rec)  # queued: the record (and so its id) lives until settled
        if waiting is not None:
            try:
                await waiting
            except BaseException:
                self._waiters.pop(id(rec), None)
                raise
        return await done

    def write_quietly(self, rec: Record) -> Awaitable[None]:
        """Queue ``rec``; what it returns finishes once ``rec`` is committed or journaled, or
        failed (logged here, never raised): the engine's run end, without a coroutine."""
        done = self._waiter(rec)
        self._quiet.add(id(rec))
        waiting = self.offer(rec)
        if waiting is None:
            return cast("Awaitable[None]", done)  # its outcome is for write() callers only
        return self._after(waiting, done)

    @staticmethod
    async def _after(waiting: Awaitable[None], done: asyncio.Future[str]) -> None:
        await waiting  # cancelled meanwhile: the record is queued all the same (_put_when_room)
        await done

    def _waiter(self, rec: Record) -> asyncio.Future[str]:
        """A future that ``_settle``/``_fail`` resolve for ``rec`` (keyed by its identity)."""
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters[id(rec)] = done
        return done

    async def flush(self) -> None:
        """Wait until every record queued so far is committed or journaled."""
        if self._task is None and not self._queue:
            return
        marker = Record(_FLUSH, "", ())
        done = self._waiter(marker)
        self._ensure_task()
        self._queue.append(marker)  # a marker never waits for room
        self._wake.set()
        await done

    async def close(self) -> None:
        """Commit (or journal) everything queued, then stop the task; a later write restarts it."""
        task, probe = self._task, self._probe
        mine = self._loop is not None and self._loop is asyncio.get_running_loop()
        if task is not None and mine and not task.done():
            self._closing = True
            self._wake.set()
            try:
                with anyio.CancelScope(shield=True):
                    await task
            finally:
                self._closing = False
        if probe is not None and mine:
            probe.cancel()
            with suppress(asyncio.CancelledError):
                await probe
        await self._tx.close(same_loop=mine)
        self._task = self._probe = None
        self._journaling, self._lost, self._recovered = False, None, False
        self._journal_runs.clear()

    def _ensure_task(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop: nobody waits on the old loop's futures
            self._loop, self._task, self._probe = loop, None, None
            self._wake, self._space = asyncio.Event(), asyncio.Event()
            self._waiters = {k: f for k, f in self._waiters.items() if f.get_loop() is loop}
            self._quiet &= self._waiters.keys()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="crucible-store-writer")

    # --- the task --------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            if self._recovered:
                await self._recover()
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), _MAX_BATCH))]
            self._space.set()  # callers refill the queue while this batch commits
            try:
                await self._handle(batch)
            except Exception as err:  # a bug here must fail the records, not hang their runs
                _log.exception("run store writer failed", error=repr(err))
                reason = f"the store's writer failed: {describe(err)}"
                for rec in batch:
                    self._fail(rec, StoreError(rec.op, reason, run_id=rec.run_id or None))

    async def _handle(self, batch: list[Record]) -> None:
        records: list[Record] = []
        flushes: list[Record] = []
        starting: set[str] = set()
        for rec in batch:
            if rec.op == _FLUSH:
                flushes.append(rec)
            elif rec.op == START and (rec.run_id in self._live or rec.run_id in starting):
                self._fail(rec, DuplicateRun(START, "a run with this id already exists",
                                             run_id=rec.run_id))  # fmt: skip
            else:
                if rec.op == START:
                    starting.add(rec.run_id)
                records.append(rec)
        if records:
            await (self._to_journal(records) if self._journaling else self._commit(records))
        for marker in flushes:
            self._settle(marker, COMMITTED)

    async def _commit(self, records: list[Record]) -> None:
        first_failure: float | None = None
        delay = _FIRST_RETRY_S
        while True:
            try:
                await self._tx.apply(records, functools.partial(self._settle_all, records))
            except UnusableStore as err:
                for rec in records:
                    self._fail(rec, StoreError(rec.op, f"could not open the store: {err.reason}",
                                               run_id=rec.run_id))  # fmt: skip
                return
            except FileLost as err:
                _log.error("run store file lost", path=str(self._store._db.sqlite_file),
                           error=str(err))  # fmt: skip
                self._lost = err
                self._journaling = True
                await self._to_journal(records)
                return
            except Exception as err:
                if refused(err):
                    await self._one_by_one(records, err)
                    return
                if not _may_pass(err):
                    raise  # a bug, not the database: _run fails the batch's records
                records = self._fail_fragile(records, err)
                if not records:
                    return
                now = time.monotonic()
                if first_failure is None:
                    first_failure = now
                    _log.warning("run store unreachable; retrying", database=self._store.url,
                                 error=self._reason(err))  # fmt: skip
                if self._closing or self._hurry or now - first_failure >= self.journal_after_s:
                    self._start_journaling(err)
                    await self._to_journal(records)
                    return
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, _MAX_RETRY_S)
                continue
            if first_failure is not None:
                _log.info("run store reachable again", database=self._store.url)
            return

    async def _one_by_one(self, records: list[Record], err: Exception) -> None:
        """A refused row fails only its own record: commit the others one at a time."""
        if len(records) == 1:
            rec = records[0]
            tidied = tidy(rec)
            if tidied is not None and await self._commit_tidied(rec, tidied):
                return
            self._fail(rec, StoreError(rec.op, describe(err), run_id=rec.run_id))
            return
        for rec in records:
            await (self._to_journal([rec]) if self._journaling else self._commit([rec]))

    async def _commit_tidied(self, rec: Record, tidied: Record) -> bool:
        """Commit ``tidied`` (``rec`` with what the database refused replaced) for ``rec``."""
        try:
            applied = await self._tx.apply([tidied])
        except Exception as err:
            if refused(err):
                return False
            if not _may_pass(err):
                raise
            self._hand_over(rec, tidied)  # the database went away meanwhile: retry, or journal
            await self._commit([tidied])
            return True
        _log.warning("run store record stored with characters replaced", operation=rec.op,
                     run_id=rec.run_id, reason="NUL or unpaired surrogate")  # fmt: skip
        self._settle(rec, COMMITTED, applied)
        if rec.op == START and rec.run_id in self._live:
            self._live[rec.run_id] = tidied  # what a journal holds for the run from now on
        return True

    def _hand_over(self, rec: Record, tidied: Record) -> None:
        """Whoever waits for ``rec`` waits for ``tidied`` instead."""
        done = self._waiters.pop(id(rec), None)
        if done is not None:
            self._waiters[id(tidied)] = done
            if id(rec) in self._quiet:
                self._quiet.discard(id(rec))
                self._quiet.add(id(tidied))

    def _fail_fragile(self, records: list[Record], err: Exception) -> list[Record]:
        """Fail the records that are not retried (the direct API); return the durable ones."""
        durable = [r for r in records if r.durable]
        if len(durable) < len(records):
            reason = self._reason(err)
            for rec in records:
                if not rec.durable:
                    self._fail(rec, StoreError(rec.op, reason, run_id=rec.run_id))
        return durable

    def _reason(self, err: Exception) -> str:
        if isinstance(err, StoreError):  # from open(): it names the database itself
            return f"could not open the store: {err.reason}"
        return f"{self._store.url}: {describe(err)}"

    # --- results ---------------------------------------------------------------------------
    def _settle_all(self, records: Sequence[Record], applied: Applied) -> None:
        if applied.refused or applied.missing:
            for rec in records:
                self._settle(rec, COMMITTED, applied)
            return
        live, waiters = self._live, self._waiters  # the common case, inline: 7 records a run
        for rec in records:
            op = rec.op
            if op == START:
                live[rec.run_id] = rec
            elif op == FINISH:
                live.pop(rec.run_id, None)
            if waiters:
                done = waiters.pop(id(rec), None)
                if done is not None:
                    self._quiet.discard(id(rec))
                    if not done.done():
                        done.set_result(COMMITTED)

    def _settle(self, rec: Record, outcome: str, applied: Applied | None = None) -> None:
        if applied is not None and rec.op == START and rec.run_id in applied.refused:
            self._fail(rec, DuplicateRun(START, "a run with this id already exists",
                                         run_id=rec.run_id))  # fmt: skip
            return
        if applied is not None and rec.op == FINISH and rec.run_id in applied.missing:
            self._fail(rec, StoreError(FINISH, "no such run", run_id=rec.run_id))
            return
        if rec.op == START:
            self._live[rec.run_id] = rec
        elif rec.op == FINISH:
            self._live.pop(rec.run_id, None)
        done = self._waiters.pop(id(rec), None)
        if done is not None:
            self._quiet.discard(id(rec))
            if not done.done():
                done.set_result(outcome)

    def _fail(self, rec: Record, exc: StoreError) -> None:
        done = self._waiters.pop(id(rec), None)
        quiet = id(rec) in self._quiet
        self._quiet.discard(id(rec))
        if done is None or quiet:  # nobody waits (an attempt), or quietly: the log reports it
            _log.error("run store write failed", operation=rec.op, run_id=rec.run_id,
                       error=repr(exc))  # fmt: skip
            if done is not None and not done.done():
                done.set_result("failed")
        elif not done.done():
            done.set_exception(exc)

    # --- the journal -----------------------------------------------------------------------
    def _start_journaling(self, err: Exception) -> None:
        self._journaling = True
        _log.warning("run store unreachable; journaling records", database=self._store.url,
                     journal=str(self._store.journal_dir), error=self._reason(err))  # fmt: skip
        self._start_probe()

    async def _to_journal(self, records: list[Record]) -> None:
        """Append ``records`` (and the start of any run they need) to the journal, fsynced."""
        lines: list[Record] = []
        for rec in records:
            if rec.run_id not in self._journal_runs:
                start = rec if rec.op == START else self._live.get(rec.run_id)
                if start is not None and start is not rec:
                    lines.append(start)  # replay can then insert the run wherever it goes
                self._journal_runs.add(rec.run_id)
            lines.append(rec)
        try:
            path = await anyio.to_thread.run_sync(self._store._journal.append, lines)
        except OSError as err:
            _log.error("run store journal cannot be written", journal=str(self._store.journal_dir),
                       error=repr(err))  # fmt: skip
            reason = f"the database is unreachable and the journal cannot be written: {err}"
            for rec in records:
                self._fail(rec, StoreError(rec.op, reason, run_id=rec.run_id))
            return
        _log.info("run store journaled records", records=len(lines), journal=str(path))
        for rec in records:
            self._settle(rec, JOURNALED)

    def _start_probe(self) -> None:
        if self._lost is not None or (self._probe is not None and not self._probe.done()):
            return
        assert self._loop is not None
        self._probe = self._loop.create_task(self._probe_until_reachable())

    async def _probe_until_reachable(self) -> None:
        delay = _FIRST_PROBE_S
        while True:
            await asyncio.sleep(delay)
            try:
                await self._store._reopen()
            except Exception:
                delay = min(delay * 2, _MAX_PROBE_S)
                continue
            self._recovered = True
            self._wake.set()
            return

    async def _recover(self) -> None:
        """The database answers again: replay this process's journal, then write there again."""
        self._recovered = False
        try:
            replayed = await self._store._journal.replay_own(self.commit_now)
        except Exception as err:
            _log.warning("run store journal replay failed; still journaling",
                         error=self._reason(err))  # fmt: skip
            self._start_probe()
            return
        self._journaling = False
        self._journal_runs.clear()
        _log.info("run store reachable again; journal replayed", records=replayed,
                  database=self._store.url)  # fmt: skip

    async def commit_now(self, records: list[Record]) -> None:
        """Commit replayed records at once (not queued); a record the database refuses is
        logged and skipped, so one bad line never blocks the rest of a journal."""
        try:
            await self._tx.apply(records)
        except Exception as err:
            if not refused(err):
                raise
            if len(records) == 1:
                rec = records[0]
                tidied = tidy(rec)
                if tidied is not None:
                    try:
                        await self._tx.apply([tidied])
                        return
                    except Exception as again:
                        if not refused(again):
                            raise
                _log.error("run store journal record refused", operation=rec.op,
                           run_id=rec.run_id, error=describe(err))  # fmt: skip
                return
            for rec in records:
                await self.commit_now([rec])
