"""The run store: every run, stage attempt and artifact in SQLite (default) or PostgreSQL.

Built on SQLAlchemy Core with its asyncio extension. SQLite files run in WAL mode with a busy
timeout, and this process serialises its SQLite write transactions behind one lock so that many
concurrent runs in an event loop never trip over each other. PostgreSQL uses a normal pool.
Every failure surfaces as :class:`StoreError`, naming the operation and the run.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import anyio
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, Dialect, RowMapping, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from crucible.context import Context
from crucible.errors import DuplicateRun, StoreError
from crucible.experiment import Experiment
from crucible.serialize import to_jsonable
from crucible.status import RunStatus
from crucible.trace import SpanRecord

__all__ = [
    "DEFAULT_URL",
    "ArtifactInfo",
    "AttemptInfo",
    "ExperimentInfo",
    "RunInfo",
    "RunStatus",
    "RunStore",
    "StoreError",
    "normalize_url",
]

DEFAULT_URL: Final = "sqlite+aiosqlite:///.crucible/runs.db"
_SQLITE_BUSY_TIMEOUT_S: Final = 30.0
_MAX_ERROR_CHARS: Final = 500


_STATUSES: Final = frozenset(s.value for s in RunStatus)


# --- schema ----------------------------------------------------------------------------------


class UTCDateTime(sa.TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime with microseconds, on SQLite (naive text) and PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; pass a timezone-aware one")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        when = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
        if when.tzinfo is None:
            return when.replace(tzinfo=dt.UTC)
        return when.astimezone(dt.UTC)


_JSON = sa.JSON().with_variant(pg_dialect.JSONB(), "postgresql")
_AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite rowid alias

metadata = sa.MetaData()

experiments = sa.Table(
    "experiments",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("definition", _JSON, nullable=False),
    sa.Column("owner", sa.String(255)),
    sa.Column("tags", _JSON, nullable=False),
    sa.Column("metadata", _JSON, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("experiment_id", sa.String(255), sa.ForeignKey("experiments.id"), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime()),
    sa.Column("trace_id", sa.String(64)),
    sa.Column("batch_id", sa.String(255)),
    sa.Column("metrics", _JSON, nullable=False),
    sa.Column("outputs", _JSON, nullable=False),
    sa.Column("assigns", _JSON, nullable=False),
    sa.Column("failure_stage", sa.String(255)),
    sa.Column("failure_message", sa.Text()),
    sa.Column("error_type", sa.String(255)),
    sa.Column("owner_pid", sa.Integer()),
    sa.Column("owner_host", sa.String(255)),
    sa.Index("ix_runs_experiment_id", "experiment_id"),
    sa.Index("ix_runs_status", "status"),
    sa.Index("ix_runs_batch_id", "batch_id"),
    sa.Index("ix_runs_started_at", "started_at"),
)

stage_attempts = sa.Table(
    "stage_attempts",
    metadata,
    sa.Column("id", _AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column(
        "run_id", sa.String(255), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("stage", sa.String(255), nullable=False),
    sa.Column("name", sa.String(255)),
    sa.Column("stage_index", sa.Integer()),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("result", sa.String(32), nullable=False),
    sa.Column("start_ns", sa.BigInteger(), nullable=False),
    sa.Column("end_ns", sa.BigInteger(), nullable=False),
    sa.Column("duration_s", sa.Float(), nullable=False),
    sa.Column("span_id", sa.String(32)),
    sa.Column("parent_span_id", sa.String(32)),
    sa.Column("error_type", sa.String(255)),
    sa.Column("error_message", sa.Text()),
    sa.Column("events", _JSON, nullable=False),
    sa.Index("ix_stage_attempts_run_id", "run_id"),
)

artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("id", _AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column(
        "run_id", sa.String(255), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("location", sa.Text()),
    sa.Column("format", sa.String(64)),
    sa.Column("metadata", _JSON, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index("ix_artifacts_run_id", "run_id"),
    sa.Index("ix_artifacts_type", "type"),
)


# --- records handed back to callers ----------------------------------------------------------


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    """One stored stage attempt (a finished stage span)."""

    id: int
    run_id: str
    stage: str
    name: str | None
    stage_index: int | None
    attempt: int
    result: str
    start_ns: int
    end_ns: int
    duration_s: float
    span_id: str | None
    parent_span_id: str | None
    error_type: str | None
    error_message: str | None
    events: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "run_id": self.run_id,
            "stage": self.stage,
            "name": self.name,
            "stage_index": self.stage_index,
            "attempt": self.attempt,
            "result": self.result,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "duration_s": self.duration_s,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "events": list(self.events),
        }


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    """One stored artifact (a file a run wrote, a URL, ...)."""

    id: int
    run_id: str
    name: str
    type: str
    location: str | None
    format: str | None
    metadata: dict[str, Any]
    created_at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "run_id": self.run_id,
            "name": self.name,
            "type": self.type,
            "location": self.location,
            "format": self.format,
            "metadata": dict(self.metadata),
            "created_at": _iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One stored run with its attempts and artifacts (empty tuples in listings)."""

    run_id: str
    experiment_id: str
    status: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    trace_id: str | None
    batch_id: str | None
    metrics: dict[str, Any]
    outputs: list[Any]
    assigns: dict[str, Any]
    failure_stage: str | None
    failure_message: str | None
    error_type: str | None
    owner_pid: int | None
    owner_host: str | None
    attempts: tuple[AttemptInfo, ...] = ()
    artifacts: tuple[ArtifactInfo, ...] = ()

    @property
    def id(self) -> str:
        """The ``runs.id`` column (same as ``run_id``)."""
        return self.run_id

    @property
    def duration_s(self) -> float | None:
        """Wall-clock seconds from start to finish; None while unfinished."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "status": self.status,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "duration_s": self.duration_s,
            "trace_id": self.trace_id,
            "batch_id": self.batch_id,
            "metrics": dict(self.metrics),
            "outputs": list(self.outputs),
            "assigns": dict(self.assigns),
            "failure_stage": self.failure_stage,
            "failure_message": self.failure_message,
            "error_type": self.error_type,
            "owner_pid": self.owner_pid,
            "owner_host": self.owner_host,
            "attempts": [a.to_dict() for a in self.attempts],
            "artifacts": [a.to_dict() for a in self.artifacts],
        }


@dataclass(frozen=True, slots=True)
class ExperimentInfo:
    """One stored experiment: its redacted definition and descriptive fields."""

    id: str
    definition: dict[str, Any]
    owner: str | None
    tags: list[Any]
    metadata: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "definition": dict(self.definition),
            "owner": self.owner,
            "tags": list(self.tags),
            "metadata": dict(self.metadata),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


def _run_info(
    row: RowMapping,
    attempts: tuple[AttemptInfo, ...] = (),
    arts: tuple[ArtifactInfo, ...] = (),
) -> RunInfo:
    return RunInfo(
        run_id=row["id"],
        experiment_id=row["experiment_id"],
        status=row["status"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        trace_id=row["trace_id"],
        batch_id=row["batch_id"],
        metrics=row["metrics"] or {},
        outputs=row["outputs"] or [],
        assigns=row["assigns"] or {},
        failure_stage=row["failure_stage"],
        failure_message=row["failure_message"],
        error_type=row["error_type"],
        owner_pid=row["owner_pid"],
        owner_host=row["owner_host"],
        attempts=attempts,
        artifacts=arts,
    )


def _attempt_info(row: RowMapping) -> AttemptInfo:
    return AttemptInfo(
        id=row["id"],
        run_id=row["run_id"],
        stage=row["stage"],
        name=row["name"],
        stage_index=row["stage_index"],
        attempt=row["attempt"],
        result=row["result"],
        start_ns=row["start_ns"],
        end_ns=row["end_ns"],
        duration_s=row["duration_s"],
        span_id=row["span_id"],
        parent_span_id=row["parent_span_id"],
        error_type=row["error_type"],
        error_message=row["error_message"],
        events=row["events"] or [],
    )


def _artifact_info(row: RowMapping) -> ArtifactInfo:
    return ArtifactInfo(
        id=row["id"],
        run_id=row["run_id"],
        name=row["name"],
        type=row["type"],
        location=row["location"],
        format=row["format"],
        metadata=row["metadata"] or {},
        created_at=row["created_at"],
    )


# --- URLs and processes ----------------------------------------------------------------------


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
    return parsed


def _process_alive(pid: int) -> bool:
    """True unless ``pid`` certainly names no live process on this host (zombies are dead)."""
    if sys.platform == "win32":  # os.kill would terminate the process; assume it lives
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _describe(exc: BaseException) -> str:
    """A short message for an error, without SQL text or bound parameters."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        inner: BaseException = exc.orig
        root = inner.__cause__ or inner  # asyncpg's own exception behind the DB-API adapter
        text = f"{type(root).__name__}: {inner}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split("(Background on this error at")[0].split())
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


# --- the store -------------------------------------------------------------------------------


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
        self._url = normalize_url(url)
        self._connect_timeout = connect_timeout
        self._echo = echo
        self._engine: AsyncEngine | None = None
        self._write_lock: anyio.Lock | None = None
        self._open_lock: anyio.Lock | None = None
        self._opened = False
        self._host = socket.gethostname()

    @property
    def url(self) -> str:
        """The database URL with any password hidden."""
        return self._url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql`` (the URL's backend)."""
        return self._url.get_backend_name()

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

    # --- lifecycle -----------------------------------------------------------------------
    def _is_sqlite(self) -> bool:
        return self._url.get_backend_name() == "sqlite"

    def _sqlite_memory(self) -> bool:
        db = self._url.database
        return self._is_sqlite() and (not db or db == ":memory:" or "mode=memory" in db)

    def _create_engine(self) -> AsyncEngine:
        kwargs: dict[str, Any] = {"echo": self._echo}
        connect_args: dict[str, Any] = {}
        if self._is_sqlite():
            connect_args["timeout"] = _SQLITE_BUSY_TIMEOUT_S
            db = self._url.database
            if db and not self._sqlite_memory() and not db.startswith("file:"):
                Path(db).parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs["pool_pre_ping"] = True
            if self._url.get_driver_name() == "asyncpg" and "timeout" not in self._url.query:
                connect_args["timeout"] = self._connect_timeout
        kwargs["connect_args"] = connect_args
        engine = create_async_engine(self._url, **kwargs)
        if self._is_sqlite():
            sa.event.listen(engine.sync_engine, "connect", _configure_sqlite)
        return engine

    def _get_engine(self, operation: str, run_id: str | None) -> AsyncEngine:
        if self._engine is None:
            try:
                self._engine = self._create_engine()
            except Exception as exc:
                raise StoreError(
                    operation, f"cannot use {self.url}: {_describe(exc)}", run_id=run_id
                ) from exc
            self._write_lock = anyio.Lock()
        return self._engine

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
                if self._is_sqlite():  # waits at most the busy timeout per statement
                    await self._create_tables()
                else:
                    with anyio.fail_after(self._connect_timeout + 5):
                        await self._create_tables()
            except TimeoutError:
                raise StoreError(
                    "open", f"no answer from {self.url} within {self._connect_timeout + 5:g} s"
                ) from None
            self._opened = True
        await self.mark_abandoned()

    async def _create_tables(self) -> None:
        # Two processes may race to create the same tables; the loser retries and finds them.
        for attempt in range(3):
            try:
                async with self._write("open", None) as conn:
                    await conn.run_sync(metadata.create_all)
                return
            except StoreError:
                if attempt == 2:
                    raise
                await anyio.sleep(0.1 * (attempt + 1))

    async def close(self) -> None:
        """Dispose of the engine and its connections; the store can be opened again."""
        engine, self._engine = self._engine, None
        self._opened = False
        self._write_lock = self._open_lock = None
        if engine is not None:
            await engine.dispose()

    async def _ensure_open(self, operation: str, run_id: str | None) -> None:
        if self._opened:
            return
        try:
            await self.open()
        except StoreError as err:
            msg = f"could not open the store: {err.reason}"
            raise StoreError(operation, msg, run_id=run_id) from err

    # --- connection helpers --------------------------------------------------------------
    def _lock_for_writes(self) -> AbstractAsyncContextManager[Any]:
        if self._is_sqlite() and self._write_lock is not None:
            return self._write_lock
        return nullcontext()

    def _lock_for_reads(self) -> AbstractAsyncContextManager[Any]:
        # One shared in-memory connection: reads must not interleave with a write transaction.
        if self._sqlite_memory() and self._write_lock is not None:
            return self._write_lock
        return nullcontext()

    @asynccontextmanager
    async def _write(self, operation: str, run_id: str | None) -> AsyncIterator[AsyncConnection]:
        engine = self._get_engine(operation, run_id)
        try:
            async with self._lock_for_writes(), engine.begin() as conn:
                yield conn
        except StoreError:
            raise
        except IntegrityError as exc:
            raise StoreError(operation, _describe(exc), run_id=run_id) from exc
        except Exception as exc:
            raise StoreError(operation, f"{self.url}: {_describe(exc)}", run_id=run_id) from exc

    @asynccontextmanager
    async def _read(self, operation: str, run_id: str | None) -> AsyncIterator[AsyncConnection]:
        engine = self._get_engine(operation, run_id)
        try:
            async with self._lock_for_reads(), engine.connect() as conn:
                yield conn
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(operation, f"{self.url}: {_describe(exc)}", run_id=run_id) from exc

    # --- writes --------------------------------------------------------------------------
    async def start_run(
        self,
        experiment: Experiment,
        run_id: str,
        *,
        trace_id: str | None = None,
        batch_id: str | None = None,
    ) -> None:
        """Upsert the experiment and insert the run as ``running``, owned by this process."""
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
        }
        try:
            async with self._write("start_run", run_id) as conn:
                await self._upsert_experiment(conn, exp_row)
                await conn.execute(runs.insert().values(run_row))
        except StoreError as err:
            cause = err.__cause__
            if isinstance(cause, IntegrityError):
                msg = f"a run with this id already exists ({_describe(cause)})"
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
        async with self._write("record_attempt", run_id) as conn:
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
        async with self._write("finish_run", run_id) as conn:
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
        async with self._write("record_artifact", run_id) as conn:
            await conn.execute(artifacts.insert().values(row))

    async def mark_abandoned(self) -> int:
        """Mark ``running`` runs of dead processes on this host ``abandoned``; return how many."""
        await self._ensure_open("mark_abandoned", None)
        async with self._read("mark_abandoned", None) as conn:
            result = await conn.execute(
                sa.select(runs.c.id, runs.c.owner_pid).where(
                    runs.c.status == RunStatus.RUNNING.value, runs.c.owner_host == self._host
                )
            )
            candidates = [(r.id, r.owner_pid) for r in result]
        me = os.getpid()
        dead = [(rid, pid) for rid, pid in candidates if pid is not None and pid != me]
        dead = [(rid, pid) for rid, pid in dead if not _process_alive(pid)]
        if not dead:
            return 0
        marked = 0
        async with self._write("mark_abandoned", None) as conn:
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
    async def get_run(self, run_id: str) -> RunInfo | None:
        """One run with its attempts (in start order) and artifacts; None when unknown."""
        await self._ensure_open("get_run", run_id)
        async with self._read("get_run", run_id) as conn:
            row = (await conn.execute(sa.select(runs).where(runs.c.id == run_id))).first()
            if row is None:
                return None
            att = await conn.execute(
                sa.select(stage_attempts)
                .where(stage_attempts.c.run_id == run_id)
                .order_by(stage_attempts.c.start_ns, stage_attempts.c.id)
            )
            attempts = tuple(_attempt_info(r._mapping) for r in att)
            art = await conn.execute(
                sa.select(artifacts).where(artifacts.c.run_id == run_id).order_by(artifacts.c.id)
            )
            arts = tuple(_artifact_info(r._mapping) for r in art)
        return _run_info(row._mapping, attempts, arts)

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
        async with self._read("list_runs", None) as conn:
            result = await conn.execute(stmt)
            return [_run_info(r._mapping) for r in result]

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
        async with self._read("count_runs", None) as conn:
            return int((await conn.execute(stmt)).scalar_one())

    async def get_experiment(self, experiment_id: str) -> ExperimentInfo | None:
        """The stored (redacted) experiment definition; None when unknown."""
        await self._ensure_open("get_experiment", None)
        stmt = sa.select(experiments).where(experiments.c.id == experiment_id)
        async with self._read("get_experiment", None) as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            return None
        m = row._mapping
        return ExperimentInfo(
            id=m["id"],
            definition=m["definition"],
            owner=m["owner"],
            tags=m["tags"] or [],
            metadata=m["metadata"] or {},
            created_at=m["created_at"],
            updated_at=m["updated_at"],
        )


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
