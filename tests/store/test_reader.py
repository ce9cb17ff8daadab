"""RunStore.reader(): a read connection for queries built outside the store (the UI's)."""

from __future__ import annotations

import sqlalchemy as sa

from crucible import Experiment
from crucible.store import RunStore
from crucible.store.schema import runs


async def test_reader_opens_the_store_and_sees_stored_runs(store_url: str) -> None:
    async with RunStore(store_url) as writer:
        await writer.start_run(Experiment(id="exp1"), "r1", batch_id="b1")
    reader = RunStore(store_url)  # never opened explicitly: reader() opens it
    try:
        async with reader.reader("test") as conn:
            rows = (await conn.execute(sa.select(runs.c.id, runs.c.batch_id))).all()
    finally:
        await reader.close()
    assert [(r.id, r.batch_id) for r in rows] == [("r1", "b1")]
