"""Crucible: asyncio experiment pipelines with OpenTelemetry spans, logs and a run store."""

from crucible.batch import BatchItem, RunOutcome, expand_matrix, run_batch
from crucible.context import Context
from crucible.engine import run
from crucible.errors import (
    CrucibleError,
    DuplicateRun,
    ExperimentFileError,
    InvalidPipeline,
    Problem,
    StageError,
    StageFailed,
)
from crucible.experiment import Experiment, OutputSpec, StageDef, load_experiment
from crucible.observers import RunObserver
from crucible.registry import Registry, default_registry
from crucible.reproduce import rerun, resume
from crucible.stage import Stage, StageSpec, stage
from crucible.status import RunStatus
from crucible.trace import SpanEvent, SpanRecord, Trace

__all__ = [
    "BatchItem",
    "Context",
    "CrucibleError",
    "DuplicateRun",
    "Experiment",
    "ExperimentFileError",
    "InvalidPipeline",
    "OutputSpec",
    "Problem",
    "Registry",
    "RunObserver",
    "RunOutcome",
    "RunStatus",
    "SpanEvent",
    "SpanRecord",
    "Stage",
    "StageDef",
    "StageError",
    "StageFailed",
    "StageSpec",
    "Trace",
    "default_registry",
    "expand_matrix",
    "load_experiment",
    "rerun",
    "resume",
    "run",
    "run_batch",
    "stage",
]
