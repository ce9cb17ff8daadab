"""A run whose id this process minted starts at once; one whose id the caller chose waits until
the store has confirmed it is new. Both end stored, whole."""

from __future__ import annotations

import asyncio
from contextlib import AbstractContextManager
from pathlib import Path

import anyio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from crucible import Context, Experiment, Registry, StageDef, run, stage
from crucible.runids import minted, new_run_id
from crucible.store import RunStore, normalize_url
from tests.support.outages import sqlite_locked

STARTED: dict[str, asyncio.Event] = {}


@stage("mark", description="Says it ran", register=False)
async def mark(ctx: Context) -> Context:
    STARTED[ctx.run_id].set()
    return ctx


REG = Registry([mark])
EXP = Experiment(id="ids", pipeline=[StageDef(name="mark")])


async def _locked(path: Path) -> AbstractContextManager[object]:
    """``sqlite_locked`` entered on a worker thread (it waits for the locker's answer)."""
    lock = sqlite_locked(str(path))
    await anyio.to_thread.run_sync(lock.__enter__)
    return lock


async def _release(lock: AbstractContextManager[object]) -> None:
    await anyio.to_thread.run_sync(lock.__exit__, None, None, None)


async def _statuses(path: Path) -> dict[str, str]:
    engine = create_async_engine(normalize_url(str(path)))
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.text("SELECT id, status FROM runs"))
            return {r[0]: r[1] for r in rows}
    finally:
        await engine.dispose()


def test_minted_ids_are_remembered_until_their_run_ends() -> None:
    run_id = new_run_id()
    assert minted(run_id)
    assert not minted("chosen-by-a-caller")


async def test_a_minted_id_runs_while_the_database_is_locked(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    store = RunStore(db, journal_after_s=60)
    await store.open()
    minted_id, chosen_id = new_run_id(), "chosen-id-0001"
    STARTED.update({minted_id: asyncio.Event(), chosen_id: asyncio.Event()})
    locker = await _locked(db)
    released = False
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: run(EXP, registry=REG, store=store, run_id=minted_id))
            tg.start_soon(lambda: run(EXP, registry=REG, store=store, run_id=chosen_id))
            with anyio.fail_after(20):  # its start is only queued: the stage runs at once
                await STARTED[minted_id].wait()
            await anyio.sleep(0.3)
            # The chosen id waits for the database to confirm it before any stage runs.
            assert not STARTED[chosen_id].is_set()
            await _release(locker)
            released = True
            with anyio.fail_after(20):
                await STARTED[chosen_id].wait()
    finally:
        if not released:
            await _release(locker)
        await store.close()
    assert await _statuses(db) == {minted_id: "completed", chosen_id: "completed"}
    assert not minted(minted_id)  # forgotten once its run ended
