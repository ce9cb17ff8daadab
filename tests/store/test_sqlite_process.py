"""A SQLite store commits through its writer process: nothing lost if it dies, never orphaned."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from crucible import run_batch
from crucible.store import RunStore
from tests.store.test_writer import EXP, REG


def counts(path: Path) -> tuple[int, int, int]:
    """(runs, completed runs, attempts) read straight from the file."""
    with sqlite3.connect(path) as conn:
        runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        done = conn.execute("SELECT count(*) FROM runs WHERE status = 'completed'").fetchone()[0]
        attempts = conn.execute("SELECT count(*) FROM stage_attempts").fetchone()[0]
    return runs, done, attempts


def worker_pid(store: RunStore) -> int | None:
    proc = store._writer._tx.proc
    inner = None if proc is None else proc._proc
    return None if inner is None or inner.poll() is not None else inner.pid


def cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


async def test_batch_commits_in_the_worker_process_which_ends_with_the_store(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    store = RunStore(str(path))
    await store.open()
    outcomes = await run_batch([EXP] * 300, max_concurrency=64, registry=REG, store=store)
    pid = worker_pid(store)
    assert pid is not None and pid != os.getpid()
    assert b"_sqlite_worker.py" in cmdline(pid)
    await store.close()
    assert all(o.ok for o in outcomes)
    assert counts(path) == (300, 300, 900)
    assert not alive(pid)


async def test_a_worker_that_died_between_batches_is_replaced_not_given_up(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    async with RunStore(str(path)) as store:
        await run_batch([EXP] * 20, max_concurrency=8, registry=REG, store=store)
        first = worker_pid(store)
        assert first is not None
        os.kill(first, signal.SIGKILL)
        for _ in range(500):  # bounded: until it is gone (the next batch finds it exited)
            if not alive(first):
                break
            await asyncio.sleep(0.01)
        outcomes = await run_batch([EXP] * 20, max_concurrency=8, registry=REG, store=store)
        proc = store._writer._tx.proc
        assert proc is not None and proc._broken is None  # a new worker, not the fallback
        assert worker_pid(store) not in (None, first)
    assert all(o.ok for o in outcomes)
    assert counts(path) == (40, 40, 120)


async def test_worker_killed_mid_batch_loses_no_row(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    killed: list[int] = []
    outcomes: list[Any] = []
    async with RunStore(str(path)) as store:

        async def killer() -> None:
            for _ in range(6000):  # bounded: at most ~60 s
                await asyncio.sleep(0.01)
                pid = worker_pid(store)
                proc = store._writer._tx.proc
                answered = proc is not None and proc._answered  # a worker that has committed
                if pid is not None and pid not in killed and answered:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                if len(killed) == 3:
                    return

        kills = asyncio.ensure_future(killer())
        # Batches until workers were killed mid-batch, however fast this machine commits.
        for _ in range(10):
            outcomes += await run_batch([EXP] * 2000, max_concurrency=128, registry=REG,
                                        store=store)  # fmt: skip
            if len(killed) >= 2 or kills.done():
                break
        kills.cancel()
    assert len(killed) >= 2, "the writer never started a second worker"
    assert store._writer._tx.proc is not None  # still the worker path, not the fallback
    assert all(o.ok for o in outcomes)
    n = len(outcomes)
    assert counts(path) == (n, n, 3 * n)


async def test_worker_ignores_the_terminals_interrupt(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    async with RunStore(str(path)) as store:
        await run_batch([EXP] * 5, registry=REG, store=store)
        pid = worker_pid(store)
        assert pid is not None
        os.kill(pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
        os.kill(pid, signal.SIGTERM)
        await run_batch([EXP] * 5, registry=REG, store=store)
        assert worker_pid(store) == pid
    assert counts(path) == (10, 10, 30)


def test_worker_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import asyncio, sys, time
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        from tests.store.test_sqlite_process import worker_pid
        from tests.store.test_writer import EXP, REG
        from crucible import run_batch
        from crucible.store import RunStore
        async def main():
            store = RunStore({str(tmp_path / "runs.db")!r})
            await store.open()
            await run_batch([EXP] * 3, registry=REG, store=store)
            print(worker_pid(store), flush=True)
            time.sleep(60)
        asyncio.run(main())
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert alive(pid)
        parent.kill()
        parent.wait(timeout=30)
        deadline = time.monotonic() + 30
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid), "the worker outlived its killed parent"
    finally:
        parent.kill()
        parent.wait()
    assert counts(tmp_path / "runs.db") == (3, 3, 9)


async def test_no_interpreter_to_start_falls_back_to_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    path = tmp_path / "runs.db"
    async with RunStore(str(path)) as store:
        outcomes = await run_batch([EXP] * 50, registry=REG, store=store)
        assert store._writer._tx.proc is None  # gave up on the process, wrote here instead
    assert all(o.ok for o in outcomes)
    assert counts(path) == (50, 50, 150)


async def test_turned_off_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRUCIBLE_STORE_PROCESS", "0")
    path = tmp_path / "runs.db"
    async with RunStore(str(path)) as store:
        await run_batch([EXP] * 20, registry=REG, store=store)
        assert store._writer._tx.proc is None
    assert counts(path) == (20, 20, 60)


async def test_an_interpreter_that_cannot_run_the_worker_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "not-python"
    fake.write_text("#!/bin/sh\nexit 3\n")  # starts, then exits without a word
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    path = tmp_path / "runs.db"
    async with RunStore(str(path)) as store:
        outcomes = await run_batch([EXP] * 30, registry=REG, store=store)
        assert store._writer._tx.proc is None
    assert all(o.ok for o in outcomes)
    assert counts(path) == (30, 30, 90)


async def test_warm_up_starts_the_worker_before_the_first_write(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    store = RunStore(str(path))
    await store.open()
    assert worker_pid(store) is None  # opening alone (a reader) starts no process
    store.warm_up()
    pid = worker_pid(store)
    assert pid is not None and b"_sqlite_worker.py" in cmdline(pid)
    outcomes = await run_batch([EXP] * 20, registry=REG, store=store)
    assert worker_pid(store) == pid  # the batch committed through the process started early
    await store.close()
    assert all(o.ok for o in outcomes)
    assert counts(path) == (20, 20, 60)
    assert not alive(pid)


async def test_a_warm_up_that_cannot_start_the_worker_writes_in_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    path = tmp_path / "runs.db"
    store = RunStore(str(path))
    store.warm_up()  # no error here: the first batch reports it and falls back
    async with store:
        outcomes = await run_batch([EXP] * 10, registry=REG, store=store)
    assert all(o.ok for o in outcomes)
    assert counts(path) == (10, 10, 30)


def fork_idle(seconds: float) -> int:
    """A forked child that only sleeps: it holds whatever the parent had open."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        time.sleep(seconds)
        os._exit(0)
    return pid


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def reap(pid: int) -> int:
    return os.waitpid(pid, 0)[1]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
async def test_a_forked_child_does_not_hold_the_worker_open(tmp_path: Path) -> None:
    # A stage's multiprocessing pool or data loader forks; its children inherit the pipes.
    path = tmp_path / "runs.db"
    store = RunStore(str(path))
    await store.open()
    await run_batch([EXP] * 5, registry=REG, store=store)
    pid = worker_pid(store)
    assert pid is not None
    idle = fork_idle(5)
    try:
        started = time.monotonic()
        await store.close()
        closed_in = time.monotonic() - started
        assert await asyncio.to_thread(gone_within, pid, 3)  # the worker saw its pipe close
        assert closed_in < 3  # not held until the child exits (it sleeps 5 s)
    finally:
        os.kill(idle, signal.SIGKILL)
        reap(idle)
    assert counts(path) == (5, 5, 15)
