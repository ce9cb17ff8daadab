"""The journal: records the database cannot take wait there, and the next open replays them.

SQLite is made unreachable by another process holding ``BEGIN EXCLUSIVE`` longer than the
store's ``journal_after_s``; its file is deleted or replaced under a running store.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import anyio
import pytest
import structlog
from structlog.testing import capture_logs

from crucible import Context, Experiment, Registry, StageDef, run, run_batch, stage
from crucible.store import RunStore
from tests.support.outages import sqlite_locked

RUNS, STAGES = 20, 3


@stage("step", description="Counts", register=False)
async def step(ctx: Context) -> Context:
    await anyio.lowlevel.checkpoint()
    return ctx.put_metric("n", ctx.get_metric("n", 0) + 1)


REG = Registry([step])


@pytest.fixture(autouse=True)
def _warnings_too() -> None:
    """The store reports the journal with warnings: let them through (reset after the test)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(20))


EXP = Experiment(id="journaled", pipeline=[StageDef(name="step") for _ in range(STAGES)])


def counts(path: Path) -> tuple[int, int, int]:
    """(runs, completed runs, attempts) in the SQLite file, read directly."""
    with sqlite3.connect(path) as conn:
        runs = conn.execute("SELECT count(*), sum(status = 'completed') FROM runs").fetchone()
        attempts = conn.execute("SELECT count(*) FROM stage_attempts").fetchone()[0]
    return runs[0], runs[1] or 0, attempts


