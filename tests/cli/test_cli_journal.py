"""Read commands over a store whose SQLite file is gone but whose journal holds its records."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from crucible import Context, Experiment
from crucible.store import RunStore
from tests.ui.conftest import free_port

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
EXP = Experiment(id="journaled")
AFTER = [f"after-{i}" for i in range(3)]


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CRUCIBLE_"))}
    env |= {"PYTHONPATH": str(REPO), "NO_COLOR": "1", "COLUMNS": "400"}
    return subprocess.run(
        [sys.executable, "-m", "crucible", *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip


async def _store(store: RunStore, run_id: str) -> None:
    await store.start_run(EXP, run_id)
    ctx = Context(experiment_id=EXP.id, run_id=run_id, experiment=EXP)
    await store.finish_run(run_id, "completed", context=ctx)
    await store.flush()


async def _lose_the_file(db: Path) -> RunStore:
    """A store whose file is deleted after one run: the next runs' records go to the journal.
    The store is returned open, so its process still holds (and writes) its journal file."""
    store = RunStore(db)
    await _store(store, "before")
    for companion in db.parent.glob(db.name + "*"):
        companion.unlink()
    for run_id in AFTER:
        await _store(store, run_id)
    assert store.journal_pending() == 2 * len(AFTER)  # start and finish of each
    return store


def test_runs_list_replays_the_journal_of_a_deleted_file(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"

    async def journaled() -> None:
        await (await _lose_the_file(db)).close()

    asyncio.run(journaled())
    assert not db.exists()
    listed = cli(tmp_path, "runs", "list", "--store", str(db), "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(r["run_id"] for r in json.loads(listed.stdout)) == AFTER
    assert f"note: replayed 6 run records from the journal at {tmp_path / 'journal'}" in (
        listed.stderr
    )
    assert RunStore(db).journal_pending() == 0
    again = cli(tmp_path, "runs", "list", "--store", str(db))
    assert again.returncode == 0 and "journal" not in again.stderr and "after-0" in again.stdout


def test_records_a_live_process_still_holds_are_reported(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"

    async def go() -> None:
        store = await _lose_the_file(db)
        try:  # its process is alive and holds its journal file: nobody else replays it
            listed = await asyncio.to_thread(cli, tmp_path, "runs", "list", "--store", str(db))
            assert listed.returncode == 0 and "no runs recorded" in listed.stdout
            assert f"warning: 6 run records wait in the journal at {tmp_path / 'journal'}" in (
                listed.stderr
            )
            assert "the next time a crucible command opens this store" in listed.stderr
            shown = await asyncio.to_thread(cli, tmp_path, "runs", "show", "after-0",
                                            "--store", str(db))  # fmt: skip
            assert shown.returncode == 2 and "6 run records wait in the journal" in shown.stderr
        finally:
            await store.close()

    asyncio.run(go())


def test_crucible_ui_replays_the_journal_and_says_so(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"

    async def journaled() -> None:
        await (await _lose_the_file(db)).close()

    asyncio.run(journaled())
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "crucible", "ui", "--store", str(db), "--port", str(port)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    try:  # serving means the open (and its replay) is done; then stderr is read whole
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            while True:
                assert proc.poll() is None, proc.communicate()
                try:
                    page = http.get("/")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "crucible ui did not start"
                    time.sleep(0.1)
        assert page.status_code == 200 and "after-0" in page.text
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert f"replayed 6 run record(s) from the journal at {tmp_path / 'journal'}" in err, err
    assert RunStore(db).journal_pending() == 0
