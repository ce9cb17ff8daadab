"""StoreObserver driven hook by hook, on a real SQLite file and the real PostgreSQL.

The Contexts, SpanRecords and StageFailed errors come from real engine runs (without a store);
the observer then records them exactly as the engine would report them.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from crucible import Context, DuplicateRun, Experiment, Registry, StageDef, StageFailed, run, stage
from crucible.observers import (
    AttemptStart,
    Observers,
    RunEnd,
    RunObserver,
    RunStart,
    StageInfo,
    notify,
)
from crucible.status import RunStatus
from crucible.store import RunStore, StoreObserver
from crucible.trace import SpanRecord

REPORT_URL = "https://reports.example/r/42.html"


@stage("score", description="Records a metric", register=False)
async def score(ctx: Context) -> Context:
    return ctx.put_metric("score", 0.75).add_output("scored")


@stage("produce", description="Records one artifact of each shape", register=False)
async def produce(ctx: Context) -> Context:
    return (
        ctx.put_artifact("table", {"path": "/data/out/table.csv"})
        .put_artifact("model", {"location": "s3://bucket/model.bin", "format": "bin"})
        .put_artifact("report", REPORT_URL)
        .put_artifact("weights", Path("/data/out/weights.pt"))
        .put_artifact("plot", {"location": "/data/plot.png", "type": "image", "dpi": 300})
    )


@stage("explode", description="Raises", register=False)
async def explode(ctx: Context) -> Context:
    raise ValueError("bad input row 7")


REG = Registry([score, produce, explode])


def _exp(exp_id: str, *stages: str) -> Experiment:
    return Experiment(id=exp_id, pipeline=[StageDef(name=s) for s in stages])


def run_start(ctx: Context, *, batch_id: str | None = None) -> RunStart:
    """The RunStart the engine reports for the run that produced ``ctx``."""
    assert ctx.trace is not None and ctx.experiment is not None
    stages = tuple(
        StageInfo(i, sd.name, sd.enabled) for i, sd in enumerate(ctx.experiment.pipeline)
    )
    return RunStart(
        experiment=ctx.experiment,
        run_id=ctx.run_id,
        trace_id=ctx.trace.trace_id,
        span_id=ctx.trace.span_id,
        batch_id=batch_id,
        stages=stages,
        started_at=dt.datetime.now(dt.UTC),
    )


def attempt_start(start: RunStart, record: SpanRecord) -> AttemptStart:
    return AttemptStart(
        run=start,
        stage=record.stage,
        stage_index=record.stage_index or 0,
        attempt=record.attempt,
        span_id=record.span_id,
        start_ns=record.start_ns,
        trace_id=start.trace_id,
    )


def run_end(
    start: RunStart,
    status: RunStatus,
    context: Context | None,
    failure: StageFailed | None = None,
    message: str | None = None,
) -> RunEnd:
    return RunEnd(start, status, context, failure, dt.datetime.now(dt.UTC), message)


async def record_whole_run(obs: StoreObserver, start: RunStart, ctx: Context, end: RunEnd) -> None:
    """Every hook the store observes, in the engine's order."""
    assert ctx.trace is not None
    await obs.on_run_start(run=start)
    for rec in ctx.trace.spans:
        await notify([obs.on_attempt_end], attempt=attempt_start(start, rec), record=rec)
    await notify([obs.on_run_end], run=end)


# --- the hooks -------------------------------------------------------------------------------


async def test_completed_run_is_recorded_through_the_hooks(store: RunStore) -> None:
    ctx = await run(_exp("obs", "score", "score"), registry=REG, run_id="obs-1")
    assert ctx.trace is not None and len(ctx.trace.spans) == 2
    start = run_start(ctx, batch_id="b-7")
    await record_whole_run(store.observer, start, ctx, run_end(start, RunStatus.COMPLETED, ctx))

    info = await store.get_run("obs-1")
    assert info is not None
    assert (info.experiment_id, info.status, info.batch_id) == ("obs", "completed", "b-7")
    assert info.trace_id == ctx.trace.trace_id
    assert info.finished_at is not None
    assert info.metrics == {"score": 0.75} and info.outputs == ["scored", "scored"]
    assert (info.failure_stage, info.failure_message, info.error_type) == (None, None, None)
    assert [(a.stage, a.attempt, a.result, a.span_id, a.start_ns) for a in info.attempts] == [
        (r.stage, r.attempt, r.result, r.span_id, r.start_ns) for r in ctx.trace.spans
    ]
    assert all(a.parent_span_id == ctx.trace.span_id for a in info.attempts)
    assert info.artifacts == ()


