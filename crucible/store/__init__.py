"""The run store: every run, stage attempt and artifact in SQLite (default) or PostgreSQL.

``RunStore`` reads and writes the database; ``StoreObserver`` (``store.observer``) records runs
in it as the engine reports them.
"""

from crucible.errors import DuplicateRun, StoreError
from crucible.status import RunStatus
from crucible.store.checkpoints import Checkpoints
from crucible.store.observer import StoreObserver
from crucible.store.records import (
    ArtifactInfo,
    AttemptInfo,
    CheckpointInfo,
    ExperimentInfo,
    RunInfo,
)
from crucible.store.runstore import RunStore
from crucible.store.urls import DEFAULT_URL, normalize_url

__all__ = [
    "DEFAULT_URL",
    "ArtifactInfo",
    "AttemptInfo",
    "CheckpointInfo",
    "Checkpoints",
    "DuplicateRun",
    "ExperimentInfo",
    "RunInfo",
    "RunStatus",
    "RunStore",
    "StoreError",
    "StoreObserver",
    "normalize_url",
]
