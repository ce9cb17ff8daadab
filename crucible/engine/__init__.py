"""The engine: plan a pipeline (resolve, validate), then run it under spans, telling observers."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Link

from crucible.context import Context
from crucible.engine.plan import PlannedStage, ValidateMode, cached_plan, coerce_experiment, plan
from crucible.engine.resume import ResumePoint
from crucible.engine.runner import Runner
from crucible.experiment import Experiment
from crucible.experiment.models import ID_MAX
from crucible.files import FileAccess, using_access
from crucible.observers import (
    AttemptStart,
    BatchEnd,
    BatchStart,
    Observers,
    RunEnd,
    RunObserver,
    RunStart,
    StageInfo,
)
from crucible.registry import Registry, default_registry, imports_allowed_scope
from crucible.runids import forget, new_run_id
from crucible.telemetry import spans as tel
from crucible.telemetry.carrier import parent_context
from crucible.watchdog import threshold_from_env, watchdog_for_current_loop

if TYPE_CHECKING:
    from crucible.store import RunStore

__all__ = [
    "AttemptStart",
    "BatchEnd",
    "BatchStart",
    "PlannedStage",
    "ResumePoint",
    "RunEnd",
    "RunObserver",
    "RunStart",
    "StageInfo",
    "ValidateMode",
    "coerce_experiment",
    "new_run_id",
    "observers_for",
    "plan",
    "run",
]


_access_cache: dict[Any, FileAccess] = {}


def access_for(experiment: Experiment) -> FileAccess:
    """The default file access of a run of ``experiment`` (its file's folder, the cwd)."""
    source = experiment.source
    key = (None if source is None else str(source), os.getcwd())  # str keys hash cheaply
    hit = _access_cache.get(key)
    if hit is None:
        if len(_access_cache) > 64:
            _access_cache.clear()
        folder = None if source is None else source.parent
        hit = _access_cache[key] = FileAccess.default(experiment_dir=folder)
    return hit


_last_observers: tuple[tuple[Any, ...], Observers] | None = None


def observers_for(store: RunStore | None, observers: Iterable[Any]) -> Observers:
    """The observers of a run: the store's, the caller's, then the loop watchdog (if on)."""
    global _last_observers
    threshold = threshold_from_env()
    dog = watchdog_for_current_loop(threshold) if threshold else None
    key = (store, dog, *observers)
    last = _last_observers
    if (
        last is not None
        and len(last[0]) == len(key)
        and all(a is b for a, b in zip(last[0], key, strict=True))
    ):
        return last[1]
    found = Observers.combine(
        () if store is None else (store.observer, store.checkpoints),
        key[2:],
        () if dog is None else (dog,),
    )
    _last_observers = (key, found)
    return found


async def run(
    experiment: Experiment | Mapping[str, Any],
    *,
    run_id: str | None = None,
    assigns: Mapping[str, Any] | None = None,
    registry: Registry | None = None,
    store: RunStore | None = None,
    observers: Iterable[RunObserver] = (),
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    parent: Any = None,
    validate_options: ValidateMode = "error",
    timeout: float | None = None,  # noqa: ASYNC109 - the run-level deadline is part of the API
    allow_imports: bool = False,
    batch_id: str | None = None,
    links: Sequence[Link] = (),
    url: str | None = None,
    file_access: FileAccess | None = None,
    rerun_of: str | None = None,
    resume_from: ResumePoint | None = None,
) -> Context:
    """Run an experiment's stages in order and return the final Context.

    Raises InvalidPipeline (nothing ran) or StageFailed (with the last good context). Outside
    cancellation ends the spans with result ``cancellation`` and propagates. ``url`` is a link
    to the run (``{run_id}``, ``{trace_id}`` and ``{span_id}`` are filled in), set on every stage
    span as ``cicd.pipeline.task.run.url.full``. ``file_access`` says where stages may read and
    write (default: :meth:`FileAccess.default` for the experiment's file). ``rerun_of`` names
    the stored run this one runs again; ``resume_from`` starts at a stage of a stored run with
    its restored state (``crucible.resume`` builds both).
    """
    exp = coerce_experiment(experiment)
    if timeout is not None and not timeout > 0:  # NaN too
        raise ValueError(f"timeout must be positive seconds, got {timeout!r}")
    if run_id is not None and not 0 < len(run_id) <= ID_MAX:
        raise ValueError(f"run_id must be 1 to {ID_MAX} characters, got {len(run_id)}")
    access = file_access if file_access is not None else access_for(exp)
    planned = cached_plan(
        exp,
        registry if registry is not None else default_registry(),
        validate_options=validate_options,
        allow_imports=allow_imports,
        file_access=access,
        restored=0 if resume_from is None else resume_from.start,
    )
    run_id = run_id or new_run_id()
    runner = Runner(
        exp,
        planned,
        run_id=run_id,
        assigns=assigns,
        observers=observers_for(store, observers),
        telemetry=tel.telemetry_for(tracer_provider, meter_provider),
        parent=parent_context(parent),
        timeout=timeout,
        batch_id=batch_id,
        links=links,
        url=url,
        rerun_of=rerun_of,
        resume_from=resume_from,
    )
    try:
        with imports_allowed_scope(allow_imports), using_access(access):
            return await runner.execute()
    finally:
        forget(run_id)
