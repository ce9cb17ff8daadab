"""Checkpoints: the state each completed stage left, for runs whose experiment asks for them.

``store.checkpoints`` is both the RunObserver that stores them as the engine reports them and
the way to read them back (what ``crucible.resume`` starts from).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import anyio
import sqlalchemy as sa
import structlog

from crucible.checkpoint import encode_context
from crucible.observers import Checkpoint, RunObserver
from crucible.store.connection import Database
from crucible.store.records import CheckpointInfo, checkpoint_info
from crucible.store.rows import checkpoint_record
from crucible.store.schema import checkpoints
from crucible.store.writer import Writer

__all__ = ["Checkpoints"]

_log = structlog.get_logger("crucible.store")


class _Store(Protocol):
    """What checkpoints need of their RunStore (a protocol: the two modules import one way)."""

    _db: Database
    _writer: Writer

    async def _ensure_open(self, operation: str, run_id: str | None) -> None: ...


class Checkpoints(RunObserver):
    """Writes and reads the ``checkpoints`` table of one store.

    Checkpoints go through the store's writer, behind their run's start: committed after it
    (a run whose id this process minted only queues its start), retried, and journaled with it
    while the database is unreachable. A write that still fails is logged as an error and never
    changes the run's result; it only means the run cannot be resumed from that stage.
    """

    def __init__(self, store: _Store) -> None:
        self._store = store

    def __repr__(self) -> str:
        return f"Checkpoints({self._store._db.display!r})"

    async def on_checkpoint(self, *, checkpoint: Checkpoint) -> None:
        """Store the checkpoint's state and wait until it is committed or journaled, shielded
        from cancellation: the next stage starts only once this one can be resumed from."""
        run_id = checkpoint.run.run_id
        rec = checkpoint_record(run_id, checkpoint.stage_index, checkpoint.stage,
                                encode_context(checkpoint.context), durable=True)  # fmt: skip
        try:
            with anyio.CancelScope(shield=True):
                await self._store._writer.write(rec)
        except Exception as err:
            _log.error(
                "run store write failed", operation="record_checkpoint", run_id=run_id,
                error=repr(err),
            )  # fmt: skip

    async def record(
        self, run_id: str, stage_index: int, stage: str, state: Mapping[str, Any]
    ) -> None:
        """Store the encoded state (``checkpoint.encode_context``) a completed stage left.

        Like the RunStore's other direct writes: StoreError at the first failure, and a stage
        recorded again for the same run keeps the first state.
        """
        await self._store._writer.write(
            checkpoint_record(run_id, stage_index, stage, state, durable=False)
        )

    async def last(self, run_id: str) -> CheckpointInfo | None:
        """The checkpoint of the run's furthest completed stage; None when it has none."""
        await self._store._ensure_open("last_checkpoint", run_id)
        stmt = (
            sa.select(checkpoints)
            .where(checkpoints.c.run_id == run_id)
            .order_by(checkpoints.c.stage_index.desc(), checkpoints.c.id.desc())
            .limit(1)
        )
        async with self._store._db.read("last_checkpoint", run_id) as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else checkpoint_info(row._mapping)