async def test_duplicate_run_id_raises_and_keeps_the_first_record(store: RunStore) -> None:
    ctx = await run(_exp("dup", "score"), registry=REG, run_id="dup-1")
    start = run_start(ctx, batch_id="first")
    await record_whole_run(store.observer, start, ctx, run_end(start, RunStatus.COMPLETED, ctx))

    again = run_start(ctx, batch_id="second")
    with pytest.raises(DuplicateRun, match=r"start_run for run 'dup-1'.*already exists") as err:
        await store.observer.on_run_start(run=again)
    assert (err.value.operation, err.value.run_id) == ("start_run", "dup-1")
    info = await store.get_run("dup-1")
    assert info is not None and info.status == "completed" and info.batch_id == "first"
    assert len(info.attempts) == 1


async def test_artifacts_of_every_shape_are_stored_where_they_are(store: RunStore) -> None:
    ctx = await run(_exp("arts", "produce"), registry=REG, run_id="arts-1")
    start = run_start(ctx)
    await record_whole_run(store.observer, start, ctx, run_end(start, RunStatus.COMPLETED, ctx))

    info = await store.get_run("arts-1")
    assert info is not None and info.status == "completed"
    got = {a.name: (a.location, a.format, a.type, a.metadata) for a in info.artifacts}
    assert got == {
        "table": ("/data/out/table.csv", None, "file", {}),  # "path" is read as the location
        "model": ("s3://bucket/model.bin", "bin", "file", {}),
        "report": (REPORT_URL, None, "file", {}),
        "weights": ("/data/out/weights.pt", None, "file", {}),
        "plot": ("/data/plot.png", None, "image", {"dpi": 300}),
    }
    assert all(a.location != "None" for a in info.artifacts)


async def test_failed_run_stores_the_stage_cause_and_last_good_context(store: RunStore) -> None:
    with pytest.raises(StageFailed) as caught:
        await run(_exp("fail", "score", "explode"), registry=REG, run_id="fail-1")
    failure = caught.value
    assert failure.context is not None
    start = run_start(failure.context)
    end = run_end(start, RunStatus.FAILED, failure.context, failure)
    await record_whole_run(store.observer, start, failure.context, end)

    info = await store.get_run("fail-1")
    assert info is not None and info.status == "failed"
    assert (info.failure_stage, info.failure_message, info.error_type) == (
        "explode",
        "bad input row 7",
        "ValueError",
    )
    assert info.metrics == {"score": 0.75}
    assert [(a.stage, a.result) for a in info.attempts] == [
        ("score", "success"),
        ("explode", "failure"),
    ]
    assert info.attempts[1].error_message == "bad input row 7"


async def test_run_cancelled_before_it_started_keeps_the_message(store: RunStore) -> None:
    exp = _exp("never", "score")
    start = RunStart(exp, "never-1", None, None, "b-1", (StageInfo(0, "score", True),),
                     dt.datetime.now(dt.UTC))  # fmt: skip
    await store.observer.on_run_start(run=start)
    message = "batch cancelled before the run started"
    await notify([store.observer.on_run_end],
                 run=run_end(start, RunStatus.CANCELLED, None, None, message))  # fmt: skip

    info = await store.get_run("never-1")
    assert info is not None and info.status == "cancelled" and info.batch_id == "b-1"
    assert (info.failure_stage, info.failure_message, info.error_type) == (None, message, None)
    assert info.trace_id is None and info.attempts == () and info.artifacts == ()


async def test_no_context_at_the_end_keeps_the_stored_results(store: RunStore) -> None:
    ctx = await run(_exp("keep", "score"), registry=REG, run_id="keep-1")
    start = run_start(ctx)
    await store.observer.on_run_start(run=start)
    await store.finish_run("keep-1", RunStatus.COMPLETED, context=ctx)  # results stored earlier
    await notify([store.observer.on_run_end],
                 run=run_end(start, RunStatus.CANCELLED, None, None, "stop"))  # fmt: skip

    info = await store.get_run("keep-1")
    assert info is not None and info.status == "cancelled" and info.failure_message == "stop"
    assert info.metrics == {"score": 0.75} and info.outputs == ["scored"]


