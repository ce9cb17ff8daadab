"""A value the database cannot hold (NUL, a lone surrogate) costs no other record, and never the
journal: the record is stored with the character replaced, the rest of its batch as it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

import crucible
from crucible.errors import ExperimentFileError
from crucible.store import RunStore

BAD_METRIC = "nul \x00 and lone \ud800 surrogate"
BAD_ERROR = "failed on \udcff and \x00"


@crucible.stage("bad_values", description="Puts text no database can hold, or raises with it.")
async def bad_values(ctx: crucible.Context) -> crucible.Context:
    n = ctx.assigns["n"]
    await anyio.lowlevel.checkpoint()
    if n == 3:
        raise RuntimeError(BAD_ERROR)
    if n % 4 == 1:
        return ctx.put_metric("text", BAD_METRIC).put_metric("n", n)
    return ctx.put_metric("n", n)


@crucible.stage("plain_step", description="Does nothing.")
async def plain_step(ctx: crucible.Context) -> crucible.Context:
    return ctx


async def test_a_bad_value_costs_only_its_own_characters(store_url: str, tmp_path: Path) -> None:
    exp = {"id": "bad-values", "pipeline": [{"name": "plain_step"}, {"name": "bad_values"}]}
    items = [crucible.BatchItem(exp, assigns={"n": n}) for n in range(24)]
    registry = crucible.Registry([bad_values, plain_step])
    journal = tmp_path / "journal"
    async with RunStore(store_url, journal_dir=journal, journal_after_s=1) as store:
        with anyio.fail_after(60):  # a refused row read as an outage would journal after 1 s
            outcomes = await crucible.run_batch(items, registry=registry, store=store,
                                                max_concurrency=8)  # fmt: skip
        infos = [await store.get_run(o.run_id) for o in outcomes]
    assert [o.ok for o in outcomes] == [n != 3 for n in range(24)]
    assert not await anyio.Path(journal).exists() or not [
        p async for p in anyio.Path(journal).iterdir()
    ]
    for n, info in enumerate(infos):
        assert info is not None
        assert info.status == ("failed" if n == 3 else "completed"), n
        assert len(info.attempts) == 2, n
        if n % 4 == 1:  # SQLite keeps JSON's escapes as they are; PostgreSQL refuses them
            tidied = "nul \ufffd and lone \ufffd surrogate"
            expected = (tidied,) if store_url.startswith("postgresql") else (BAD_METRIC, tidied)
            assert info.metrics["text"] in expected
        if n != 3:
            assert info.metrics["n"] == n
    failed = infos[3]
    assert failed is not None and failed.failure_message is not None
    assert "\ufffd" in failed.failure_message and "failed on" in failed.failure_message


async def test_an_over_long_id_is_refused_before_anything_runs(store_url: str) -> None:
    registry = crucible.Registry([plain_step])
    async with RunStore(store_url) as store:
        with pytest.raises(ExperimentFileError, match="id: String should have at most 255"):
            await crucible.run({"id": "x" * 256, "pipeline": [{"name": "plain_step"}]},
                               registry=registry, store=store)  # fmt: skip
        for bad in ("r" * 256, ""):
            with pytest.raises(ValueError, match="run_id must be 1 to 255 characters"):
                await crucible.run({"id": "ok", "pipeline": [{"name": "plain_step"}]},
                                   registry=registry, store=store, run_id=bad)  # fmt: skip
        assert await store.count_runs() == 0
        ctx = await crucible.run({"id": "e" * 255, "pipeline": [{"name": "plain_step"}]},
                                 registry=registry, store=store, run_id="r" * 255)  # fmt: skip
        info = await store.get_run(ctx.run_id)
    assert info is not None and info.status == "completed" and info.experiment_id == "e" * 255


async def test_a_tidied_record_still_waits_out_an_outage(tmp_path: Path) -> None:
    """The database goes away just as a tidied record is tried: it is retried, not dropped."""
    registry = crucible.Registry([bad_values, plain_step])
    async with RunStore(tmp_path / "runs.db", journal_dir=tmp_path / "journal") as store:
        tx = store._writer._tx
        real = tx.apply
        calls = {"outage": 0}

        async def flaky(records: Any, on_applied: Any = None) -> Any:
            tidied = len(records) == 1 and "\ufffd" in str(records[0].row)
            if tidied and calls["outage"] == 0:
                calls["outage"] += 1
                raise ConnectionResetError("the database went away")
            return await real(records, on_applied)

        tx.apply = flaky  # type: ignore[method-assign]
        exp = {"id": "bad-values", "pipeline": [{"name": "bad_values"}]}
        with anyio.fail_after(30), pytest.raises(crucible.StageFailed):
            await crucible.run(exp, registry=registry, store=store, run_id="r-3", assigns={"n": 3})
        info = await store.get_run("r-3")
    assert calls["outage"] == 1
    assert info is not None and info.status == "failed" and len(info.attempts) == 1
    assert info.failure_message is not None and "\ufffd" in info.failure_message
