"""A run whose stages are done gives its batch slot back while its final record waits."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from crucible import Context, Experiment, Registry, StageDef, run, run_batch, stage
from crucible.slots import ALIVE, Slots
from crucible.store import RunStore

state: dict[str, Any] = {}


@stage("busy", description="Tracks how many runs execute a stage at once", register=False)
async def busy(ctx: Context) -> Context:
    state["now"] += 1
    state["max"] = max(state["max"], state["now"])
    try:
        await anyio.sleep(0.01)
    finally:
        state["now"] -= 1
    state["done"] += 1
    if state["done"] >= state.get("enough", 0) and "reached" in state:
        state["reached"].set()
    return ctx


@stage("outer", description="Runs an inner run, then sees whether run B started", register=False)
async def outer(ctx: Context) -> Context:
    await run(Experiment(id="inner", pipeline=[StageDef(name="busy")]), registry=REG,
              store=state["store"])  # fmt: skip
    await anyio.sleep(0.2)  # B would start meanwhile if the inner run freed this run's slot
    state["b_started_early"] = state["b_started"]
    return ctx


@stage("mark", description="Notes that run B started", register=False)
async def mark(ctx: Context) -> Context:
    state["b_started"] = True
    return ctx


REG = Registry([busy, outer, mark])


EXP = Experiment(id="slots", pipeline=[StageDef(name="busy"), StageDef(name="busy")])


@asynccontextmanager
async def locked_store(db: Path, enough: int) -> AsyncIterator[tuple[RunStore, sqlite3.Connection]]:
    """An open store whose file another connection holds the write lock of (COMMIT frees it),
    with ``state`` reset to wake ``state["reached"]`` once ``enough`` stages have run."""
    state.update(now=0, max=0, done=0, enough=enough, reached=anyio.Event())
    async with RunStore(db) as store:
        await store.open()
        lock = sqlite3.connect(db, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        try:
            yield store, lock
        finally:
            lock.close()


async def test_runs_waiting_for_a_locked_database_free_their_slots(tmp_path: Path) -> None:
    results: list[Any] = []
    async with locked_store(tmp_path / "runs.db", enough=12) as (store, lock):
        async with anyio.create_task_group() as tg:

            async def batch() -> None:
                results.extend(await run_batch([EXP] * 6, max_concurrency=2, registry=REG,
                                               store=store))  # fmt: skip

            tg.start_soon(batch)
            with anyio.fail_after(30):  # without settling runs only 2 runs get this far
                await state["reached"].wait()
            assert not results  # every run still waits for its record
            lock.execute("COMMIT")
        assert state["max"] <= 2  # stages never ran more than max_concurrency at once
        assert [o.status for o in results] == ["completed"] * 6
        assert await store.count_runs(status="completed") == 6
        for o in results:
            info = await store.get_run(o.run_id)
            assert info is not None and len(info.attempts) == 2


async def test_cancelling_a_batch_with_settling_runs_keeps_their_records(tmp_path: Path) -> None:
    async with locked_store(tmp_path / "runs.db", enough=8) as (store, lock):
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: run_batch([EXP] * 40, max_concurrency=2, registry=REG,
                                                store=store))  # fmt: skip
                with anyio.fail_after(30):
                    await state["reached"].wait()  # 4 runs are done and settling
                scope.cancel()  # their records wait for the lock, shielded
                lock.execute("COMMIT")
        stored = await store.list_runs(limit=100)
        done = [await store.get_run(r.run_id) for r in stored if r.status == "completed"]
    statuses = sorted(r.status for r in stored)
    assert len(stored) == 40  # every run is stored, also those that never started
    assert statuses.count("completed") >= 4
    assert set(statuses) <= {"completed", "cancelled"}
    assert all(r is not None and len(r.attempts) == 2 for r in done)


async def test_settling_runs_are_capped_by_the_runs_alive() -> None:
    pool = Slots(2, alive=3)  # 2 running, 1 settling at most
    first, second, third = pool.slot(), pool.slot(), pool.slot()
    await first.take()
    await second.take()
    assert pool.limiter.available_tokens == 0
    first.settle()  # its place goes to the next run
    assert (pool.limiter.available_tokens, pool.settling) == (1, 1)
    await third.take()
    second.settle()  # the cap is reached: it keeps its place
    assert (pool.limiter.available_tokens, pool.settling) == (0, 1)
    first.free()
    first.free()  # once only
    assert (pool.limiter.available_tokens, pool.settling) == (0, 0)
    second.free()
    third.settle()
    assert (pool.limiter.available_tokens, pool.settling) == (2, 1)
    third.free()
    assert (pool.limiter.available_tokens, pool.settling) == (2, 0)


def test_a_batch_that_fills_the_alive_cap_never_settles() -> None:
    assert Slots(ALIVE).settle_cap == 0
    assert Slots(ALIVE * 2).settle_cap == 0
    assert Slots(8).settle_cap == ALIVE - 8


async def test_a_run_inside_a_stage_never_frees_the_outer_runs_slot(tmp_path: Path) -> None:
    state.clear()
    state.update(now=0, max=0, done=0, b_started=False, b_started_early=None)
    a = Experiment(id="a", pipeline=[StageDef(name="outer")])
    b = Experiment(id="b", pipeline=[StageDef(name="mark")])
    async with RunStore(tmp_path / "runs.db") as store:
        state["store"] = store
        outcomes = await run_batch([a, b], max_concurrency=1, registry=REG, store=store)
    assert [o.status for o in outcomes] == ["completed", "completed"]
    assert state["b_started_early"] is False
