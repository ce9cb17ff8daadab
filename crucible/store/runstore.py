"""RunStore: every run, stage attempt and artifact in SQLite (default) or PostgreSQL.

Built on SQLAlchemy Core with its asyncio extension (``connection`` holds the engine and its
locks). Every write goes through the store's one ``Writer`` (group commits, backpressure, the
journal); every failure surfaces as :class:`StoreError`, naming the operation and the run.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import anyio
import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from crucible.context import Context
from crucible.errors import StoreError
from crucible.experiment import Experiment
from crucible.status import RunStatus
from crucible.store.checkpoints import Checkpoints
from crucible.store.connection import Database, UnusableStore, describe
from crucible.store.journal import DEFAULT_JOURNAL_DIR, Journal
from crucible.store.observer import StoreObserver
from crucible.store.prefix import prefix_match
from crucible.store.process import host_name, process_alive
from crucible.store.records import (
    ExperimentInfo,
    RunInfo,
    artifact_info,
    attempt_info,
    experiment_info,
    run_info,
)
from crucible.store.rows import artifact_record, attempt_record, finish_record, start_record
from crucible.store.schema import artifacts, experiments, metadata, runs, stage_attempts
from crucible.store.sql import Statements
from crucible.store.urls import check_folder, normalize_url
from crucible.store.writer import Writer
from crucible.trace import SpanRecord

__all__ = ["RunStore"]

_STATUSES: Final = frozenset(s.value for s in RunStatus)
_log = structlog.get_logger("crucible.store")


class RunStore:
    """Async run store. ``async with RunStore(url) as store:`` or ``open()``/``close()``.

    The engine is created on first use; ``open()`` (run implicitly by the first operation)
    creates missing tables and columns, replays journals earlier processes left, and marks runs
    whose owning process died as ``abandoned``. ``journal_after_s`` is how long the database may
    stay unreachable before the engine's records go to the journal in ``journal_dir`` (default:
    ``journal/`` beside a SQLite file, so ``.crucible/journal/`` for the default store, and
    ``.crucible/journal/`` in the working directory for PostgreSQL); ``max_pending`` bounds the
    records waiting for a commit (then writers wait). A SQLite file's folder must exist
    (StoreError naming it, at once), except the default ``.crucible/``, which is made.
    """

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        *,
        connect_timeout: float = 10.0,
        echo: bool = False,
        journal_after_s: float = 30.0,
        journal_dir: str | os.PathLike[str] | None = None,
        max_pending: int = 1024,
    ) -> None:
        if journal_after_s < 0 or max_pending < 1:
            raise ValueError("journal_after_s must be >= 0 and max_pending >= 1")
        parsed = normalize_url(url)
        check_folder(parsed)
        self._db = Database(
            parsed,
            connect_timeout=connect_timeout,
            echo=echo,
            busy_timeout=min(30.0, max(journal_after_s, 0.1)),  # a lock longer than this fails
        )
        if journal_dir is not None:
            folder = Path(journal_dir)
        elif self._db.sqlite_file is not None:  # beside its database: .crucible/journal by default
            folder = self._db.sqlite_file.parent / "journal"
        else:
            folder = Path(DEFAULT_JOURNAL_DIR)
        self._journal = Journal(folder.expanduser().absolute(), self._db.display)
        self._writer = Writer(self, journal_after_s=journal_after_s, max_pending=max_pending)
        self._open_lock: anyio.Lock | None = None
        self._opened = False
        self._sql: Statements | None = None
        self._host = host_name()
        self._observer: StoreObserver | None = None
        self._checkpoints: Checkpoints | None = None

    @property
    def url(self) -> str:
        """The database URL with any password hidden."""
        return self._db.display

    def url_for_workers(self) -> str:
        """The database URL with its password, for worker processes; never show it."""
        return str(self._db.url.render_as_string(hide_password=False))

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql`` (the URL's backend)."""
        return self._db.url.get_backend_name()

    @property
    def journal_dir(self) -> Path:
        """Where records wait when the database is unreachable (see ``journal_pending``)."""
        return self._journal.folder

    def __repr__(self) -> str:
        return f"RunStore({self.url!r})"

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def observer(self) -> StoreObserver:
        """The RunObserver that records runs in this store (one per store)."""
        if self._observer is None:
            self._observer = StoreObserver(self)
        return self._observer

    @property
    def checkpoints(self) -> Checkpoints:
        """Runs' checkpoints: the RunObserver that stores them, and reading them back."""
        if self._checkpoints is None:
            self._checkpoints = Checkpoints(self)
        return self._checkpoints

    # --- lifecycle -----------------------------------------------------------------------
    def warm_up(self) -> None:
        """Start the writer's helper now (a SQLite file's writer process), for a caller about to
        write: it starts while the caller goes on, so the first commit does not wait for it."""
        self._writer.warm_up()

    async def open(self) -> None:
        """Create or extend the tables, replay earlier journals, mark dead owners' runs."""
        if self._opened:
            return
        if self._open_lock is None:
            self._open_lock = anyio.Lock()
        async with self._open_lock:
            if self._opened:
                return
            try:
                if self._db.is_sqlite:  # waits at most the busy timeout per statement
                    added = await self._db.prepare(metadata)
                else:
                    with anyio.fail_after(self._db.connect_timeout + 5):
                        added = await self._db.prepare(metadata)
            except TimeoutError:
                raise StoreError(
                    "open", f"no answer from {self.url} within {self._db.connect_timeout + 5:g} s"
                ) from None
            if added:
                _log.info("run store schema extended", database=self.url, added=added)
            try:
                self._sql = Statements(self._db.engine("open", None).dialect)
            except ValueError as err:
                raise UnusableStore("open", str(err)) from None
            self._db.opened_identity = self._db.file_identity()
            self._opened = True
        try:
            await self._journal.replay_others(self._writer.commit_now)
            await self.mark_abandoned()
        except Exception as err:  # a read-only, locked or vanished database: reads still work
            _log.warning("run store opened without replaying the journal or marking abandoned "
                         "runs; the next open tries again", database=self.url,
                         journal=str(self.journal_dir), records=self._journal.pending(),
                         error=describe(err))  # fmt: skip

    async def close(self) -> None:
        """Commit (or journal) every pending record, then dispose of the engine.

        The store can be opened again. Records still waiting in the journal are logged (a
        warning with their number and the journal folder).
        """
        await self._writer.close()
        self._journal.close()
        waiting = self._journal.pending()
        if waiting:
            _log.warning("run store journal has records waiting", records=waiting,
                         journal=str(self.journal_dir), database=self.url)  # fmt: skip
        self._opened = False
        self._open_lock = None
        await self._db.dispose()

    async def flush(self) -> None:
        """Wait until every record handed to the store so far is committed or journaled."""
        await self._writer.flush()

    def hurry(self) -> None:
        """The process is stopping: journal at the first failed commit instead of retrying an
        unreachable database for ``journal_after_s`` (a stop's grace is often 10 s)."""
        self._writer.hurry()

    def journal_pending(self) -> int:
        """How many records of this database wait in the journal (the next open replays them)."""
        return self._journal.pending()

    async def _ensure_open(self, operation: str, run_id: str | None) -> None:
        if self._opened:
            return
        try:
            await self.open()
        except StoreError as err:
            msg = f"could not open the store: {err.reason}"
            raise StoreError(operation, msg, run_id=run_id) from err

    async def _writable(self) -> Statements:
        """The writer's statements, opening the store first if needed (StoreError if not)."""
        if not self._opened:
            await self.open()
        assert self._sql is not None
        return self._sql

    async def _reopen(self) -> None:
        """Open again (the writer's probe after an outage): schema, journals, abandoned runs."""
        self._opened = False
        await self.open()

    # --- writes --------------------------------------------------------------------------
    async def start_run(
        self,
        experiment: Experiment,
        run_id: str,
        *,
        trace_id: str | None = None,
        batch_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Upsert the experiment and insert the run as ``running``, owned by this process.

        ``extra`` holds more columns of the run's row (``reproducible.start_values``).
        Raises DuplicateRun when the id is already stored.
        """
        await self._writer.write(start_record(
            experiment, run_id, trace_id=trace_id, batch_id=batch_id, host=self._host,
            durable=False, extra=extra,
        ))  # fmt: skip

    async def record_attempt(self, run_id: str, record: SpanRecord) -> None:
        """Store one finished stage attempt (a SpanRecord from ``ctx.trace``)."""
        await self._writer.write(attempt_record(run_id, record, durable=False))

    async def finish_run(
        self,
        run_id: str,
        status: str,
        *,
        context: Context | None = None,
        failure_stage: str | None = None,
        failure_message: str | None = None,
        error_type: str | None = None,
    ) -> None:
        """Set the final status and finish time, and the context's metrics/outputs/assigns.

        Finishing again overwrites: the last call wins. Without a context the stored metrics,
        outputs and assigns are kept.
        """
        status = str(status)
        if status not in _STATUSES:
            expected = ", ".join(sorted(_STATUSES))
            raise StoreError(
                "finish_run",
                f"unknown status {status!r}; expected one of {expected}",
                run_id=run_id,
            )
        await self._writer.write(finish_record(
            run_id, status, context=context, failure_stage=failure_stage,
            failure_message=failure_message, error_type=error_type, durable=False,
        ))  # fmt: skip

    async def record_artifact(
        self,
        run_id: str,
        name: str,
        *,
        type: str = "file",
        location: str | None = None,
        format: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Store one artifact of a run (a report file, a URL, ...); a name recorded again
        replaces the earlier one."""
        await self._writer.write(artifact_record(
            run_id, name, type=type, location=location, format=format, metadata=metadata,
            durable=False,
        ))  # fmt: skip

    async def mark_abandoned(self) -> int:
        """Mark ``running`` runs of dead processes on this host ``abandoned``; return how many."""
        await self._ensure_open("mark_abandoned", None)
        async with self._db.read("mark_abandoned", None) as conn:
            result = await conn.execute(
                sa.select(runs.c.id, runs.c.owner_pid).where(
                    runs.c.status == RunStatus.RUNNING.value, runs.c.owner_host == self._host
                )
            )
            candidates = [(r.id, r.owner_pid) for r in result]
        me = os.getpid()
        dead = [(rid, pid) for rid, pid in candidates if pid is not None and pid != me]
        dead = [(rid, pid) for rid, pid in dead if not process_alive(pid)]
        if not dead:
            return 0
        marked = 0
        async with self._db.write("mark_abandoned", None) as conn:
            for rid, pid in dead:
                result = await conn.execute(
                    runs.update()
                    .where(runs.c.id == rid, runs.c.status == RunStatus.RUNNING.value)
                    .values(
                        status=RunStatus.ABANDONED.value,
                        failure_message=f"process {pid} exited while the run was running",
                    )
                )
                marked += result.rowcount
        return marked

    # --- reads ---------------------------------------------------------------------------
    @asynccontextmanager
    async def reader(self, operation: str = "read") -> AsyncIterator[AsyncConnection]:
        """A read connection for queries built outside this class (the UI's); opens the store."""
        await self._ensure_open(operation, None)
        async with self._db.read(operation, None) as conn:
            yield conn

    async def get_run(self, run_id: str) -> RunInfo | None:
        """One run with its attempts (in start order) and artifacts; None when unknown."""
        await self._ensure_open("get_run", run_id)
        async with self._db.read("get_run", run_id) as conn:
            row = (await conn.execute(sa.select(runs).where(runs.c.id == run_id))).first()
            if row is None:
                return None
            att = await conn.execute(
                sa.select(stage_attempts)
                .where(stage_attempts.c.run_id == run_id)
                .order_by(stage_attempts.c.start_ns, stage_attempts.c.id)
            )
            attempts = tuple(attempt_info(r._mapping) for r in att)
            art = await conn.execute(
                sa.select(artifacts).where(artifacts.c.run_id == run_id).order_by(artifacts.c.id)
            )
            arts = tuple(artifact_info(r._mapping) for r in art)
        return run_info(row._mapping, attempts, arts)

    async def find_run_ids(self, prefix: str, *, limit: int = 5) -> list[str]:
        """Ids of stored runs that start with ``prefix`` (exactly, case-sensitive), shortest
        first (so ``prefix`` itself, if stored), at most ``limit``; an index serves it
        (``crucible.store.prefix``)."""
        await self._ensure_open("find_run_ids", None)
        stmt = (
            sa.select(runs.c.id)
            .where(prefix_match(runs.c.id, prefix, self.dialect))
            .order_by(sa.func.length(runs.c.id), runs.c.id)
            .limit(max(0, limit))
        )
        async with self._db.read("find_run_ids", None) as conn:
            return [str(r.id) for r in await conn.execute(stmt)]

    @staticmethod
    def _filters(
        experiment_id: str | None,
        status: str | None,
        batch_id: str | None,
        batch_prefix: str | None = None,
    ) -> Sequence[sa.ColumnElement[bool]]:
        conds: list[sa.ColumnElement[bool]] = []
        if batch_prefix is not None:  # what a short id shown in a table matches
            conds.append(runs.c.batch_id.startswith(batch_prefix, autoescape=True))
        if experiment_id is not None:
            conds.append(runs.c.experiment_id == experiment_id)
        if status is not None:
            conds.append(runs.c.status == str(status))
        if batch_id is not None:
            conds.append(runs.c.batch_id == batch_id)
        return conds

    async def list_runs(
        self,
        *,
        limit: int = 50,
        experiment_id: str | None = None,
        status: str | None = None,
        batch_id: str | None = None,
        batch_prefix: str | None = None,
    ) -> list[RunInfo]:
        """Runs newest first, optionally filtered (``batch_prefix``: batch ids starting with
        it); attempts and artifacts are left empty."""
        await self._ensure_open("list_runs", None)
        stmt = (
            sa.select(runs)
            .where(*self._filters(experiment_id, status, batch_id, batch_prefix))
            .order_by(runs.c.started_at.desc(), runs.c.id.desc())
            .limit(max(0, limit))
        )
        async with self._db.read("list_runs", None) as conn:
            result = await conn.execute(stmt)
            return [run_info(r._mapping) for r in result]

    async def count_runs(
        self,
        *,
        experiment_id: str | None = None,
        status: str | None = None,
        batch_id: str | None = None,
        batch_prefix: str | None = None,
    ) -> int:
        """How many runs match the filters."""
        await self._ensure_open("count_runs", None)
        stmt = (
            sa.select(sa.func.count())
            .select_from(runs)
            .where(*self._filters(experiment_id, status, batch_id, batch_prefix))
        )
        async with self._db.read("count_runs", None) as conn:
            return int((await conn.execute(stmt)).scalar_one())

    async def get_experiment(self, experiment_id: str) -> ExperimentInfo | None:
        """The stored (redacted) experiment definition; None when unknown."""
        await self._ensure_open("get_experiment", None)
        stmt = sa.select(experiments).where(experiments.c.id == experiment_id)
        async with self._db.read("get_experiment", None) as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            return None
        return experiment_info(row._mapping)
