"""run_batch(): many runs with bounded concurrency, isolated failures, one batch span; sweeps."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from crucible.engine import coerce_experiment, new_run_id
from crucible.executors.base import (
    BatchItem,
    BatchProgress,
    Executor,
    PreparedBatch,
    RunJob,
    RunOutcome,
    WorkerLost,
)
from crucible.executors.local import NEVER_STARTED, LocalExecutor
from crucible.experiment import Experiment, matrix_points
from crucible.observers import BatchEnd, BatchStart, Observers, RunObserver, notify, notify_shielded
from crucible.status import RunStatus
from crucible.telemetry import conventions as names
from crucible.telemetry import spans as tel
from crucible.telemetry.carrier import carrier_for, parent_context

__all__ = [
    "DEFAULT_TRACE_CHILDREN",
    "NEVER_STARTED",
    "BatchItem",
    "BatchProgress",
    "RunOutcome",
    "expand_matrix",
    "run_batch",
    "summarize",
]

_log = structlog.get_logger("crucible.batch")
DEFAULT_TRACE_CHILDREN = 100
NO_OUTCOME = "the executor returned no outcome for this run"


async def run_batch(
    items: Iterable[Experiment | Mapping[str, Any] | BatchItem],
    *,
    max_concurrency: int = 8,
    batch_id: str | None = None,
    name: str = "batch",
    trace_children: int = DEFAULT_TRACE_CHILDREN,
    progress: Callable[[BatchProgress], None] | None = None,
    observers: Iterable[RunObserver] = (),
    executor: Executor | None = None,
    **run_kwargs: Any,
) -> list[RunOutcome]:
    """Run every item (at most ``max_concurrency`` at once) and return outcomes in input order.

    One failing run never stops the others. Runs are children of a ``BATCH {name}`` span when
    the batch has at most ``trace_children`` items; beyond that each run starts its own trace
    with a span link to the batch span. Every keyword argument of ``run`` is accepted, and
    ``observers`` follow every run and the batch itself. Cancelling the batch cancels every
    run; each (also one still waiting for a slot) is recorded ``cancelled``. ``executor``
    says where the runs execute (default: :class:`LocalExecutor`, this event loop).
    """
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
    for key in ("run_id", "assigns", "batch_id", "links"):
        if key in run_kwargs:
            raise TypeError(f"run_batch sets {key!r} per run; pass BatchItem(...) items instead")
    batch = [i if isinstance(i, BatchItem) else BatchItem(i) for i in items]
    jobs = tuple(RunJob(i, coerce_experiment(b.experiment), b.run_id or new_run_id(), b.assigns)
                 for i, b in enumerate(batch))  # fmt: skip
    batch_id = batch_id or str(uuid.uuid4())
    user_observers = tuple(observers)
    store = run_kwargs.get("store")
    watchers = Observers.combine(() if store is None else (store.observer,), user_observers)
    telemetry = tel.telemetry_for(
        run_kwargs.get("tracer_provider"), run_kwargs.get("meter_provider")
    )
    parent = parent_context(run_kwargs.pop("parent", None))
    batch_span = telemetry.tracer.start_span(
        names.batch_span_name(name),
        context=parent,
        kind=SpanKind.INTERNAL,
        attributes={names.BATCH_ID: batch_id, names.BATCH_SIZE: len(batch),
                    names.BATCH_MAX_CONCURRENCY: max_concurrency},
    )  # fmt: skip
    batch_ctx = trace.set_span_in_context(batch_span, parent)
    as_children = len(batch) <= trace_children
    trace_hex, span_hex = tel.hex_ids(batch_span)
    started = BatchStart(batch_id, name, len(batch), max_concurrency, trace_hex, span_hex,
                         as_children)  # fmt: skip
    await notify(watchers.on_batch_start, batch=started)
    outcomes: list[RunOutcome | None] = [None] * len(batch)
    state = BatchProgress(total=len(batch))

    def report() -> None:
        if progress is not None:
            try:
                progress(state)
            except Exception as err:  # a broken progress display must not break the batch
                _log.warning("batch progress callback failed", error=repr(err))

    running: set[int] = set()

    def on_started(index: int) -> None:
        running.add(index)
        # An executor may hand out runs ahead of time (Ray queues a chunk on each actor): the
        # count shown never exceeds the runs that can be running at once.
        state.running = min(len(running), max_concurrency)
        report()

    def on_finished(outcome: RunOutcome) -> None:
        if outcomes[outcome.index] is not None:
            return  # one outcome per job, whatever an executor reports twice
        outcomes[outcome.index] = outcome
        running.discard(outcome.index)
        state.running = min(len(running), max_concurrency)
        if outcome.status is not RunStatus.CANCELLED:  # cancelled runs are not "done"
            if outcome.ok:
                state.completed += 1
            else:
                state.failed += 1
        report()

    prepared = PreparedBatch(
        batch_id=batch_id, name=name, jobs=jobs, max_concurrency=max_concurrency,
        as_children=as_children, parent=batch_ctx, carrier=carrier_for(batch_span, batch_ctx),
        run_kwargs=run_kwargs, observers=user_observers, watchers=watchers,
        started=on_started, finished=on_finished,
    )  # fmt: skip
    try:
        await (executor or LocalExecutor()).execute(prepared)
    except BaseException:
        batch_span.set_status(Status(StatusCode.ERROR, "batch cancelled"))
        batch_span.set_attribute(names.BATCH_FAILED, state.failed)
        batch_span.end()
        done = [o for o in outcomes if o is not None]
        await notify_shielded(watchers.on_batch_end, batch=BatchEnd(started, done, True))
        raise
    final = [o if o is not None else _missing(job) for o, job in zip(outcomes, jobs, strict=True)]
    failed = sum(1 for o in final if not o.ok)
    batch_span.set_attribute(names.BATCH_COMPLETED, len(final) - failed)
    batch_span.set_attribute(names.BATCH_FAILED, failed)
    if failed:
        batch_span.set_status(Status(StatusCode.ERROR, f"{failed} of {len(batch)} runs failed"))
    batch_span.end()
    await notify(watchers.on_batch_end, batch=BatchEnd(started, final))
    if store is not None and (waiting := store.journal_pending()):
        _log.warning("run records are waiting in the store's journal", records=waiting,
                     journal=str(store.journal_dir), database=store.url)  # fmt: skip
    return final


def _missing(job: RunJob) -> RunOutcome:
    """An outcome for a job its executor never reported: never silently missing."""
    _log.error("run has no outcome", run_id=job.run_id, index=job.index)
    return RunOutcome(RunStatus.FAILED, None, WorkerLost(NO_OUTCOME), job.run_id, None,
                      job.index, job.experiment.id)  # fmt: skip


def expand_matrix(experiment: Experiment) -> list[BatchItem]:
    """The sweep of ``experiment.matrix`` as batch items, the point in ``assigns["matrix"]``.

    An experiment without a matrix gives one item.
    """
    points = matrix_points(experiment)
    if not experiment.matrix:
        return [BatchItem(experiment)]
    return [BatchItem(variant, assigns={"matrix": point}) for variant, point in points]


def summarize(outcomes: Sequence[RunOutcome]) -> dict[str, int]:
    """Count outcomes by final status."""
    counts = {s.value: 0 for s in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.TIMED_OUT,
                                   RunStatus.CANCELLED)}  # fmt: skip
    for o in outcomes:
        counts[o.status] += 1
    return counts
