"""Checkpoints: the state each completed stage left, for runs whose experiment asks for them.

``store.checkpoints`` is both the RunObserver that stores them as the engine reports them and
the way to read them back (what ``crucible.resume`` starts from).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import sqlalchemy as sa
import structlog

from crucible.checkpoint import encode_context
from crucible.observers import Checkpoint, RunObserver
from crucible.store.connection import Database
from crucible.store.records import CheckpointInfo, checkpoint_info
from crucible.store.schema import checkpoints

__all__ = ["Checkpoints"]

_log = structlog.get_logger("crucible.store")
EnsureOpen = Callable[[str, str | None], Awaitable[None]]


class Checkpoints(RunObserver):
    """Writes and reads the ``checkpoints`` table of one store.

    A failed write is logged and never changes the run's result; it only means the run cannot
    be resumed from that stage.
    """

    def __init__(self, db: Database, ensure_open: EnsureOpen) -> None:
        self._db = db
        self._ensure_open = ensure_open

    def __repr__(self) -> str:
        return f"Checkpoints({self._db.display!r})"

    async def on_checkpoint(self, *, checkpoint: Checkpoint) -> None:
        """Store the checkpoint's state, shielded from cancellation."""
        run_id = checkpoint.run.run_id
        state = encode_context(checkpoint.context)
        try:
            with anyio.CancelScope(shield=True):
                await self.record(run_id, checkpoint.stage_index, checkpoint.stage, state)
        except Exception as err:
            _log.error(
                "run store write failed", operation="record_checkpoint", run_id=run_id,
                error=repr(err),
            )  # fmt: skip

    async def record(
        self, run_id: str, stage_index: int, stage: str, state: Mapping[str, Any]
    ) -> None:
        """Store the encoded state (``checkpoint.encode_context``) a completed stage left."""
        await self._ensure_open("record_checkpoint", run_id)
        row = {
            "run_id": run_id,
            "stage_index": stage_index,
            "stage": stage,
            "state": dict(state),
            "created_at": dt.datetime.now(dt.UTC),
        }
        async with self._db.write("record_checkpoint", run_id) as conn:
            await conn.execute(checkpoints.insert().values(row))

    async def last(self, run_id: str) -> CheckpointInfo | None:
        """The checkpoint of the run's furthest completed stage; None when it has none."""
        await self._ensure_open("last_checkpoint", run_id)
        stmt = (
            sa.select(checkpoints)
            .where(checkpoints.c.run_id == run_id)
            .order_by(checkpoints.c.stage_index.desc(), checkpoints.c.id.desc())
            .limit(1)
        )
        async with self._db.read("last_checkpoint", run_id) as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else checkpoint_info(row._mapping)
