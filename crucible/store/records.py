"""The records the run store hands back, and the mappers that build them from table rows.

Every record turns itself into plain data through one shared ``to_dict``: its dataclass fields
in order, datetimes as ISO strings, containers copied, nested records as their own dicts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sqlalchemy.engine import RowMapping

__all__ = [
    "ArtifactInfo",
    "AttemptInfo",
    "CheckpointInfo",
    "ExperimentInfo",
    "RunInfo",
    "StoredRecord",
    "artifact_info",
    "attempt_info",
    "checkpoint_info",
    "experiment_info",
    "run_info",
]


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """Base of the store's records: the one ``to_dict`` they all share."""

    # Properties that to_dict also emits, keyed by the field they follow.
    _derived: ClassVar[Mapping[str, tuple[str, ...]]] = {}

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready data: fields in declaration order (plus derived properties)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            out[f.name] = _plain(getattr(self, f.name))
            for name in self._derived.get(f.name, ()):
                out[name] = _plain(getattr(self, name))
        return out


def _plain(value: Any) -> Any:
    """One value for ``to_dict``: containers are copied one level deep, records recurse."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list | tuple):
        return [v.to_dict() if isinstance(v, StoredRecord) else v for v in value]
    return value


@dataclass(frozen=True, slots=True)
class AttemptInfo(StoredRecord):
    """One stored stage attempt (a finished stage span)."""

    id: int
    run_id: str
    stage: str
    name: str | None
    stage_index: int | None
    attempt: int
    result: str
    start_ns: int
    end_ns: int
    duration_s: float
    span_id: str | None
    parent_span_id: str | None
    error_type: str | None
    error_message: str | None
    events: list[Any] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ArtifactInfo(StoredRecord):
    """One stored artifact (a file a run wrote, a URL, ...)."""

    id: int
    run_id: str
    name: str
    type: str
    location: str | None
    format: str | None
    metadata: dict[str, Any]
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class RunInfo(StoredRecord):
    """One stored run with its attempts and artifacts (empty tuples in listings).

    ``config`` is the experiment as it ran (secrets redacted), ``start_assigns`` the caller's
    assigns in the checkpoint codec's form, ``versions`` the packages it ran with, and
    ``span_id`` its run span, ``trace_exported`` whether its spans went to a tracer provider
    (False for untraced runs: there is no trace to open); all None for runs stored before the
    store kept them.
    """

    _derived: ClassVar[Mapping[str, tuple[str, ...]]] = {"finished_at": ("duration_s",)}

    run_id: str
    experiment_id: str
    status: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    trace_id: str | None
    batch_id: str | None
    metrics: dict[str, Any]
    outputs: list[Any]
    assigns: dict[str, Any]
    failure_stage: str | None
    failure_message: str | None
    error_type: str | None
    owner_pid: int | None
    owner_host: str | None
    span_id: str | None = None
    config: dict[str, Any] | None = None
    start_assigns: dict[str, Any] | None = None
    versions: dict[str, str] | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    rerun_of: str | None = None
    resumed_from: str | None = None
    source: str | None = None
    trace_exported: bool | None = None
    attempts: tuple[AttemptInfo, ...] = ()
    artifacts: tuple[ArtifactInfo, ...] = ()

    @property
    def id(self) -> str:
        """The ``runs.id`` column (same as ``run_id``)."""
        return self.run_id

    @property
    def duration_s(self) -> float | None:
        """Wall-clock seconds from start to finish; None while unfinished."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True, slots=True)
class CheckpointInfo(StoredRecord):
    """The state a completed stage left, stored for a run with ``checkpoint: true``."""

    id: int
    run_id: str
    stage_index: int
    stage: str
    state: dict[str, Any]
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class ExperimentInfo(StoredRecord):
    """One stored experiment: its redacted definition and descriptive fields."""

    id: str
    definition: dict[str, Any]
    owner: str | None
    tags: list[Any]
    metadata: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime


# --- rows to records -------------------------------------------------------------------------


def run_info(
    row: RowMapping,
    attempts: tuple[AttemptInfo, ...] = (),
    arts: tuple[ArtifactInfo, ...] = (),
) -> RunInfo:
    """A ``runs`` row (with its attempts and artifacts, when read) as a RunInfo."""
    return RunInfo(
        run_id=row["id"],
        experiment_id=row["experiment_id"],
        status=row["status"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        trace_id=row["trace_id"],
        batch_id=row["batch_id"],
        metrics=row["metrics"] or {},
        outputs=row["outputs"] or [],
        assigns=row["assigns"] or {},
        failure_stage=row["failure_stage"],
        failure_message=row["failure_message"],
        error_type=row["error_type"],
        owner_pid=row["owner_pid"],
        owner_host=row["owner_host"],
        span_id=row["span_id"],
        config=row["config"],
        start_assigns=row["start_assigns"],
        versions=row["versions"],
        git_commit=row["git_commit"],
        git_dirty=row["git_dirty"],
        rerun_of=row["rerun_of"],
        resumed_from=row["resumed_from"],
        source=row["source"],
        trace_exported=row["trace_exported"],
        attempts=attempts,
        artifacts=arts,
    )


def attempt_info(row: RowMapping) -> AttemptInfo:
    """A ``stage_attempts`` row as an AttemptInfo."""
    return AttemptInfo(
        id=row["id"],
        run_id=row["run_id"],
        stage=row["stage"],
        name=row["name"],
        stage_index=row["stage_index"],
        attempt=row["attempt"],
        result=row["result"],
        start_ns=row["start_ns"],
        end_ns=row["end_ns"],
        duration_s=row["duration_s"],
        span_id=row["span_id"],
        parent_span_id=row["parent_span_id"],
        error_type=row["error_type"],
        error_message=row["error_message"],
        events=row["events"] or [],
    )


def artifact_info(row: RowMapping) -> ArtifactInfo:
    """An ``artifacts`` row as an ArtifactInfo."""
    return ArtifactInfo(
        id=row["id"],
        run_id=row["run_id"],
        name=row["name"],
        type=row["type"],
        location=row["location"],
        format=row["format"],
        metadata=row["metadata"] or {},
        created_at=row["created_at"],
    )


def checkpoint_info(row: RowMapping) -> CheckpointInfo:
    """A ``checkpoints`` row as a CheckpointInfo."""
    return CheckpointInfo(
        id=row["id"],
        run_id=row["run_id"],
        stage_index=row["stage_index"],
        stage=row["stage"],
        state=row["state"],
        created_at=row["created_at"],
    )


def experiment_info(row: RowMapping) -> ExperimentInfo:
    """An ``experiments`` row as an ExperimentInfo."""
    return ExperimentInfo(
        id=row["id"],
        definition=row["definition"],
        owner=row["owner"],
        tags=row["tags"] or [],
        metadata=row["metadata"] or {},
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