def journal_lines(folder: Path) -> list[dict[str, object]]:
    lines = []
    for path in sorted(folder.glob("*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines()[1:]]
    return lines


async def journal_a_batch(db: Path, folder: Path) -> list[str]:
    """Run a batch while the database is locked; close the store while still locked."""
    store = RunStore(db, journal_after_s=0.3, journal_dir=folder)
    await store.open()
    with sqlite_locked(str(db)), capture_logs() as logs:
        outcomes = await run_batch([EXP] * RUNS, registry=REG, store=store, max_concurrency=8)
        assert all(o.ok for o in outcomes)
        assert store.journal_pending() == RUNS * (STAGES + 2)  # start, attempts, finish
        await store.close()
    waiting = [e for e in logs if e["event"] == "run store journal has records waiting"]
    assert [(e["log_level"], e["records"], e["journal"]) for e in waiting] == [
        ("warning", RUNS * (STAGES + 2), str(folder))
    ]
    assert any(e["event"] == "run store unreachable; journaling records" for e in logs)
    return [o.run_id for o in outcomes]


async def test_unreachable_records_are_journaled_and_the_next_open_replays_them(
    tmp_path: Path,
) -> None:
    db, folder = tmp_path / "runs.db", tmp_path / "journal"
    run_ids = await journal_a_batch(db, folder)
    ops = [(line["op"], line["run_id"]) for line in journal_lines(folder)]
    assert sorted({rid for _, rid in ops}) == sorted(run_ids)
    assert [op for op, _ in ops].count("record_attempt") == RUNS * STAGES
    assert counts(db) == (0, 0, 0)  # nothing reached the database

    async with RunStore(db, journal_dir=folder) as fresh:  # as a new process would
        assert fresh.journal_pending() == 0
        assert await fresh.count_runs(status="completed") == RUNS
        info = await fresh.get_run(run_ids[3])
        assert info is not None and info.metrics == {"n": STAGES}
        assert [a.stage for a in info.attempts] == ["step"] * STAGES
    assert counts(db) == (RUNS, RUNS, RUNS * STAGES)
    assert list(folder.glob("*.jsonl")) == []


async def test_a_replay_interrupted_and_run_again_duplicates_nothing(tmp_path: Path) -> None:
    db, folder = tmp_path / "runs.db", tmp_path / "journal"
    await journal_a_batch(db, folder)
    (journal,) = folder.glob("*.jsonl")
    whole = journal.read_text()
    lines = whole.splitlines(keepends=True)
    # A replay that stopped halfway: its first half committed, the file still there.
    journal.write_text("".join(lines[: len(lines) // 2]) + lines[len(lines) // 2][:17])
    async with RunStore(db, journal_dir=folder):
        pass
    half = counts(db)
    assert 0 < half[0] < RUNS and half[2] < RUNS * STAGES
    journal.write_text(whole)  # ... then the whole file replayed again
    async with RunStore(db, journal_dir=folder):
        pass
    assert counts(db) == (RUNS, RUNS, RUNS * STAGES)
    journal.write_text(whole)  # and once more: still nothing twice
    async with RunStore(db, journal_dir=folder):
        pass
    assert counts(db) == (RUNS, RUNS, RUNS * STAGES)


async def test_a_live_process_journal_is_never_replayed_by_another(tmp_path: Path) -> None:
    db, folder = tmp_path / "runs.db", tmp_path / "journal"
    writer = RunStore(db, journal_after_s=0.1, journal_dir=folder)
    await writer.open()
    try:
        with sqlite_locked(str(db)):
            await run(EXP, registry=REG, store=writer, run_id="held")
        assert writer.journal_pending() == STAGES + 2
        # The writer still holds its journal: another store replays nothing of it.
        async with RunStore(db, journal_dir=folder) as other:
            assert await other.get_run("held") is None
            assert other.journal_pending() == STAGES + 2
    finally:
        await writer.close()
    async with RunStore(db, journal_dir=folder) as other:
        info = await other.get_run("held")
        assert info is not None and info.status == "completed"


def pull(db: Path, how: str) -> sqlite3.Connection:
    """Delete (or replace) ``db`` and its companions; return a connection to the old file."""
    old = sqlite3.connect(db)  # keeps the old file (and its WAL) readable once unlinked
    old.execute("SELECT count(*) FROM runs").fetchone()
    for companion in db.parent.glob(db.name + "*"):
        companion.unlink()
    if how == "replaced":
        other = db.with_name("other.db")
        sqlite3.connect(other).close()
        os.replace(other, db)
    return old


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_a_sqlite_file_deleted_or_replaced_while_open_is_never_written(
    tmp_path: Path, how: str
) -> None:
    db, folder = tmp_path / "runs.db", tmp_path / "journal"
    old: sqlite3.Connection | None = None

    @stage("pull_the_file", description="Deletes or replaces the store's file", register=False)
    async def pull_the_file(ctx: Context) -> Context:
        nonlocal old
        await store.flush()  # the first attempt of this run is in the old file
        old = pull(db, how)
        return ctx

    registry = Registry([step, pull_the_file])
    straddling = Experiment(id="straddle", pipeline=[StageDef(name="step"),
                            StageDef(name="pull_the_file"), StageDef(name="step")])  # fmt: skip
    store = RunStore(db, journal_dir=folder)
    await store.open()
    with capture_logs() as logs:
        for i in range(3):
            await run(EXP, registry=REG, store=store, run_id=f"before-{i}")
        await run(straddling, registry=registry, store=store, run_id="straddler")
        for i in range(5):
            await run(EXP, registry=REG, store=store, run_id=f"after-{i}")
        # The old file got nothing after it was gone: the straddler's start is its last record.
        assert old is not None
        found = old.execute("SELECT id, status FROM runs ORDER BY id").fetchall()
        attempts = old.execute("SELECT count(*) FROM stage_attempts").fetchone()
        old.close()
        await store.close()
    lost = [e for e in logs if e["event"] == "run store file lost"]
    assert len(lost) == 1 and lost[0]["path"] == str(db) and lost[0]["log_level"] == "error"
    assert f"the database file {db} was {how}" in lost[0]["error"]
    assert found == [
        ("before-0", "completed"), ("before-1", "completed"), ("before-2", "completed"),
        ("straddler", "running"),
    ]  # fmt: skip
    assert attempts == (3 * STAGES + 1,)
    assert store.journal_pending() > 0

    async with RunStore(db, journal_dir=folder) as fresh:  # the file at the path now
        assert fresh.journal_pending() == 0
        assert await fresh.count_runs() == 6
        straddler = await fresh.get_run("straddler")
        assert straddler is not None and straddler.status == "completed"
        # Its first attempt went down with the old file; the journal kept the rest.
        assert [a.stage for a in straddler.attempts] == ["pull_the_file", "step"]
        for i in range(5):
            info = await fresh.get_run(f"after-{i}")
            assert info is not None and info.status == "completed"
            assert len(info.attempts) == STAGES


async def test_a_store_whose_journal_cannot_be_replayed_still_opens_for_reading(
    tmp_path: Path,
) -> None:
    db, folder = tmp_path / "runs.db", tmp_path / "journal"
    run_ids = await journal_a_batch(db, folder)
    with sqlite_locked(str(db)), capture_logs() as logs:  # still locked: the replay must wait
        store = RunStore(db, journal_after_s=0.3, journal_dir=folder)
        await store.open()  # used to raise the replay's "database is locked"
        try:
            assert await store.count_runs() == 0  # reads work; nothing is lost
            assert store.journal_pending() == RUNS * (STAGES + 2)
        finally:
            await store.close()
    assert any(e["event"].startswith("run store opened without replaying") for e in logs)
    async with RunStore(db, journal_dir=folder) as fresh:  # unlocked: the next open replays
        assert await fresh.count_runs(status="completed") == RUNS
        assert (await fresh.get_run(run_ids[0])) is not None
