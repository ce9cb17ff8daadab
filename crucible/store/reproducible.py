"""The columns of a run's row that record what it ran, built once from its RunStart.

The run's start write carries them (``RunStore.start_run(..., extra=start_values(run))``).
"""

from __future__ import annotations

from typing import Any

from crucible.checkpoint import encode_fields
from crucible.observers import RunStart

__all__ = ["start_values"]


def start_values(run: RunStart) -> dict[str, Any]:
    """Configuration, the caller's assigns (checkpoint codec), versions, git, and lineage."""
    return {
        "span_id": run.span_id,
        "config": run.config,
        "start_assigns": encode_fields(run.assigns) if run.assigns else None,
        "versions": dict(run.versions) or None,
        "git_commit": run.git_commit,
        "git_dirty": run.git_dirty,
        "rerun_of": run.rerun_of,
        "resumed_from": run.resumed_from,
        "source": None if run.experiment.source is None else str(run.experiment.source),
    }
