"""RunStore: every run, stage attempt and artifact in SQLite (default) or PostgreSQL.

Built on SQLAlchemy Core with its asyncio extension (``connection`` holds the engine and its
locks). Every failure surfaces as :class:`StoreError`, naming the operation and the run.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Final, Self

import anyio
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from crucible.context import Context
from crucible.errors import DuplicateRun, StoreError
from crucible.experiment import Experiment
from crucible.serialize import to_jsonable
from crucible.status import RunStatus
from crucible.store.checkpoints import Checkpoints
from crucible.store.connection import Database, describe
from crucible.store.observer import StoreObserver
from crucible.store.process import host_name, process_alive
from crucible.store.records import (
    ExperimentInfo,
    RunInfo,
    artifact_info,
    attempt_info,
    experiment_info,
    run_info,
)
from crucible.store.schema import artifacts, experiments, metadata, runs, stage_attempts
from crucible.store.urls import normalize_url
from crucible.trace import SpanRecord

__all__ = ["RunStore"]

_STATUSES: Final = frozenset(s.value for s in RunStatus)


class RunStore:
    """Async run store. ``async with RunStore(url) as store:`` or ``open()``/``close()``.

    The engine is created on first use; ``open()`` (run implicitly by the first operation)
    creates missing tables and marks runs whose owning process died as ``abandoned``.
    """

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        *,
        connect_timeout: float = 10.0,
        echo: bool = False,
    ) -> None:
        self._db = Database(normalize_url(url), connect_timeout=connect_timeout, echo=echo)
        self._open_lock: anyio.Lock | None = None
        self._opened = False
        self._host = host_name()
        self._observer: StoreObserver | None = None
        self._checkpoints: Checkpoints | None = None

    @property
    def url(self) -> str:
        """The database URL with any password hidden."""
        return self._db.display

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql`` (the URL's backend)."""
        return self._db.url.get_backend_name()

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
            self._checkpoints = Checkpoints(self._db, self._ensure_open)
        return self._checkpoints

    # --- lifecycle -----------------------------------------------------------------------
    async def open(self) -> None:
        """Create the engine and any missing tables, then mark dead owners' runs abandoned."""
        if self._opened:
            return
        if self._open_lock is None:
            self._open_lock = anyio.Lock()
        async with self._open_lock:
            if self._opened:
                return
            try:
                if self._db.is_sqlite:  # waits at most the busy timeout per statement
                    await self._db.create_tables(metadata)
                else:
                    with anyio.fail_after(self._db.connect_timeout + 5):
                        await self._db.create_tables(metadata)
            except TimeoutError:
                raise StoreError(
                    "open", f"no answer from {self.url} within {self._db.connect_timeout + 5:g} s"
                ) from None
            self._opened = True
        await self.mark_abandoned()

    async def close(self) -> None:
        """Dispose of the engine and its connections; the store can be opened again."""
        self._opened = False
        self._open_lock = None
        await self._db.dispose()

    async def _ensure_open(self, operation: str, run_id: str | None) -> None:
        if self._opened:
            return
        try:
            await self.open()
        except StoreError as err:
            msg = f"could not open the store: {err.reason}"
            raise StoreError(operation, msg, run_id=run_id) from err

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
        """
        await self._ensure_open("start_run", run_id)
        now = dt.datetime.now(dt.UTC)
        definition = to_jsonable(experiment.model_dump(mode="json", by_alias=True))
        exp_row = {
            "id": experiment.id,
            "definition": definition,
            "owner": experiment.owner,
            "tags": to_jsonable(experiment.tags or []),
            "metadata": to_jsonable(experiment.metadata or {}),
            "created_at": now,
            "updated_at": now,
        }
        run_row = {
            "id": run_id,
            "experiment_id": experiment.id,
            "status": RunStatus.RUNNING.value,
            "started_at": now,
            "finished_at": None,
            "trace_id": trace_id,
            "batch_id": batch_id,
            "metrics": {},
            "outputs": [],
            "assigns": {},
            "owner_pid": os.getpid(),
            "owner_host": self._host,
            **(extra or {}),
        }
        try:
            async with self._db.write("start_run", run_id) as conn:
                await self._upsert_experiment(conn, exp_row)
                await conn.execute(runs.insert().values(run_row))
        except StoreError as err:
            cause = err.__cause__
            if isinstance(cause, IntegrityError):
                msg = f"a run with this id already exists ({describe(cause)})"
                raise DuplicateRun("start_run", msg, run_id=run_id) from cause
            raise

    async def _upsert_experiment(self, conn: AsyncConnection, row: dict[str, Any]) -> None:
        changed = {k: row[k] for k in ("definition", "owner", "tags", "metadata", "updated_at")}
        name = conn.dialect.name
        if name in ("sqlite", "postgresql"):
            insert = sqlite_dialect.insert if name == "sqlite" else pg_dialect.insert
            stmt = insert(experiments).values(row)
            await conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=changed))
            return
        result = await conn.execute(
            experiments.update().where(experiments.c.id == row["id"]).values(changed)
        )
        if result.rowcount == 0:
            await conn.execute(experiments.insert().values(row))

    async def record_attempt(self, run_id: str, record: SpanRecord) -> None:
        """Store one finished stage attempt (a SpanRecord from ``ctx.trace``)."""
        await self._ensure_open("record_attempt", run_id)
        row = {
            "run_id": run_id,
            "stage": record.stage,
            "name": record.name,
            "stage_index": record.stage_index,
            "attempt": record.attempt,
            "result": str(record.result),
            "start_ns": record.start_ns,
            "end_ns": record.end_ns,
            "duration_s": record.duration_s,
            "span_id": record.span_id,
            "parent_span_id": record.parent_span_id,
            "error_type": record.error_type,
            "error_message": record.error_message,
            "events": to_jsonable([e.to_dict() for e in record.events]),
        }
        async with self._db.write("record_attempt", run_id) as conn:
            await conn.execute(stage_attempts.insert().values(row))

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
        await self._ensure_open("finish_run", run_id)
        values: dict[str, Any] = {
            "status": status,
            "finished_at": dt.datetime.now(dt.UTC),
            "failure_stage": failure_stage,
            "failure_message": failure_message,
            "error_type": error_type,
        }
        if context is not None:
            data = context.to_dict()
            values["metrics"] = data["metrics"]
            values["outputs"] = data["outputs"]
            values["assigns"] = data["assigns"]
            trace = data.get("trace")
            if isinstance(trace, Mapping) and trace.get("trace_id"):
                values["trace_id"] = trace["trace_id"]
        async with self._db.write("finish_run", run_id) as conn:
            result = await conn.execute(runs.update().where(runs.c.id == run_id).values(values))
            if result.rowcount == 0:
                raise StoreError("finish_run", "no such run", run_id=run_id)

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
        """Store one artifact of a run (a report file, a URL, ...)."""
        await self._ensure_open("record_artifact", run_id)
        row = {
            "run_id": run_id,
            "name": str(name),
            "type": type,
            "location": None if location is None else os.fspath(location),
            "format": format,
            "metadata": to_jsonable(dict(metadata or {})),
            "created_at": dt.datetime.now(dt.UTC),
        }
        async with self._db.write("record_artifact", run_id) as conn:
            await conn.execute(artifacts.insert().values(row))

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

    @staticmethod
    def _filters(
        experiment_id: str | None, status: str | None, batch_id: str | None
    ) -> Sequence[sa.ColumnElement[bool]]:
        conds: list[sa.ColumnElement[bool]] = []
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
    ) -> list[RunInfo]:
        """Runs newest first, optionally filtered; attempts and artifacts are left empty."""
        await self._ensure_open("list_runs", None)
        stmt = (
            sa.select(runs)
            .where(*self._filters(experiment_id, status, batch_id))
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
    ) -> int:
        """How many runs match the filters."""
        await self._ensure_open("count_runs", None)
        stmt = (
            sa.select(sa.func.count())
            .select_from(runs)
            .where(*self._filters(experiment_id, status, batch_id))
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
