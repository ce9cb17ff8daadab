"""``crucible ui`` serves the run browser over the store it is pointed at."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest

from crucible import Experiment, Registry, StageDef, run, stage
from crucible.context import Context
from crucible.store import RunStore
from tests.ui.conftest import free_port

pytestmark = pytest.mark.slow


@stage("ui_probe", description="Sets a metric", register=False)
async def ui_probe(ctx: Context) -> Context:
    return ctx.put_metric("accuracy", 0.875)


async def _store_one_run(db: Path) -> None:
    async with RunStore(db) as store:
        await run(Experiment(id="ui-cli", pipeline=[StageDef(name="ui_probe")]),
                  registry=Registry([ui_probe]), store=store, run_id="r-ui-cli")  # fmt: skip


def test_crucible_ui_lists_the_stored_runs(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    anyio.run(_store_one_run, db)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "crucible", "ui", "--store", str(db), "--port", str(port)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
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
            assert page.status_code == 200
            assert "r-ui-cli" in page.text and "ui-cli" in page.text
            detail = http.get("/run", params={"id": "r-ui-cli"})
            assert detail.status_code == 200, detail.text
            assert "ui_probe" in detail.text and "0.875" in detail.text
    finally:
        proc.terminate()
        proc.wait(timeout=15)
