"""SIGTERM to ``crucible batch`` while its PostgreSQL store is unreachable: the command journals
at once and exits 143 well within a container's stop grace (10 s for ``docker stop``), instead of
retrying the database for ``journal_after_s`` (30 s) first; the journal then replays every run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from tests.store.conftest import PG_HOST, PG_PORT, pg_database, reset_schema
from tests.support.cli_env import plugin_env
from tests.support.outages import TcpProxy

__all__ = ["pg_database"]  # the store tests' session database fixture

pytestmark = [pytest.mark.slow, pytest.mark.postgres,
              pytest.mark.skipif(sys.platform == "win32", reason="signals")]  # fmt: skip

POINTS = 300  # 50 ms a run, four at once: far longer than the test waits
GRID = "id: away\npipeline:\n  - name: cli_grid\nmatrix:\n  cli_grid.x: [{}]\n".format(
    ", ".join(map(str, range(POINTS)))
)


@pytest.fixture
def database(pg_database: str) -> str:
    """The session's PostgreSQL database, its schema reset; by name."""
    return reset_schema(pg_database).rsplit("/", 1)[1]


def _count_runs(database: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user="postgres",
                                     database=database, timeout=5)  # fmt: skip
        try:
            return int(await conn.fetchval("SELECT count(*) FROM runs WHERE status = 'completed'"))
        except asyncpg.UndefinedTableError:
            return 0
        finally:
            await conn.close()

    return asyncio.run(count())


def test_sigterm_with_the_database_away_journals_and_exits_at_once(
    tmp_path: Path, database: str
) -> None:
    env = plugin_env(
        tmp_path, "stop-away-test", {"cli_grid": "tests.support.cli_stages:grid_stage"}
    )
    (tmp_path / "grid.yaml").write_text(GRID)
    proxy = TcpProxy(PG_HOST, PG_PORT)
    proxy.start()
    url = f"postgresql://postgres@127.0.0.1:{proxy.port}/{database}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "crucible", "batch", "grid.yaml", "--concurrency", "4",
         "--exporter", "none", "--store", url],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while _count_runs(database) < 8:  # the batch is writing
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the batch stored nothing within 60 s"
            time.sleep(0.1)
        proxy.stop()  # the database is gone for the batch
        time.sleep(0.5)  # its next commits fail
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=20)  # was 31 s: retrying first, then journaling
        except subprocess.TimeoutExpired:
            pytest.fail("crucible batch took over 20 s to stop with its database away")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == 143, err
    assert "journal" in err, err
    proxy.start()  # the database is back: the next command replays the journal
    try:
        listed = subprocess.run(
            [sys.executable, "-m", "crucible", "runs", "list", "--json", "--limit", "1000",
             "--store", url],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
    finally:
        proxy.close()
    assert listed.returncode == 0, listed.stderr
    runs = json.loads(listed.stdout)
    statuses = {r["status"] for r in runs}
    assert statuses <= {"completed", "cancelled"}, statuses  # none left running or abandoned
    assert len(runs) == POINTS  # every run, the queued ones stored cancelled
