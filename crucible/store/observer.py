"""StoreObserver: the RunObserver that records runs, attempts and artifacts in a RunStore.

A store failure is logged and never changes a run's result, with one exception: a duplicate run
id at start propagates and refuses the run, since running would overwrite the stored one.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

import anyio
import structlog

from crucible.artifact import Artifact
from crucible.errors import DuplicateRun
from crucible.observers import AttemptStart, RunEnd, RunObserver, RunStart
from crucible.store.reproducible import start_values
from crucible.trace import SpanRecord

if TYPE_CHECKING:
    from crucible.store.runstore import RunStore

__all__ = ["StoreObserver"]

_log = structlog.get_logger("crucible.store")
_STORE_TIMEOUT_S: Final = 10.0


class StoreObserver(RunObserver):
    """Writes each run to ``store`` as it starts, as each attempt ends and as it ends.

    Every write gets 10 s and is shielded from cancellation, so a cancelled run is still
    recorded. Get the one observer of a store from :attr:`RunStore.observer`.
    """

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self._started: set[str] = set()  # runs whose row this observer wrote

    def __repr__(self) -> str:
        return f"StoreObserver({self.store!r})"

    async def on_run_start(self, *, run: RunStart) -> None:
        """Store the run as ``running``; a DuplicateRun propagates (the run is refused)."""
        write = functools.partial(
            self.store.start_run,
            run.experiment,
            run.run_id,
            trace_id=run.trace_id,
            batch_id=run.batch_id,
            extra=start_values(run),
        )
        await self._write("start_run", run.run_id, write)
        self._started.add(run.run_id)

    async def on_attempt_end(self, *, attempt: AttemptStart, record: SpanRecord) -> None:
        """Store the finished attempt's trace record."""
        run_id = attempt.run.run_id
        write = functools.partial(self.store.record_attempt, run_id, record)
        await self._write("record_attempt", run_id, write)

    async def on_run_end(self, *, run: RunEnd) -> None:
        """Store the final context's artifacts, then the status, results and failure."""
        run_id = run.run.run_id
        if run_id not in self._started:
            return  # refused at start (e.g. a duplicate id): that row belongs to another run
        self._started.discard(run_id)
        ctx = run.context
        for name, value in (ctx.artifacts if ctx is not None else {}).items():
            art = Artifact.from_value(name, value)
            write = functools.partial(
                self.store.record_artifact,
                run_id,
                name,
                type=art.type,
                location=art.location,
                format=art.format,
                metadata=art.metadata,
            )
            await self._write("record_artifact", run_id, write)
        failure = run.failure
        finish = functools.partial(
            self.store.finish_run,
            run_id,
            run.status,
            context=ctx,
            failure_stage=failure.stage if failure is not None else None,
            failure_message=str(failure.cause) if failure is not None else run.message,
            error_type=type(failure.cause).__qualname__ if failure is not None else None,
        )
        await self._write("finish_run", run_id, finish)

    @staticmethod
    async def _write(operation: str, run_id: str, write: Callable[[], Awaitable[None]]) -> None:
        """Run one store write under a deadline, shielded; log and swallow its failure."""
        try:
            with anyio.CancelScope(shield=True), anyio.fail_after(_STORE_TIMEOUT_S):
                await write()
        except DuplicateRun:
            raise
        except Exception as err:
            _log.error(
                "run store write failed", operation=operation, run_id=run_id, error=repr(err)
            )
