"""Crucible: asyncio experiment pipelines with OpenTelemetry spans, logs and a run store."""

from crucible.context import Context
from crucible.engine import run
from crucible.errors import (
    CrucibleError,
    ExperimentFileError,
    InvalidPipeline,
    Problem,
    StageFailed,
)
from crucible.experiment import Experiment, OutputSpec, StageDef, load_experiment
from crucible.registry import Registry, default_registry
from crucible.stage import Stage, StageSpec, stage
from crucible.trace import SpanEvent, SpanRecord, Trace

__all__ = [
    "Context",
    "CrucibleError",
    "Experiment",
    "ExperimentFileError",
    "InvalidPipeline",
    "OutputSpec",
    "Problem",
    "Registry",
    "SpanEvent",
    "SpanRecord",
    "Stage",
    "StageDef",
    "StageFailed",
    "StageSpec",
    "Trace",
    "default_registry",
    "load_experiment",
    "run",
    "stage",
]
