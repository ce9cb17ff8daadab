"""The run store under load and outages: every run and attempt row ends up stored, once.

5,000 concurrent runs on SQLite and PostgreSQL; the SQLite file locked by another process for
15 s; PostgreSQL backends terminated; a batch cancelled with thousands still waiting; a process
killed with SIGKILL; and the database stopped mid-batch and started again (through a TCP proxy
of this test's own, or, on CI where nothing else shares the server, with ``pg_ctlcluster``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import create_async_engine
from structlog.testing import capture_logs

from crucible import Context, Experiment, Registry, StageDef, run_batch, stage
from crucible.batch import BatchProgress
from crucible.store import RunStore, normalize_url
from tests.support.missing import missing_service
from tests.support.outages import TcpProxy, hold_sqlite_lock

pytestmark = [pytest.mark.slow]

STAGES = 3
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


@stage("quick", description="Awaits once", register=False)
async def quick(ctx: Context) -> Context:
    await anyio.lowlevel.checkpoint()
    return ctx.put_metric("n", ctx.get_metric("n", 0) + 1)


@stage("pause", description="Sleeps a little", register=False)
async def pause(ctx: Context) -> Context:
    await anyio.sleep(0.02)
    return ctx


REG = Registry([quick, pause])
EXP = Experiment(id="load", pipeline=[StageDef(name="quick") for _ in range(STAGES)])


async def rows(url: str) -> tuple[int, int, int]:
    """(runs, completed runs, attempts), counted in the database directly."""
    engine = create_async_engine(normalize_url(url))
    try:
        async with engine.connect() as conn:
            runs = (await conn.execute(sa.text("SELECT count(*) FROM runs"))).scalar_one()
            done = (
                await conn.execute(sa.text("SELECT count(*) FROM runs WHERE status='completed'"))
            ).scalar_one()
            attempts = (
                await conn.execute(sa.text("SELECT count(*) FROM stage_attempts"))
            ).scalar_one()
    finally:
        await engine.dispose()
    return runs, done, attempts


def admin_sql(sql: str) -> None:
    """Run one statement on the ``postgres`` database, on a private loop in a worker thread."""

    async def go() -> None:
        conn = await asyncpg.connect(database="postgres", timeout=5, **PG)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, go()).result()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    name = f"crucible_load_{uuid.uuid4().hex[:10]}"
    try:
        admin_sql(f'CREATE DATABASE "{name}"')
    except (OSError, TimeoutError, asyncpg.PostgresError) as err:
        missing_service(f"PostgreSQL not reachable on 127.0.0.1:5432: {err}")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def after(done: int) -> tuple[anyio.Event, Callable[[BatchProgress], None]]:
    """An event set once ``done`` runs of a batch have finished, and the progress callback."""
    event = anyio.Event()

    def progress(state: BatchProgress) -> None:
        if state.done >= done:
            event.set()

    return event, progress


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "runs.db")
    return str(request.getfixturevalue("pg_url"))


async def test_5000_concurrent_runs_store_every_row(url: str, tmp_path: Path) -> None:
    async with RunStore(url, journal_dir=tmp_path / "journal") as store:
        outcomes = await run_batch([EXP] * 5000, registry=REG, store=store, max_concurrency=5000)
        assert [o.status for o in outcomes].count("completed") == 5000
        assert store.journal_pending() == 0
    assert await rows(url) == (5000, 5000, 5000 * STAGES)


async def test_sqlite_locked_for_15_s_mid_batch_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    async with RunStore(db, journal_dir=tmp_path / "journal") as store:
        running, progress = after(500)

        async def lock_when_running() -> None:
            await running.wait()
            await hold_sqlite_lock(str(db), 15)

        async with anyio.create_task_group() as tg:
            tg.start_soon(lock_when_running)
            outcomes = await run_batch([EXP] * 5000, registry=REG, store=store,
                                       max_concurrency=1000, progress=progress)  # fmt: skip
        assert [o.status for o in outcomes].count("completed") == 5000
        assert store.journal_pending() == 0  # waited for the lock: nothing had to be journaled
    assert await rows(str(db)) == (5000, 5000, 5000 * STAGES)


@pytest.mark.postgres
async def test_postgres_backends_terminated_mid_batch_lose_nothing(
    pg_url: str, tmp_path: Path
) -> None:
    database = pg_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(database="postgres", timeout=5, **PG)
    terminated = 0
    try:
        async with RunStore(pg_url, journal_dir=tmp_path / "journal") as store:
            running, progress = after(300)

            async def terminate_backends() -> None:
                nonlocal terminated
                await running.wait()
                for _ in range(5):
                    killed = await admin.fetch(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = $1 AND pid <> pg_backend_pid()",
                        database,
                    )
                    terminated += len(killed)
                    await anyio.sleep(0.3)

            exp = Experiment(id="load", pipeline=[*EXP.pipeline, StageDef(name="pause")])
            async with anyio.create_task_group() as tg:
                tg.start_soon(terminate_backends)
                outcomes = await run_batch([exp] * 5000, registry=REG, store=store,
                                           max_concurrency=500, progress=progress)  # fmt: skip
            assert [o.status for o in outcomes].count("completed") == 5000
    finally:
        await admin.close()
    assert terminated > 0
    assert await rows(pg_url) == (5000, 5000, 5000 * (STAGES + 1))


async def test_a_batch_cancelled_with_thousands_waiting_stores_every_run_cancelled(
    url: str, tmp_path: Path
) -> None:
    parked = anyio.Event()
    count = 0

    @stage("park", description="Waits until cancelled", register=False)
    async def park(ctx: Context) -> Context:
        nonlocal count
        count += 1
        if count == 100:
            parked.set()
        await anyio.sleep(3600)
        return ctx

    exp = Experiment(id="cancelled", pipeline=[StageDef(name="quick"), StageDef(name="park")])
    async with RunStore(url, journal_dir=tmp_path / "journal") as store:
        async with anyio.create_task_group() as tg:

            async def batch() -> None:
                await run_batch([exp] * 5000, registry=Registry([quick, park]), store=store,
                                max_concurrency=100)  # fmt: skip

            tg.start_soon(batch)
            await parked.wait()
            tg.cancel_scope.cancel()
        assert await store.count_runs(status="cancelled") == 5000
        assert await store.count_runs() == 5000
    runs, _, attempts = await rows(url)
    assert (runs, attempts) == (5000, 100 * 2)  # quick + the cancelled park of the 100 started


def _pg_ctl(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[0]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
                   check=True, timeout=120)  # fmt: skip


def _ready() -> bool:
    return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"]).returncode == 0


def _wait_ready() -> None:
    for _ in range(60):
        if _ready():
            return
        subprocess.run(["sleep", "1"], check=True)
    raise AssertionError("PostgreSQL did not come back")


@pytest.mark.postgres
@pytest.mark.parametrize(
    "outage",
    [
        "proxy",
        pytest.param(
            "pg_ctlcluster",
            marks=pytest.mark.skipif(
                os.environ.get("CRUCIBLE_TEST_PG_RESTART") != "1",
                reason="restarts the shared PostgreSQL: only with CRUCIBLE_TEST_PG_RESTART=1",
            ),
        ),
    ],
)
async def test_the_database_stopped_mid_batch_and_started_again_loses_nothing(
    pg_url: str, tmp_path: Path, outage: str
) -> None:
    proxy: TcpProxy | None = None
    store_url = pg_url
    if outage == "proxy":
        proxy = TcpProxy("127.0.0.1", 5432)
        proxy.start()
        store_url = pg_url.replace(":5432/", f":{proxy.port}/")
    stop: Any = proxy.stop if proxy is not None else lambda: _pg_ctl("stop")
    start: Any = proxy.start if proxy is not None else lambda: (_pg_ctl("start"), _wait_ready())
    journal = tmp_path / "journal"
    exp = Experiment(id="load", pipeline=[*EXP.pipeline, StageDef(name="pause")])
    try:
        store = RunStore(store_url, journal_after_s=1.0, journal_dir=journal, connect_timeout=2)
        await store.open()

        running, progress = after(300)

        async def outage_mid_batch() -> None:
            await running.wait()
            await anyio.to_thread.run_sync(stop)
            try:
                await anyio.sleep(4)  # longer than journal_after_s: records go to the journal
            finally:
                await anyio.to_thread.run_sync(start)

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(20))
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                tg.start_soon(outage_mid_batch)
                outcomes = await run_batch([exp] * 2000, registry=REG, store=store,
                                           max_concurrency=200, progress=progress)  # fmt: skip
        events = [e["event"] for e in logs]
        assert "run store unreachable; journaling records" in events  # the outage was real
        assert [o.status for o in outcomes].count("completed") == 2000
        await store.close()
        async with RunStore(store_url, journal_dir=journal) as again:  # replays what is left
            assert again.journal_pending() == 0
    finally:
        if proxy is not None:
            proxy.close()
        elif outage == "pg_ctlcluster" and not _ready():  # never leave the shared server down
            _pg_ctl("start")
            _wait_ready()
    assert await rows(pg_url) == (2000, 2000, 2000 * (STAGES + 1))


_KILLED_CHILD = """
import sys, anyio
from crucible import Context, Experiment, Registry, StageDef, run_batch, stage
from crucible.store import RunStore

