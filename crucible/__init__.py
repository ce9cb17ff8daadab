"""Crucible: asyncio experiment pipelines with OpenTelemetry spans, logs and a run store."""

from crucible.context import Context
from crucible.errors import (
    CrucibleError,
    ExperimentFileError,
    InvalidPipeline,
    Problem,
    StageFailed,
)
from crucible.experiment import Experiment, OutputSpec, StageDef, load_experiment
from crucible.trace import SpanEvent, SpanRecord, Trace

__all__ = [
    "Context",
    "CrucibleError",
    "Experiment",
    "ExperimentFileError",
    "InvalidPipeline",
    "OutputSpec",
    "Problem",
    "SpanEvent",
    "SpanRecord",
    "StageDef",
    "StageFailed",
    "Trace",
    "load_experiment",
]
