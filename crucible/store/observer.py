"""StoreObserver: the RunObserver that records runs, attempts and artifacts in a RunStore.

A store failure is logged and never changes a run's result, with one exception: a duplicate run
id at start propagates and refuses the run, since running would overwrite the stored one.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

import anyio
import structlog

from crucible import slots
from crucible.artifact import Artifact
from crucible.context import Context
from crucible.errors import DuplicateRun
from crucible.observers import AttemptStart, RunEnd, RunObserver, RunStart
from crucible.runids import minted
from crucible.store.reproducible import start_tail
from crucible.store.rows import Record, artifact_record, attempt_record, finish_record, start_record
from crucible.store.writer import Writer
from crucible.trace import SpanRecord


class _Store(Protocol):
    """What the observer needs of its RunStore (a protocol: the two modules import one way)."""

    _host: str
    _writer: Writer


__all__ = ["StoreObserver"]

_log = structlog.get_logger("crucible.store")


class StoreObserver(RunObserver):
    """Writes each run to ``store`` as it starts, as each attempt ends and as it ends.

    The end waits (shielded from cancellation) until its record is committed or journaled, so
    ``run()`` returns only once its final record is durable; so does the start of a run whose id
    the caller chose, so that it starts only once its id is known to be new. Other records are
    only queued: they wait only when the store's queue is full. Get the one observer of a
    store from :attr:`RunStore.observer`.
    """

    def __init__(self, store: _Store) -> None:
        self.store = store
        self._started: set[str] = set()  # runs whose row this observer wrote

    def __repr__(self) -> str:
        return f"StoreObserver({self.store!r})"

    def on_run_start(self, *, run: RunStart) -> Awaitable[None] | None:
        """Store the run as ``running``; a DuplicateRun propagates (the run is refused).

        An id this process minted is new: its start is only queued (like an attempt). An id the
        caller chose waits until the database has it, so a stored run is never run over.
        """
        rec = start_record(run.experiment, run.run_id, trace_id=run.trace_id,
                           batch_id=run.batch_id, host=self.store._host, durable=True,
                           tail=start_tail(run))  # fmt: skip
        if minted(run.run_id):
            self._started.add(run.run_id)
            return self.store._writer.offer(rec)
        return self._start_confirmed(run.run_id, rec)

    async def _start_confirmed(self, run_id: str, rec: Record) -> None:
        with anyio.CancelScope(shield=True):  # cancelled meanwhile: the run ends "cancelled"
            await self._wait("start_run", rec)
        self._started.add(run_id)

    def on_attempt_end(
        self, *, attempt: AttemptStart, record: SpanRecord
    ) -> Awaitable[None] | None:
        """Queue the finished attempt's trace record; an awaitable only while the queue is full.

        A plain method (the engine awaits what it returns): most attempts cost no coroutine.
        """
        return self.store._writer.offer(attempt_record(attempt.run.run_id, record, durable=True))

    def on_run_end(self, *, run: RunEnd) -> Awaitable[None] | None:
        """Store the final context's artifacts, then the status, results and failure.

        What it returns finishes once the final record is committed or journaled (a failure is
        logged, never raised); the engine awaits it shielded from cancellation.
        """
        run_id = run.run.run_id
        if run_id not in self._started:
            return None  # refused at start (e.g. a duplicate id): that row belongs to another run
        self._started.discard(run_id)
        ctx = run.context
        if ctx is not None and ctx.artifacts:
            return self._end_with_artifacts(run, ctx)
        slots.give_back(run_id)  # only the database is left: the next run may start
        return self.store._writer.write_quietly(self._finish(run))

    async def _end_with_artifacts(self, run: RunEnd, ctx: Context) -> None:
        run_id = run.run.run_id
        writer = self.store._writer
        with anyio.CancelScope(shield=True):  # a cancelled run is still recorded, all of it
            for name, value in ctx.artifacts.items():
                art = Artifact.from_value(name, value)
                waiting = writer.offer(artifact_record(
                    run_id, name, type=art.type, location=art.location, format=art.format,
                    metadata=art.metadata, durable=True,
                ))  # fmt: skip
                if waiting is not None:
                    await waiting
            slots.give_back(run_id)
            await writer.write_quietly(self._finish(run))

    @staticmethod
    def _finish(run: RunEnd) -> Record:
        failure = run.failure
        return finish_record(
            run.run.run_id, str(run.status), context=run.context,
            failure_stage=failure.stage if failure is not None else None,
            failure_message=str(failure.cause) if failure is not None else run.message,
            error_type=type(failure.cause).__qualname__ if failure is not None else None,
            durable=True,
        )  # fmt: skip

    async def _wait(self, operation: str, rec: Record) -> None:
        """Write ``rec`` and wait for it; log and swallow a failure (but not DuplicateRun)."""
        try:
            await self.store._writer.write(rec)
        except DuplicateRun:
            raise
        except Exception as err:
            _log.error(
                "run store write failed", operation=operation, run_id=rec.run_id, error=repr(err)
            )
