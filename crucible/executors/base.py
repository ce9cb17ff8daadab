"""What a batch hands an executor: the jobs, the batch's trace context, and where outcomes go."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry import context as otel_context

from crucible.context import Context
from crucible.errors import CrucibleError, StageFailed
from crucible.experiment import Experiment
from crucible.observers import Observers, RunObserver
from crucible.status import RunStatus, pipeline_result, status_for_result


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One run of a batch: an experiment and, optionally, its run id and assigns."""

    experiment: Experiment | Mapping[str, Any]
    run_id: str | None = None
    assigns: Mapping[str, Any] | None = None


class WorkerLost(CrucibleError):
    """The process running a batch's run died (a Ray actor was killed): the system failed."""


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What happened to one item: status, final (or last good) Context, error, ids.

    ``duration_s`` counts from the moment the run started, not from when it was queued.
    ``metrics`` are the run's metrics even when its context was not shipped back
    (``RayExecutor(return_contexts=False)``).
    """

    status: RunStatus
    context: Context | None
    error: BaseException | None
    run_id: str
    trace_id: str | None
    index: int = 0
    experiment_id: str = ""
    duration_s: float = 0.0
    metrics: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.metrics is None and self.context is not None:
            object.__setattr__(self, "metrics", self.context.metrics)

    @property
    def ok(self) -> bool:
        return self.status is RunStatus.COMPLETED

    @property
    def result(self) -> str:
        """``cicd.pipeline.result``: ``error`` when the system (not the stage) failed."""
        if isinstance(self.error, StageFailed):
            return pipeline_result(self.status, self.error.result)
        return pipeline_result(self.status, "error" if isinstance(self.error, WorkerLost) else None)


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


@dataclass(frozen=True, slots=True)
class RunJob:
    """One run to execute: its place in the batch, experiment, id and assigns."""

    index: int
    experiment: Experiment
    run_id: str
    assigns: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class PreparedBatch:
    """Everything an executor needs to run a batch.

    ``parent`` is the batch span's context in this process and ``carrier`` its W3C carrier (for
    other processes); runs are its children when ``as_children``, else they start new traces
    linked to it. ``run_kwargs`` are the caller's ``run()`` keyword arguments. An executor calls
    ``started(index)`` when a run begins and ``finished(outcome)`` exactly once per job, also for
    jobs cancelled before they began (``never_started`` records those).
    """

    batch_id: str
    name: str
    jobs: tuple[RunJob, ...]
    max_concurrency: int
    as_children: bool
    parent: otel_context.Context
    carrier: Mapping[str, str]
    run_kwargs: Mapping[str, Any]
    observers: tuple[RunObserver, ...]
    watchers: Observers
    started: Callable[[int], None]
    finished: Callable[[RunOutcome], None]


class Executor(Protocol):
    """Runs a prepared batch somewhere: in this process (LocalExecutor), on Ray (RayExecutor).

    ``execute`` returns once every job has an outcome (given to ``batch.finished``). When it is
    cancelled it cancels the runs it started, records the cancelled ones, and re-raises.
    """

    async def execute(self, batch: PreparedBatch) -> None: ...


def outcome_status(err: BaseException) -> RunStatus:
    """The status of a run that raised ``err``."""
    return status_for_result(err.result) if isinstance(err, StageFailed) else RunStatus.FAILED


def trace_id_of(ctx: Context | None) -> str | None:
    return ctx.trace.trace_id if ctx is not None and ctx.trace is not None else None
