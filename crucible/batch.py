"""run_batch(): many runs with bounded concurrency, isolated failures, one batch span; sweeps."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from crucible.context import Context
from crucible.engine import coerce_experiment, new_run_id, run, status_of
from crucible.errors import CrucibleError, StageFailed
from crucible.experiment import Experiment
from crucible.telemetry import spans as tel

Status_ = Literal["completed", "failed", "timed_out", "cancelled"]
_log = structlog.get_logger("crucible.batch")
DEFAULT_TRACE_CHILDREN = 100


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One run of a batch: an experiment and, optionally, its run id and assigns."""

    experiment: Experiment | Mapping[str, Any]
    run_id: str | None = None
    assigns: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What happened to one item: status, final (or last good) Context, error, ids."""

    status: Status_
    context: Context | None
    error: BaseException | None
    run_id: str
    trace_id: str | None
    index: int = 0
    experiment_id: str = ""
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "completed"


@dataclass
class BatchProgress:
    """Counts reported to a ``progress`` callback as runs start and finish."""

    total: int
    running: int = 0
    completed: int = 0
    failed: int = 0
    started_at: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> int:
        return self.completed + self.failed


def _trace_id(ctx: Context | None) -> str | None:
    return ctx.trace.trace_id if ctx is not None and ctx.trace is not None else None


def _outcome_for(err: BaseException) -> Status_:
    return status_of(err) if isinstance(err, StageFailed) else "failed"


async def run_batch(
    items: Iterable[Experiment | Mapping[str, Any] | BatchItem],
    *,
    max_concurrency: int = 8,
    batch_id: str | None = None,
    name: str = "batch",
    trace_children: int = DEFAULT_TRACE_CHILDREN,
    progress: Callable[[BatchProgress], None] | None = None,
    **run_kwargs: Any,
) -> list[RunOutcome]:
    """Run every item (at most ``max_concurrency`` at once) and return outcomes in input order.

    One failing run never stops the others. Runs are children of a ``BATCH {name}`` span when
    the batch has at most ``trace_children`` items; beyond that each run starts its own trace
    with a span link to the batch span. Every keyword argument of ``run`` is accepted.
    Cancelling the batch cancels every run; each is recorded ``cancelled`` in the store.
    """
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
    for key in ("run_id", "assigns", "batch_id", "links"):
        if key in run_kwargs:
            raise TypeError(f"run_batch sets {key!r} per run; pass BatchItem(...) items instead")
    batch = [i if isinstance(i, BatchItem) else BatchItem(i) for i in items]
    experiments = [coerce_experiment(b.experiment) for b in batch]
    run_ids = [b.run_id or new_run_id() for b in batch]
    batch_id = batch_id or str(uuid.uuid4())
    telemetry = tel.telemetry_for(
        run_kwargs.get("tracer_provider"), run_kwargs.get("meter_provider")
    )
    parent = tel.parent_context(run_kwargs.pop("parent", None))
    batch_span = telemetry.tracer.start_span(
        f"BATCH {name}",
        context=parent,
        kind=SpanKind.INTERNAL,
        attributes={"crucible.batch.id": batch_id, "crucible.batch.size": len(batch),
                    "crucible.batch.max_concurrency": max_concurrency},
    )  # fmt: skip
    batch_ctx = trace.set_span_in_context(batch_span, parent)
    as_children = len(batch) <= trace_children
    link = [Link(batch_span.get_span_context(), {"crucible.batch.id": batch_id})]
    store = run_kwargs.get("store")
    limiter = anyio.CapacityLimiter(max_concurrency)
    outcomes: list[RunOutcome | None] = [None] * len(batch)
    state = BatchProgress(total=len(batch))

    def report() -> None:
        if progress is not None:
            try:
                progress(state)
            except Exception as err:  # a broken progress display must not break the batch
                _log.warning("batch progress callback failed", error=repr(err))

    async def one(i: int) -> None:
        exp, rid = experiments[i], run_ids[i]
        started = False
        t0 = time.perf_counter()
        try:
            async with limiter:
                started = True
                state.running += 1
                report()
                try:
                    ctx = await run(
                        exp,
                        run_id=rid,
                        assigns=batch[i].assigns,
                        batch_id=batch_id,
                        parent=batch_ctx if as_children else otel_context.Context(),
                        links=() if as_children else link,
                        **run_kwargs,
                    )
                    outcomes[i] = RunOutcome("completed", ctx, None, rid, _trace_id(ctx), i,
                                             exp.id, time.perf_counter() - t0)  # fmt: skip
                    state.completed += 1
                except Exception as err:  # isolated: one failing run never stops the others
                    last: Context | None = getattr(err, "context", None)
                    outcomes[i] = RunOutcome(_outcome_for(err), last, err, rid, _trace_id(last), i,
                                             exp.id, time.perf_counter() - t0)  # fmt: skip
                    state.failed += 1
                finally:
                    state.running -= 1
                    report()
        except anyio.get_cancelled_exc_class():
            if outcomes[i] is None:
                outcomes[i] = RunOutcome("cancelled", None, None, rid, None, i, exp.id,
                                         time.perf_counter() - t0)  # fmt: skip
                if not started and store is not None:
                    await _record_never_started(store, exp, rid, batch_id)
            raise

    try:
        async with anyio.create_task_group() as tg:
            for i in range(len(batch)):
                tg.start_soon(one, i)
    except BaseException:
        batch_span.set_status(Status(StatusCode.ERROR, "batch cancelled"))
        batch_span.set_attribute("crucible.batch.failed", state.failed)
        batch_span.end()
        raise
    batch_span.set_attribute("crucible.batch.completed", state.completed)
    batch_span.set_attribute("crucible.batch.failed", state.failed)
    if state.failed:
        batch_span.set_status(
            Status(StatusCode.ERROR, f"{state.failed} of {len(batch)} runs failed")
        )
    batch_span.end()
    return [o for o in outcomes if o is not None]


async def _record_never_started(store: Any, exp: Experiment, run_id: str, batch_id: str) -> None:
    """A run cancelled while waiting for a slot is still recorded, as cancelled."""
    try:
        with anyio.CancelScope(shield=True), anyio.fail_after(10):
            await store.start_run(exp, run_id, batch_id=batch_id)
            await store.finish_run(
                run_id, "cancelled", failure_message="batch cancelled before the run started"
            )
    except Exception as err:
        _log.error("run store write failed", operation="cancel", run_id=run_id, error=repr(err))


def expand_matrix(experiment: Experiment) -> list[BatchItem]:
    """The cartesian product of ``experiment.matrix`` as batch items (one per option set).

    ``matrix: {"bench.alpha": [0.01, 0.05], "bench.tests": [[ttest], [welch]]}`` gives four
    runs; each sets the options on every pipeline stage with that name. The point of the sweep
    is kept in ``assigns["matrix"]``. An experiment without a matrix gives one item.
    """
    if not experiment.matrix:
        return [BatchItem(experiment)]
    keys = list(experiment.matrix)
    names = {sd.name for sd in experiment.pipeline}
    missing = sorted({k.split(".", 1)[0] for k in keys} - names)
    if missing:
        raise CrucibleError(
            f"{experiment.id}: matrix names stages not in the pipeline: {', '.join(missing)}"
        )
    items: list[BatchItem] = []
    for values in itertools.product(*(experiment.matrix[k] for k in keys)):
        point = dict(zip(keys, values, strict=True))
        pipeline = []
        for sd in experiment.pipeline:
            options = dict(sd.options or {})
            for key, value in point.items():
                stage_name, option = key.split(".", 1)
                if stage_name == sd.name:
                    options[option] = value
            pipeline.append(sd.model_copy(update={"options": options}) if options else sd)
        variant = experiment.model_copy(update={"pipeline": pipeline, "matrix": None})
        items.append(BatchItem(variant, assigns={"matrix": point}))
    return items


def summarize(outcomes: Sequence[RunOutcome]) -> dict[str, int]:
    """Count outcomes by status."""
    counts = {"completed": 0, "failed": 0, "timed_out": 0, "cancelled": 0}
    for o in outcomes:
        counts[o.status] += 1
    return counts
