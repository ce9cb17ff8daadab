"""The observer seam: what run() and run_batch() tell observers, in order, and when one breaks."""

from __future__ import annotations

import io
import json
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import structlog

import crucible.logging
from crucible import (
    BatchItem,
    Context,
    Experiment,
    Registry,
    StageDef,
    StageFailed,
    run,
    run_batch,
    stage,
)
from crucible.observers import (
    AttemptStart,
    BatchEnd,
    BatchStart,
    Checkpoint,
    RunEnd,
    RunObserver,
    RunStart,
)
from crucible.status import RunStatus
from crucible.trace import SpanRecord


@stage("ok", description="Sets a metric", register=False)
async def ok(ctx: Context) -> Context:
    return ctx.put_metric("ok", True)


@stage("boom", description="Raises", register=False)
async def boom(ctx: Context) -> Context:
    raise RuntimeError("kaboom")


@stage("nap", description="Sleeps long", register=False)
async def nap(ctx: Context) -> Context:
    await anyio.sleep(30)
    return ctx


REG = Registry([ok, boom, nap])


class Recorder(RunObserver):
    """Writes down every hook call; the attempt hooks are async to prove both kinds work."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def on_batch_start(self, *, batch: BatchStart) -> None:
        self.calls.append(("batch_start", batch))

    def on_run_start(self, *, run: RunStart) -> None:
        self.calls.append(("run_start", run))

    async def on_attempt_start(self, *, attempt: AttemptStart) -> None:
        await anyio.lowlevel.checkpoint()
        self.calls.append(("attempt_start", attempt))

    async def on_attempt_end(self, *, attempt: AttemptStart, record: SpanRecord) -> None:
        await anyio.lowlevel.checkpoint()
        self.calls.append(("attempt_end", (attempt, record)))

    def on_run_end(self, *, run: RunEnd) -> None:
        self.calls.append(("run_end", run))

    def on_batch_end(self, *, batch: BatchEnd) -> None:
        self.calls.append(("batch_end", batch))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.calls]


async def test_run_tells_observers_each_step_in_order() -> None:
    rec = Recorder()
    exp = Experiment(id="e", pipeline=[StageDef(name="ok"), StageDef(name="ok", enabled=False)])
    ctx = await run(exp, registry=REG, run_id="r1", observers=[rec])
    assert rec.kinds() == [
        "run_start", "attempt_start", "attempt_end", "attempt_start", "attempt_end", "run_end",
    ]  # fmt: skip
    start: RunStart = rec.calls[0][1]
    assert start.run_id == "r1" and start.experiment is exp
    assert ctx.trace is not None
    assert start.trace_id == ctx.trace.trace_id and start.span_id == ctx.trace.span_id
    assert [(s.index, s.name, s.enabled) for s in start.stages] == [(0, "ok", True),
                                                                    (1, "ok", False)]  # fmt: skip
    first, record = rec.calls[2][1]
    assert first.stage == "ok" and first.attempt == 1 and first.stage_index == 0
    assert record == ctx.trace.spans[0] and record.result == "success"
    assert first.span_id == record.span_id
    skipped, skip_record = rec.calls[4][1]
    assert skipped.attempt == 0 and skip_record.result == "skip"
    end: RunEnd = rec.calls[-1][1]
    assert end.status is RunStatus.COMPLETED and end.failure is None
    assert end.context is not None and end.context.metrics == {"ok": True}


async def test_failure_reaches_on_run_end() -> None:
    rec = Recorder()
    with pytest.raises(StageFailed) as info:
        await run(
            Experiment(id="e", pipeline=[StageDef(name="ok"), StageDef(name="boom")]),
            registry=REG,
            observers=[rec],
        )
    end: RunEnd = rec.calls[-1][1]
    assert end.status is RunStatus.FAILED
    assert end.failure is info.value and end.failure.stage == "boom"
    assert end.context is not None and end.context.metrics == {"ok": True}
    _, record = rec.calls[-2][1]
    assert record.result == "failure" and record.error_type == "RuntimeError"


async def test_cancellation_still_reaches_on_run_end() -> None:
    rec = Recorder()
    with anyio.move_on_after(0.2):
        await run(Experiment(id="e", pipeline=[StageDef(name="nap")]), registry=REG,
                  observers=[rec])  # fmt: skip
    end: RunEnd = rec.calls[-1][1]
    assert end.status is RunStatus.CANCELLED
    assert end.failure is not None and end.failure.result == "cancellation"


class Broken(RunObserver):
    def on_attempt_end(self, *, attempt: AttemptStart, record: SpanRecord) -> None:
        raise ValueError("observer bug")

    def on_run_end(self, *, run: RunEnd) -> None:
        raise ValueError("observer bug at the end")


async def test_a_broken_observer_is_logged_and_changes_nothing() -> None:
    buf = io.StringIO()
    crucible.logging.configure(json=True, level="error", stream=buf)
    rec = Recorder()
    try:
        ctx = await run(Experiment(id="e", pipeline=[StageDef(name="ok")]), registry=REG,
                        observers=[Broken(), rec])  # fmt: skip
    finally:
        structlog.reset_defaults()
    assert ctx.metrics == {"ok": True}
    assert rec.kinds()[-1] == "run_end"  # the observer after the broken one still heard it
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    failures = [line for line in lines if line["event"] == "run observer failed"]
    assert [f["hook"] for f in failures] == ["Broken.on_attempt_end", "Broken.on_run_end"]
    assert "observer bug" in failures[0]["error"]


class Gatekeeper(RunObserver):
    def on_run_start(self, *, run: RunStart) -> None:
        raise PermissionError(f"run {run.run_id} refused")


async def test_on_run_start_can_refuse_a_run() -> None:
    rec = Recorder()
    with pytest.raises(PermissionError, match="refused"):
        await run(Experiment(id="e", pipeline=[StageDef(name="ok")]), registry=REG,
                  run_id="no", observers=[rec, Gatekeeper()])  # fmt: skip
    assert rec.kinds() == ["run_start", "run_end"]  # no stage ran
    end: RunEnd = rec.calls[-1][1]
    assert end.status is RunStatus.FAILED and end.context is None
    assert end.message is not None and "PermissionError" in end.message


async def test_batch_observers_see_the_batch_and_every_run() -> None:
    rec = Recorder()
    items = [BatchItem(Experiment(id="e", pipeline=[StageDef(name=n)]), run_id=f"r{i}")
             for i, n in enumerate(["ok", "boom", "ok"])]  # fmt: skip
    outcomes = await run_batch(items, max_concurrency=2, registry=REG, observers=[rec],
                               name="grid", batch_id="b1")  # fmt: skip
    kinds = rec.kinds()
    assert kinds[0] == "batch_start" and kinds[-1] == "batch_end"
    assert kinds.count("run_start") == kinds.count("run_end") == 3
    batch: BatchStart = rec.calls[0][1]
    assert (batch.batch_id, batch.name, batch.size, batch.runs_are_children) == ("b1", "grid", 3,
                                                                                 True)  # fmt: skip
    ends = {c[1].run.run_id: c[1] for c in rec.calls if c[0] == "run_end"}
    assert {k: v.status for k, v in ends.items()} == {
        "r0": RunStatus.COMPLETED, "r1": RunStatus.FAILED, "r2": RunStatus.COMPLETED,
    }  # fmt: skip
    assert all(c[1].batch_id == "b1" for c in rec.calls if c[0] == "run_start")
    done: BatchEnd = rec.calls[-1][1]
    assert [o.run_id for o in done.outcomes] == [o.run_id for o in outcomes] == ["r0", "r1", "r2"]
    assert not done.cancelled


async def test_runs_cancelled_before_their_slot_are_reported() -> None:
    rec = Recorder()
    items = [BatchItem(Experiment(id="e", pipeline=[StageDef(name="nap")]), run_id=f"r{i}")
             for i in range(3)]  # fmt: skip
    with anyio.move_on_after(0.3):
        await run_batch(items, max_concurrency=1, registry=REG, observers=[rec])
    ends = [c[1] for c in rec.calls if c[0] == "run_end"]
    assert sorted(e.run.run_id for e in ends) == ["r0", "r1", "r2"]
    assert all(e.status is RunStatus.CANCELLED for e in ends)
    never = [e for e in ends if e.run.trace_id is None]
    assert len(never) == 2 and all(e.message and "before the run started" in e.message
                                   for e in never)  # fmt: skip
    assert rec.kinds()[-1] == "batch_end" and rec.calls[-1][1].cancelled


class Checkpoints(RunObserver):
    def __init__(self) -> None:
        self.seen: list[tuple[str, int, dict[str, Any], list[str]]] = []

    def on_checkpoint(self, *, checkpoint: Checkpoint) -> None:
        ctx = checkpoint.context
        self.seen.append(
            (checkpoint.stage, checkpoint.stage_index, dict(ctx.metrics), ctx.completed_stages())
        )


async def test_checkpoints_are_reported_only_when_the_experiment_asks() -> None:
    stages = [StageDef(name="ok"), StageDef(name="boom", enabled=False), StageDef(name="ok")]
    asked, quiet = Checkpoints(), Checkpoints()
    await run(Experiment(id="c", pipeline=stages, checkpoint=True), registry=REG,
              observers=[asked])  # fmt: skip
    await run(Experiment(id="c", pipeline=stages), registry=REG, observers=[quiet])
    assert asked.seen == [
        ("ok", 0, {"ok": True}, ["ok"]),
        ("ok", 2, {"ok": True}, ["ok"]),
    ]  # the disabled stage left no checkpoint
    assert quiet.seen == []
