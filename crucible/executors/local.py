"""LocalExecutor: a batch's runs as tasks of this event loop, at most ``max_concurrency`` at once.

``run_job`` is also what each Ray actor runs, so a run behaves the same wherever it executes.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import anyio
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link

from crucible import slots
from crucible.context import Context
from crucible.engine import run
from crucible.executors.base import (
    PreparedBatch,
    RunJob,
    RunOutcome,
    outcome_status,
    trace_id_of,
)
from crucible.observers import Observers, RunEnd, RunObserver, RunStart, StageInfo, notify
from crucible.status import RunStatus
from crucible.telemetry import conventions as names

NEVER_STARTED = "batch cancelled before the run started"


async def run_job(
    job: RunJob,
    *,
    limiter: slots.Slots,
    batch_id: str,
    parent: otel_context.Context,
    links: Sequence[Link],
    run_kwargs: Mapping[str, Any],
    observers: Sequence[RunObserver],
    watchers: Observers,
    started: Callable[[int], None],
    finished: Callable[[RunOutcome], None],
) -> None:
    """Run one job once a slot is free; report its outcome, also when it is cancelled."""
    exp, rid, i = job.experiment, job.run_id, job.index
    t0: float | None = None
    reported = False
    slot = limiter.slot()
    try:
        await slot.take()
        held = slots.hold(rid, slot)  # its store may free it early (crucible.slots)
        try:
            t0 = time.perf_counter()
            started(i)
            try:
                ctx = await run(exp, run_id=rid, assigns=job.assigns, batch_id=batch_id,
                                parent=parent, links=links, observers=observers,
                                **run_kwargs)  # fmt: skip
                outcome = RunOutcome(RunStatus.COMPLETED, ctx, None, rid, trace_id_of(ctx), i,
                                     exp.id, time.perf_counter() - t0)  # fmt: skip
            except Exception as err:  # isolated: one failing run never stops the others
                last: Context | None = getattr(err, "context", None)
                outcome = RunOutcome(outcome_status(err), last, err, rid, trace_id_of(last), i,
                                     exp.id, time.perf_counter() - t0)  # fmt: skip
            reported = True
            finished(outcome)
        finally:
            slots.let_go(held)
            slot.free()
    except anyio.get_cancelled_exc_class():
        if not reported:
            took = 0.0 if t0 is None else time.perf_counter() - t0
            finished(RunOutcome(RunStatus.CANCELLED, None, None, rid, None, i, exp.id, took))
            if t0 is None:
                await never_started(watchers, job, batch_id)
        raise


async def never_started(watchers: Observers, job: RunJob, batch_id: str) -> None:
    """A run cancelled while waiting for a slot is still reported (and stored) as cancelled."""
    if not (watchers.on_run_start or watchers.on_run_end):
        return
    now = dt.datetime.now(dt.UTC)
    exp = job.experiment
    stages = tuple(StageInfo(i, sd.name, sd.enabled) for i, sd in enumerate(exp.pipeline))
    start = RunStart(exp, job.run_id, None, None, batch_id, stages, now)
    with anyio.CancelScope(shield=True):
        await notify(watchers.on_run_start, run=start)
        end = RunEnd(start, RunStatus.CANCELLED, None, None, now, message=NEVER_STARTED)
        await notify(watchers.on_run_end, run=end)


class LocalExecutor:
    """Runs every job in this process's event loop (the default executor)."""

    def __repr__(self) -> str:
        return "LocalExecutor()"

    async def execute(self, batch: PreparedBatch) -> None:
        limiter = slots.Slots(batch.max_concurrency)
        parent = batch.parent if batch.as_children else otel_context.Context()
        links = batch_links(batch.parent, batch.batch_id, batch.as_children)
        async with anyio.create_task_group() as tg:
            for job in batch.jobs:
                tg.start_soon(partial(
                    run_job, job, limiter=limiter, batch_id=batch.batch_id, parent=parent,
                    links=links, run_kwargs=batch.run_kwargs, observers=batch.observers,
                    watchers=batch.watchers, started=batch.started, finished=batch.finished,
                ))  # fmt: skip


def batch_links(parent: otel_context.Context, batch_id: str, as_children: bool) -> list[Link]:
    """The span link from each run to the batch span when runs start their own traces."""
    if as_children:
        return []
    return [Link(trace.get_current_span(parent).get_span_context(), {names.BATCH_ID: batch_id})]
