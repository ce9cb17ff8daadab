"""Checkpoints under load: every completed stage of every run is stored, and resume uses them.

A run whose id this process minted only queues its start; its checkpoints must still reach the
database after that start (once, in order), on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from crucible import BatchItem, Context, Experiment, Registry, StageDef, resume, run_batch, stage
from crucible.store import RunStore, StoreError
from crucible.store.pg_bulk import PgBulk
from crucible.store.rows import Record, checkpoint_record, start_record
from crucible.store.schema import checkpoints
from crucible.store.sql import apply
from crucible.store.sqlite_bulk import SqliteBulk
from crucible.store.sqlite_process import SqliteProcess
from tests.support.outages import sqlite_locked

RUNS, STAGES, CONCURRENCY = 300, 3, 64
FAILS = frozenset(range(7, RUNS, 50))  # these runs fail at their last stage


@stage("step", description="Adds one; fails at the stage named in assigns['fail_at']",
       register=False)  # fmt: skip
async def step(ctx: Context, opts: dict[str, Any]) -> Context:
    await anyio.lowlevel.checkpoint()
    done = ctx.get_metric("n", 0)
    if ctx.assigns.get("fail_at") == done:
        raise RuntimeError(f"stage {done} failed on purpose")
    return ctx.put_metric("n", done + 1).assign(seen=[*ctx.assigns.get("seen", []), done])


REG = Registry([step])
EXP = Experiment(id="ckpt-load", pipeline=[StageDef(name="step")] * STAGES, checkpoint=True)


async def stored_checkpoints(store: RunStore) -> dict[str, list[int]]:
    """Every stored checkpoint's stage index, by run, in stage order."""
    found: dict[str, list[int]] = {}
    async with store.reader() as conn:
        rows = await conn.execute(
            sa.select(checkpoints.c.run_id, checkpoints.c.stage_index).order_by(
                checkpoints.c.run_id, checkpoints.c.stage_index
            )
        )
        for run_id, index in rows:
            found.setdefault(run_id, []).append(index)
    return found


async def test_a_loaded_batch_keeps_every_checkpoint_and_resumes_a_failed_run(
    store_url: str, tmp_path: Path
) -> None:
    items = [BatchItem(EXP, assigns={"fail_at": 2} if i in FAILS else None) for i in range(RUNS)]
    async with RunStore(store_url, journal_dir=tmp_path / "journal") as store:
        with capture_logs() as logs, anyio.fail_after(120):
            outcomes = await run_batch(
                items, registry=REG, store=store, max_concurrency=CONCURRENCY
            )
        failures = [e for e in logs if e.get("log_level") == "error"]
        assert failures == []
        failed = [o.run_id for i, o in enumerate(outcomes) if i in FAILS]
        assert Counter(o.status for o in outcomes) == {
            "completed": RUNS - len(FAILS), "failed": len(FAILS),
        }  # fmt: skip

        stored = await stored_checkpoints(store)
        assert set(stored) == {o.run_id for o in outcomes}
        for o in outcomes:  # exactly one checkpoint per completed stage, none twice
            expected = [0, 1] if o.status == "failed" else [0, 1, 2]
            assert stored[o.run_id] == expected, o.run_id

        last = await store.checkpoints.last(failed[0])
        assert last is not None and (last.stage_index, last.state["metrics"]) == (1, {"n": 2})
        with anyio.fail_after(30):
            ctx = await resume(failed[0], store=store, registry=REG, assigns={"fail_at": None})
        assert ctx.metrics["n"] == STAGES and ctx.assigns["seen"] == [0, 1, 2]
        info = await store.get_run(ctx.run_id)
        assert info is not None and info.status == "completed"
        assert info.resumed_from == failed[0]
        assert [(a.stage_index, a.result) for a in info.attempts] == [
            (0, "skip"), (1, "skip"), (2, "success"),
        ]  # fmt: skip
        assert (await stored_checkpoints(store))[ctx.run_id] == [1, 2]
    assert store.journal_pending() == 0


# --- every way the writer commits, the journal, and the direct API ----------------------------


def one_run(run_id: str) -> list[Record]:
    """A start, its two checkpoints and one of them again (a retry): one batch."""
    start = start_record(EXP, run_id, trace_id=None, batch_id=None, host="h", durable=True)
    points = [checkpoint_record(run_id, i, "step", {"metrics": {"n": i + 1}}, durable=True)
              for i in range(2)]  # fmt: skip
    return [start, *points, points[0]]


async def ways(store: RunStore) -> dict[str, Callable[[list[Record]], Awaitable[Any]]]:
    """Each way a batch can be committed in this store's database, by name."""
    sql = await store._writable()
    db = store._db

    async def in_order(batch: list[Record]) -> None:
        async with db.begin("write") as conn:
            await apply(conn, sql, batch)

    found: dict[str, Callable[[list[Record]], Awaitable[Any]]] = {"in order": in_order}
    if db.sqlite_file is not None:
        path, check = db.sqlite_file, db.check_file
        proc = SqliteProcess(path, 5.0, lambda: None)
        found["worker process"] = lambda batch: proc.apply(sql, batch)

        async def bulk(batch: list[Record]) -> None:
            writer = SqliteBulk(path, 5.0, check)
            try:
                writer.apply(sql, batch)
            finally:
                writer.close()

        async def begun(batch: list[Record]) -> None:
            writer = SqliteBulk(path, 0.0, check)
            try:
                writer.begin_now(sql, batch)
                writer.commit()
            finally:
                writer.close()

        found |= {"one statement": bulk, "executemany": begun}
    else:

        async def pg(batch: list[Record]) -> None:
            async with db.autocommit("write") as conn:
                assert await PgBulk().apply(conn, sql, batch) is not None

        found["one statement"] = pg
    return found


async def test_every_way_of_committing_stores_a_runs_checkpoints_once(store_url: str) -> None:
    async with RunStore(store_url) as store:
        commit = await ways(store)
        for name, way in commit.items():
            batch = one_run(f"run {name}")
            await way(batch)
            await way(batch)  # a retried commit, a journal replayed twice: nothing twice
        stored = await stored_checkpoints(store)
        assert stored == {f"run {name}": [0, 1] for name in commit}
        last = await store.checkpoints.last("run in order")
        assert last is not None and last.state == {"metrics": {"n": 2}}
        proc = store._writer._tx.proc
        if proc is not None:
            proc.close()


async def test_checkpoints_of_an_unreachable_database_are_journaled_then_replayed(
    tmp_path: Path,
) -> None:
    db, folder = tmp_path / "runs.db", tmp_path / "journal"
    store = RunStore(db, journal_after_s=0.2, journal_dir=folder)
    await store.open()
    with sqlite_locked(str(db)), anyio.fail_after(60):
        outcomes = await run_batch([EXP] * 4, registry=REG, store=store, max_concurrency=4)
        assert all(o.ok for o in outcomes)
        assert store.journal_pending() == 4 * (1 + 2 * STAGES + 1)  # start, attempts, points, end
        await store.close()
    async with RunStore(db, journal_dir=folder) as fresh:  # as the next process would
        assert await stored_checkpoints(fresh) == {o.run_id: [0, 1, 2] for o in outcomes}
        assert fresh.journal_pending() == 0


async def test_a_checkpoint_of_an_unknown_run_is_refused_naming_it(store: RunStore) -> None:
    with pytest.raises(StoreError, match=r"record_checkpoint.*'nobody'"):
        await store.checkpoints.record("nobody", 0, "step", {"metrics": {}})
    assert await store.checkpoints.last("nobody") is None
