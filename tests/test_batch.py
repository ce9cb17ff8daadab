"""run_batch: order, isolation, concurrency bound, batch spans and links, cancellation, sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from crucible import (
    BatchItem,
    Context,
    CrucibleError,
    Experiment,
    InvalidPipeline,
    Registry,
    StageDef,
    StageFailed,
    expand_matrix,
    run_batch,
    stage,
)
from crucible.batch import BatchProgress, summarize
from crucible.store import RunStore
from crucible.testing import SpanCapture

active = {"now": 0, "max": 0}


@stage("work", description="Sleeps a little, tracks concurrency", register=False)
async def work(ctx: Context, opts: dict[str, Any]) -> Context:
    active["now"] += 1
    active["max"] = max(active["max"], active["now"])
    try:
        await anyio.sleep(float(opts.get("sleep", 0.01)))
    finally:
        active["now"] -= 1
    if opts.get("fail"):
        raise RuntimeError(f"item {opts.get('i')} failed")
    return ctx.put_metric("i", opts.get("i"))


REG = Registry([work])


def item(i: int, **opts: Any) -> Experiment:
    return Experiment(id=f"e{i}", pipeline=[StageDef(name="work", options={"i": i, **opts})])


@pytest.fixture(autouse=True)
def _reset() -> None:
    active.update(now=0, max=0)


async def test_outcomes_in_input_order_and_failures_isolated(spans: SpanCapture) -> None:
    items = [item(i, fail=(i % 3 == 1), sleep=0.02 * (5 - i % 5)) for i in range(10)]
    outcomes = await run_batch(items, registry=REG, max_concurrency=4,
                               tracer_provider=spans.provider)  # fmt: skip
    assert [o.index for o in outcomes] == list(range(10))
    for i, o in enumerate(outcomes):
        assert o.experiment_id == f"e{i}" and o.trace_id is not None and o.run_id
        if i % 3 == 1:
            assert o.status == "failed" and isinstance(o.error, StageFailed)
            assert o.context is not None and o.context.get_metric("i") is None
        else:
            assert o.status == "completed" and o.error is None
            assert o.context is not None and o.context.get_metric("i") == i
    assert summarize(outcomes) == {"completed": 7, "failed": 3, "timed_out": 0, "cancelled": 0}
    assert active["max"] <= 4


async def test_concurrency_bound_is_respected_and_used() -> None:
    await run_batch([item(i, sleep=0.05) for i in range(12)], registry=REG, max_concurrency=3)
    assert active["max"] == 3


async def test_invalid_item_fails_alone() -> None:
    bad = Experiment(id="bad", pipeline=[StageDef(name="nope")])
    outcomes = await run_batch([item(0), bad, item(2)], registry=REG)
    assert [o.status for o in outcomes] == ["completed", "failed", "completed"]
    assert isinstance(outcomes[1].error, InvalidPipeline) and outcomes[1].context is None


async def test_runs_are_children_of_the_batch_span(spans: SpanCapture) -> None:
    outcomes = await run_batch([item(i) for i in range(3)], registry=REG, name="grid",
                               tracer_provider=spans.provider)  # fmt: skip
    batch = spans.one("BATCH grid")
    runs = [s for s in spans.spans() if s.name.startswith("RUN ")]
    assert len(runs) == 3
    for r in runs:
        assert r.parent is not None and r.parent.span_id == batch.context.span_id
        assert (r.attributes or {})["crucible.batch.id"] == (batch.attributes or {})[
            "crucible.batch.id"
        ]
    assert {o.trace_id for o in outcomes} == {f"{batch.context.trace_id:032x}"}


async def test_large_batches_link_instead_of_nesting(spans: SpanCapture) -> None:
    outcomes = await run_batch([item(i, sleep=0) for i in range(5)], registry=REG,
                               trace_children=2, tracer_provider=spans.provider)  # fmt: skip
    batch = spans.one("BATCH batch")
    runs = [s for s in spans.spans() if s.name.startswith("RUN ")]
    assert len({o.trace_id for o in outcomes}) == 5  # each run its own trace
    for r in runs:
        assert r.parent is None
        assert r.links and r.links[0].context.span_id == batch.context.span_id
        assert (r.attributes or {})["crucible.batch.id"] == (batch.attributes or {})[
            "crucible.batch.id"
        ]


async def test_progress_callback_sees_every_run() -> None:
    seen: list[tuple[int, int, int]] = []

    def progress(p: BatchProgress) -> None:
        seen.append((p.running, p.completed, p.failed))

    await run_batch([item(0), item(1, fail=True)], registry=REG, progress=progress)
    assert seen[-1] == (0, 1, 1)
    assert any(running > 0 for running, _, _ in seen)


async def test_cancelling_the_batch_records_every_run_cancelled(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    with anyio.move_on_after(0.3):
        await run_batch(
            [BatchItem(item(i, sleep=30), run_id=f"r{i}") for i in range(6)],
            registry=REG, max_concurrency=2, store=store, batch_id="b-1",
        )  # fmt: skip
        pytest.fail("the batch should have been cancelled")
    runs = await store.list_runs(batch_id="b-1", limit=100)
    assert sorted(r.run_id for r in runs) == [f"r{i}" for i in range(6)]
    assert {r.status for r in runs} == {"cancelled"}
    started = [r for r in runs if r.failure_message != "batch cancelled before the run started"]
    assert len(started) == 2
    await store.close()


async def test_store_records_batch_id(tmp_path: Path) -> None:
    async with RunStore(tmp_path / "runs.db") as store:
        outcomes = await run_batch([item(i) for i in range(3)], registry=REG, store=store,
                                   batch_id="batch-7")  # fmt: skip
        runs = await store.list_runs(batch_id="batch-7")
        assert sorted(r.run_id for r in runs) == sorted(o.run_id for o in outcomes)
        assert {r.status for r in runs} == {"completed"}


async def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        await run_batch([item(0)], registry=REG, max_concurrency=0)
    with pytest.raises(TypeError, match="BatchItem"):
        await run_batch([item(0)], registry=REG, run_id="x")


def test_expand_matrix_is_the_cartesian_product() -> None:
    exp = Experiment(
        id="sweep",
        pipeline=[StageDef(name="work", options={"sleep": 0}), StageDef(name="other")],
        matrix={"work.i": [1, 2, 3], "work.fail": [False, True]},
    )
    items = expand_matrix(exp)
    assert len(items) == 6
    points = [it.assigns["matrix"] for it in items if it.assigns]
    assert {(p["work.i"], p["work.fail"]) for p in points} == {
        (i, f) for i in (1, 2, 3) for f in (False, True)
    }
    first = items[0].experiment
    assert isinstance(first, Experiment) and first.matrix is None
    assert first.pipeline[0].options == {"sleep": 0, "i": 1, "fail": False}
    assert first.pipeline[1].options is None
    assert expand_matrix(Experiment(id="plain"))[0].experiment == Experiment(id="plain")
    with pytest.raises(CrucibleError, match="not in the pipeline: ghost"):
        expand_matrix(Experiment(id="x", matrix={"ghost.a": [1]}))


async def test_sweep_runs_through_run_batch() -> None:
    exp = Experiment(id="sweep", pipeline=[StageDef(name="work")], matrix={"work.i": [1, 2, 3]})
    outcomes = await run_batch(expand_matrix(exp), registry=REG)
    assert [o.context.get_metric("i") for o in outcomes if o.context] == [1, 2, 3]
    assert [o.context.assigns["matrix"] for o in outcomes if o.context] == [
        {"work.i": 1}, {"work.i": 2}, {"work.i": 3},
    ]  # fmt: skip