async def test_a_refused_run_never_touches_the_stored_one(store: RunStore) -> None:
    ctx = await run(_exp("dup", "score"), registry=REG, run_id="dup-1")
    start = run_start(ctx)
    await record_whole_run(store.observer, start, ctx, run_end(start, RunStatus.COMPLETED, ctx))
    with pytest.raises(DuplicateRun):
        await store.observer.on_run_start(run=start)
    # Not its run: nothing to write, nothing to wait for.
    assert (
        store.observer.on_run_end(run=run_end(start, RunStatus.FAILED, None, None, "refused"))
        is None
    )
    info = await store.get_run("dup-1")
    assert info is not None and info.status == "completed" and info.failure_message is None


async def test_the_end_is_recorded_even_inside_a_cancelled_scope(store: RunStore) -> None:
    """The hook queues the final record before anything is awaited: a cancelled wait (the
    engine shields it; a caller may not) loses nothing."""
    ctx = await run(_exp("shield", "score"), registry=REG, run_id="shield-1")
    start = run_start(ctx)
    await store.observer.on_run_start(run=start)
    with anyio.CancelScope() as scope:
        scope.cancel()
        pending = store.observer.on_run_end(run=run_end(start, RunStatus.CANCELLED, ctx))
        assert pending is not None
        await pending
    assert scope.cancelled_caught
    info = await store.get_run("shield-1")
    assert info is not None and info.status == "cancelled" and info.metrics == {"score": 0.75}


# --- store failures --------------------------------------------------------------------------


async def test_store_failure_in_on_attempt_end_is_logged_not_raised(store: RunStore) -> None:
    ctx = await run(_exp("ghost", "score"), registry=REG, run_id="ghost-1")
    assert ctx.trace is not None
    start = run_start(ctx)  # never passed to on_run_start: the run is not in the store
    rec = ctx.trace.spans[0]
    with capture_logs() as logs:
        await notify([store.observer.on_attempt_end], attempt=attempt_start(start, rec), record=rec)
        await store.flush()  # the attempt is only queued; its commit fails in the writer
    failed = [e for e in logs if e["event"] == "run store write failed"]
    assert len(failed) == 1, logs
    assert (failed[0]["log_level"], failed[0]["operation"], failed[0]["run_id"]) == (
        "error",
        "record_attempt",
        "ghost-1",
    )
    assert re.match(r"StoreError\(.*record_attempt for run .*ghost-1", failed[0]["error"])
    assert await store.get_run("ghost-1") is None


async def test_failures_at_start_and_end_are_logged_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.mkdir()
    store = RunStore(blocker / "runs.db", journal_after_s=0.5)  # its folder is gone at open
    blocker.rmdir()
    blocker.write_text("a file where the store's folder should be")
    ctx = await run(_exp("broken", "score"), registry=REG, run_id="broken-1")
    start = run_start(ctx)
    try:
        with capture_logs() as logs:
            await record_whole_run(
                store.observer, start, ctx, run_end(start, RunStatus.COMPLETED, ctx)
            )
    finally:
        await store.close()
    failed = [e for e in logs if e["event"] == "run store write failed"]
    assert [(e["operation"], e["run_id"]) for e in failed] == [
        ("start_run", "broken-1"),
        ("record_attempt", "broken-1"),
        ("finish_run", "broken-1"),
    ]
    # Neither the database nor the journal beside it can be written: each record says so.
    assert all("the journal cannot be written" in e["error"] for e in failed), failed


# --- wiring ----------------------------------------------------------------------------------


async def test_each_store_has_one_observer_with_the_store_hooks(tmp_path: Path) -> None:
    first, second = RunStore(tmp_path / "a.db"), RunStore(tmp_path / "b.db")
    obs = first.observer
    assert obs is first.observer and isinstance(obs, RunObserver)
    assert obs.store is first and second.observer is not obs
    hooks = Observers([obs])
    names: dict[str, Any] = {h: [m.__name__ for m in getattr(hooks, h)] for h in Observers.HOOKS}
    assert names == {
        "on_batch_start": [],
        "on_run_start": ["on_run_start"],
        "on_attempt_start": [],
        "on_attempt_end": ["on_attempt_end"],
        "on_checkpoint": [],
        "on_run_end": ["on_run_end"],
        "on_batch_end": [],
    }
