"""The engine: plan a pipeline (resolve, validate), then run it under spans, telling observers."""

from crucible.engine.observers import (
    AttemptStart,
    BatchEnd,
    BatchStart,
    RunEnd,
    RunObserver,
    RunStart,
    StageInfo,
)
from crucible.engine.runner import (
    PlannedStage,
    coerce_experiment,
    new_run_id,
    plan,
    run,
    status_of,
)

__all__ = [
    "AttemptStart",
    "BatchEnd",
    "BatchStart",
    "PlannedStage",
    "RunEnd",
    "RunObserver",
    "RunStart",
    "StageInfo",
    "coerce_experiment",
    "new_run_id",
    "plan",
    "run",
    "status_of",
]
