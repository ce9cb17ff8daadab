"""The columns of a run's row that record what it ran, built once from its RunStart.

The run's start write carries them (``RunStore.start_run(..., extra=start_values(run))``).
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping
from typing import Any, Final

from crucible.checkpoint import encode_fields
from crucible.experiment import Experiment
from crucible.observers import RunStart
from crucible.store.rows import RUN_EXTRA, Json

__all__ = ["START_COLUMNS", "start_tail", "start_values"]

# The columns start_tail fills, in its order: the run row's last ones (schema.py).
START_COLUMNS: Final = (
    "span_id", "config", "start_assigns", "versions", "git_commit", "git_dirty", "rerun_of",
    "resumed_from", "source", "trace_exported",
)  # fmt: skip
if START_COLUMNS != RUN_EXTRA:  # pragma: no cover - a schema change must update start_tail
    raise ImportError("crucible.store.reproducible: start_tail does not match the schema")


_CACHE_SIZE: Final = 256
_by_experiment: dict[int, tuple[weakref.ref[Experiment], str, str | None]] = {}
_by_versions: dict[int, tuple[Mapping[str, str], str | None]] = {}


def _experiment_parts(run: RunStart) -> tuple[str, str | None]:
    """The encoded configuration and the source of a (frozen) experiment, made once per object."""
    experiment = run.experiment
    hit = _by_experiment.get(id(experiment))
    if hit is not None and hit[0]() is experiment:
        return hit[1], hit[2]
    config = json.dumps(run.config)
    source = None if experiment.source is None else str(experiment.source)
    if len(_by_experiment) >= _CACHE_SIZE:
        _by_experiment.clear()
    _by_experiment[id(experiment)] = (weakref.ref(experiment), config, source)
    return config, source


def _versions(versions: Mapping[str, str]) -> str | None:
    """The encoded versions; the engine shares one mapping among the runs of a set of stages."""
    hit = _by_versions.get(id(versions))
    if hit is not None and hit[0] is versions:
        return hit[1]
    encoded = json.dumps(dict(versions)) if versions else None
    if len(_by_versions) >= _CACHE_SIZE:
        _by_versions.clear()
    _by_versions[id(versions)] = (versions, encoded)  # holds the mapping: its id stays unique
    return encoded


def start_tail(run: RunStart) -> tuple[Any, ...]:
    """:func:`start_values` as the run row's last columns (``START_COLUMNS``), JSON encoded."""
    config, source = _experiment_parts(run)
    assigns = run.assigns
    return (
        run.span_id, config, json.dumps(encode_fields(assigns)) if assigns else None,
        _versions(run.versions), run.git_commit, run.git_dirty, run.rerun_of, run.resumed_from,
        source, run.exported,
    )  # fmt: skip


def start_values(run: RunStart) -> dict[str, Any]:
    """Configuration, the caller's assigns (checkpoint codec), versions, git, and lineage."""
    config, source = _experiment_parts(run)
    versions = _versions(run.versions)
    return {  # text that is already JSON is marked so (Json), so that it is not encoded again
        "span_id": run.span_id,
        "config": Json(config),
        "start_assigns": encode_fields(run.assigns) if run.assigns else None,
        "versions": None if versions is None else Json(versions),
        "git_commit": run.git_commit,
        "git_dirty": run.git_dirty,
        "rerun_of": run.rerun_of,
        "resumed_from": run.resumed_from,
        "source": source,
        "trace_exported": run.exported,
    }
