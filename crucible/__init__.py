"""Crucible: asyncio experiment pipelines with OpenTelemetry spans, logs and a run store.

The public names load on first use (PEP 562), so ``import crucible`` and the CLI's ``--help``
do not pay for pydantic, the engine, OpenTelemetry's SDK or SQLAlchemy until something needs
them. ``stage`` (the decorator) shares its name with the ``crucible.stage`` module: the package
keeps the decorator under that name even when the module loads first (``_Package``).
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from crucible.lazy import lazy_getattr

if TYPE_CHECKING:
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

_WHERE: dict[str, str] = {
    "BatchItem": "crucible.batch",
    "RunOutcome": "crucible.batch",
    "expand_matrix": "crucible.batch",
    "run_batch": "crucible.batch",
    "Context": "crucible.context",
    "run": "crucible.engine",
    "CrucibleError": "crucible.errors",
    "DuplicateRun": "crucible.errors",
    "ExperimentFileError": "crucible.errors",
    "InvalidPipeline": "crucible.errors",
    "Problem": "crucible.errors",
    "StageError": "crucible.errors",
    "StageFailed": "crucible.errors",
    "Experiment": "crucible.experiment",
    "OutputSpec": "crucible.experiment",
    "StageDef": "crucible.experiment",
    "load_experiment": "crucible.experiment",
    "RunObserver": "crucible.observers",
    "Registry": "crucible.registry",
    "default_registry": "crucible.registry",
    "rerun": "crucible.reproduce",
    "resume": "crucible.reproduce",
    "RunStatus": "crucible.status",
    "Stage": "crucible.stage",
    "StageSpec": "crucible.stage",
    "stage": "crucible.stage",
    "SpanEvent": "crucible.trace",
    "SpanRecord": "crucible.trace",
    "Trace": "crucible.trace",
}
# Submodules reachable as attributes (``crucible.logging.configure(...)``) without an import.
_SUBMODULES = frozenset(
    {"batch", "compare", "engine", "errors", "experiment", "executors", "files", "logging",
     "observers", "registry", "store", "telemetry", "testing", "ui"}
)  # fmt: skip

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


class _Package(types.ModuleType):
    """The ``crucible`` module: its ``stage`` stays the decorator when the submodule loads.

    Importing ``crucible.stage`` sets the package's ``stage`` to that module; here it becomes
    the module's decorator instead, whichever is imported first.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "stage" and isinstance(value, types.ModuleType):
            value = value.stage
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__getattr__ = lazy_getattr(__name__, _WHERE, _SUBMODULES)


def __dir__() -> list[str]:
    return sorted({*__all__, *_SUBMODULES})
