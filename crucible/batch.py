"""run_batch(): many runs with bounded concurrency, isolated failures, one batch span; sweeps."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from crucible.context import Context
from crucible.engine import coerce_experiment, new_run_id, run
from crucible.errors import StageFailed
from crucible.experiment import Experiment, matrix_points
from crucible.observers import (
    BatchEnd,
    BatchStart,
    Observers,
    RunEnd,
    RunObserver,
    RunStart,
    StageInfo,
    notify,
    notify_shielded,
)
from crucible.status import RunStatus, status_for_result
from crucible.telemetry import conventions as names
from crucible.telemetry import spans as tel
from crucible.telemetry.carrier import parent_context

_log = structlog.get_logger("crucible.batch")
DEFAULT_TRACE_CHILDREN = 100
NEVER_STARTED = "batch cancelled before the run started"


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One run of a batch: an experiment and, optionally, its run id and assigns."""

    experiment: Experiment | Mapping[str, Any]
    run_id: str | None = None
    assigns: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What happened to one item: status, final (or last good) Context, error, ids.

    ``duration_s`` counts from the moment the run started, not from when it was queued.
    """

    status: RunStatus
    context: Context | None
    error: BaseException | None
    run_id: str
    trace_id: str | None
    index: int = 0
    experiment_id: str = ""
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is RunStatus.COMPLETED


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


def _outcome_for(err: BaseException) -> RunStatus:
    return status_for_result(err.result) if isinstance(err, StageFailed) else RunStatus.FAILED


async def run_batch(
    items: Iterable[Experiment | Mapping[str, Any] | BatchItem],
    *,
    max_concurrency: int = 8,
    batch_id: str | None = None,
    name: str = "batch",
    trace_children: int = DEFAULT_TRACE_CHILDREN,
    progress: Callable[[BatchProgress], None] | None = None,
    observers: Iterable[RunObserver] = (),
    **run_kwargs: Any,
) -> list[RunOutcome]:
    """Run every item (at most ``max_concurrency`` at once) and return outcomes in input order.

    One failing run never stops the others. Runs are children of a ``BATCH {name}`` span when
    the batch has at most ``trace_children`` items; beyond that each run starts its own trace
    with a span link to the batch span. Every keyword argument of ``run`` is accepted, and
    ``observers`` follow every run and the batch itself. Cancelling the batch cancels every
    run; each (also one still waiting for a slot) is recorded ``cancelled``.
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
    link = [Link(batch_span.get_span_context(), {names.BATCH_ID: batch_id})]
    trace_hex, span_hex = tel.hex_ids(batch_span)
    started = BatchStart(batch_id, name, len(batch), max_concurrency, trace_hex, span_hex,
                         as_children)  # fmt: skip
    await notify(watchers.on_batch_start, batch=started)
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
        t0: float | None = None
        try:
            async with limiter:
                t0 = time.perf_counter()
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
                        observers=user_observers,
                        **run_kwargs,
                    )
                    outcomes[i] = RunOutcome(RunStatus.COMPLETED, ctx, None, rid, _trace_id(ctx),
                                             i, exp.id, time.perf_counter() - t0)  # fmt: skip
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
                took = 0.0 if t0 is None else time.perf_counter() - t0
                outcomes[i] = RunOutcome(RunStatus.CANCELLED, None, None, rid, None, i, exp.id,
                                         took)  # fmt: skip
                if t0 is None:
                    await _never_started(watchers, exp, rid, batch_id)
            raise

    try:
        async with anyio.create_task_group() as tg:
            for i in range(len(batch)):
                tg.start_soon(one, i)
    except BaseException:
        batch_span.set_status(Status(StatusCode.ERROR, "batch cancelled"))
        batch_span.set_attribute(names.BATCH_FAILED, state.failed)
        batch_span.end()
        done = [o for o in outcomes if o is not None]
        await notify_shielded(watchers.on_batch_end, batch=BatchEnd(started, done, True))
        raise
    batch_span.set_attribute(names.BATCH_COMPLETED, state.completed)
    batch_span.set_attribute(names.BATCH_FAILED, state.failed)
    if state.failed:
        batch_span.set_status(
            Status(StatusCode.ERROR, f"{state.failed} of {len(batch)} runs failed")
        )
    batch_span.end()
    final = [o for o in outcomes if o is not None]
    await notify(watchers.on_batch_end, batch=BatchEnd(started, final))
    if store is not None and (waiting := store.journal_pending()):
        _log.warning("run records are waiting in the store's journal", records=waiting,
                     journal=str(store.journal_dir), database=store.url)  # fmt: skip
    return final


async def _never_started(watchers: Observers, exp: Experiment, run_id: str, batch_id: str) -> None:
    """A run cancelled while waiting for a slot is still reported (and stored) as cancelled."""
    if not (watchers.on_run_start or watchers.on_run_end):
        return
    now = dt.datetime.now(dt.UTC)
    stages = tuple(StageInfo(i, sd.name, sd.enabled) for i, sd in enumerate(exp.pipeline))
    start = RunStart(exp, run_id, None, None, batch_id, stages, now)
    with anyio.CancelScope(shield=True):
        await notify(watchers.on_run_start, run=start)
        end = RunEnd(start, RunStatus.CANCELLED, None, None, now, message=NEVER_STARTED)
        await notify(watchers.on_run_end, run=end)


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