parked = 0

@stage("quick", description="Awaits once", register=False)
async def quick(ctx: Context) -> Context:
    await anyio.lowlevel.checkpoint()
    return ctx

@stage("park", description="Waits forever", register=False)
async def park(ctx: Context) -> Context:
    global parked
    parked += 1
    if parked == 50:
        await anyio.sleep(0.3)  # older than the writer's last moment: committed by now
        print("parked", flush=True)
    await anyio.sleep(3600)
    return ctx

async def main() -> None:
    async with RunStore(sys.argv[1]) as store:
        exp = Experiment(id="killed", pipeline=[StageDef(name="quick"), StageDef(name="park")])
        await run_batch([exp] * 50, registry=Registry([quick, park]), store=store,
                        max_concurrency=50)

anyio.run(main)
"""


async def test_sigkill_loses_only_the_last_moment_and_its_runs_show_abandoned(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "runs.db")
    cmd = [sys.executable, "-c", _KILLED_CHILD, db]
    async with await anyio.open_process(cmd, stdout=subprocess.PIPE) as child:
        assert child.stdout is not None
        assert b"parked" in await child.stdout.receive()
        child.send_signal(signal.SIGKILL)
        await child.wait()
    async with RunStore(db, journal_dir=tmp_path / "journal") as store:  # marks them abandoned
        assert await store.count_runs(status="abandoned") == 50
        assert await store.count_runs() == 50
    assert await rows(db) == (50, 0, 50)  # every run's first attempt survived the kill
