"""The store's writer: concurrent records commit together, and none is lost or duplicated."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import secrets
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from crucible import Context, DuplicateRun, Experiment, Registry, SpanRecord, StageDef, run, stage
from crucible.errors import StoreError
from crucible.observers import notify
from crucible.store import RunStore, normalize_url
from tests.store.test_observer import attempt_start, run_start

EXP = Experiment(id="w", pipeline=[StageDef(name="step") for _ in range(3)])


@stage("step", description="Awaits once", register=False)
async def step(ctx: Context) -> Context:
    await anyio.lowlevel.checkpoint()
    return ctx.put_metric("n", ctx.get_metric("n", 0) + 1)


REG = Registry([step])


async def scalar(url: str, sql: str) -> Any:
    engine = create_async_engine(normalize_url(url))
    try:
        async with engine.connect() as conn:
            return (await conn.execute(sa.text(sql))).scalar_one()
    finally:
        await engine.dispose()


def span(stage_name: str = "load") -> SpanRecord:
    return SpanRecord(
        name=f"stage {stage_name}", stage=stage_name, span_id=secrets.token_hex(8),
        parent_span_id=None, start_ns=1, end_ns=2, result="success", attempt=1,
    )  # fmt: skip


async def test_duplicate_starts_in_one_commit_fail_alone(store: RunStore, store_url: str) -> None:
    await store.start_run(Experiment(id="e"), "stored-before")
    await store.flush()
    ids = ["same", "same", "stored-before", *(f"new-{i}" for i in range(20)), "same"]
    results = await asyncio.gather(
        *(store.start_run(Experiment(id="e"), rid) for rid in ids), return_exceptions=True
    )
    refused = [rid for rid, r in zip(ids, results, strict=True) if isinstance(r, DuplicateRun)]
    assert sorted(refused) == ["same", "same", "stored-before"]
    assert all(r is None for rid, r in zip(ids, results, strict=True) if rid.startswith("new-"))
    assert await scalar(store_url, "SELECT count(*) FROM runs") == 22
    first = await store.get_run("stored-before")
    assert first is not None and first.status == "running"


async def test_a_start_refused_because_another_process_stored_the_id(
    store: RunStore, store_url: str
) -> None:
    await store.start_run(Experiment(id="e"), "theirs")
    engine = create_async_engine(normalize_url(store_url))
    try:  # the row now looks like another process's
        async with engine.begin() as conn:
            await conn.execute(sa.text("UPDATE runs SET owner_pid = 1 WHERE id = 'theirs'"))
    finally:
        await engine.dispose()
    await store.finish_run("theirs", "completed")  # leaves this process's list of live runs
    results = await asyncio.gather(
        store.start_run(Experiment(id="e"), "theirs"),
        store.start_run(Experiment(id="e"), "mine"),
        return_exceptions=True,
    )
    assert isinstance(results[0], DuplicateRun) and results[1] is None
    info = await store.get_run("theirs")
    assert info is not None and info.owner_pid == 1 and info.status == "completed"


async def test_a_refused_row_fails_only_its_own_record(store: RunStore, store_url: str) -> None:
    await store.start_run(Experiment(id="e"), "real")
    writes = [store.record_attempt("real", span()) for _ in range(10)]
    writes.insert(5, store.record_attempt("ghost", span()))
    writes.insert(7, store.finish_run("nobody", "completed"))
    results = await asyncio.gather(*writes, return_exceptions=True)
    failed = [r for r in results if isinstance(r, StoreError)]
    assert [(e.operation, e.run_id) for e in failed] == [
        ("record_attempt", "ghost"),
        ("finish_run", "nobody"),
    ]
    assert await scalar(store_url, "SELECT count(*) FROM stage_attempts") == 10


async def test_a_full_queue_makes_runs_wait_and_loses_nothing(tmp_path: Path) -> None:
    async with RunStore(tmp_path / "runs.db", max_pending=3) as store:
        outcomes = await run_many(store, 300)
        assert all(o == 3 for o in outcomes)
        assert await store.count_runs(status="completed") == 300
    assert await scalar(str(tmp_path / "runs.db"), "SELECT count(*) FROM stage_attempts") == 900


async def run_many(store: RunStore, n: int) -> list[Any]:
    results: list[Any] = [None] * n

    async def one(i: int) -> None:
        ctx = await run(EXP, registry=REG, store=store)
        results[i] = ctx.get_metric("n")

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
    return results


async def test_close_commits_what_is_still_queued(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    store = RunStore(db)
    await store.start_run(EXP, "queued")
    observer = store.observer
    ctx = await run(EXP, registry=REG, run_id="queued")
    assert ctx.trace is not None
    start = run_start(ctx)
    for rec in ctx.trace.spans:  # only queued: nobody waits for these
        await notify([observer.on_attempt_end], attempt=attempt_start(start, rec), record=rec)
    await store.close()
    async with RunStore(db) as again:
        info = await again.get_run("queued")
        assert info is not None and len(info.attempts) == 3


def test_each_event_loop_with_its_own_store_and_one_store_across_loops(tmp_path: Path) -> None:
    shared = RunStore(tmp_path / "shared.db")

    async def once(i: int) -> None:
        async with RunStore(tmp_path / f"own-{i}.db") as own:
            await run(EXP, registry=REG, store=own, run_id=f"own-{i}")
            assert (await own.get_run(f"own-{i}")) is not None
        await run(EXP, registry=REG, store=shared, run_id=f"shared-{i}")
        info = await shared.get_run(f"shared-{i}")
        assert info is not None and info.status == "completed"
        await shared.close()

    for i in range(3):
        asyncio.run(once(i))

    async def count() -> int:
        async with RunStore(tmp_path / "shared.db") as store:
            return await store.count_runs(status="completed")

    assert asyncio.run(count()) == 3


@pytest.mark.parametrize("pending", [1, 50])
async def test_records_of_concurrent_runs_keep_their_order(tmp_path: Path, pending: int) -> None:
    async with RunStore(tmp_path / "runs.db", max_pending=pending) as store:
        started = dt.datetime.now(dt.UTC)
        await run_many(store, 40)
        for info in await store.list_runs(limit=100):
            assert info.status == "completed" and info.started_at >= started
            assert info.finished_at is not None and info.finished_at >= info.started_at
            assert info.metrics == {"n": 3}
        assert os.getpid() in {r.owner_pid for r in await store.list_runs(limit=1)}
