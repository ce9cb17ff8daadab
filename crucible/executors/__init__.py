"""Where a batch's runs execute: this event loop (LocalExecutor) or a Ray cluster (RayExecutor).

An executor implements :class:`Executor`: ``await executor.execute(prepared_batch)``. ``run_batch``
builds the :class:`PreparedBatch` (jobs, the batch span's context, the ``run()`` arguments) and
collects one outcome per job. ``RayExecutor`` needs ``pip install 'crucible-pipelines[ray]'``;
Ray is imported only when it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crucible.executors.base import Executor, PreparedBatch, RunJob, WorkerLost
from crucible.executors.local import LocalExecutor

if TYPE_CHECKING:
    from crucible.executors.ray_executor import RayExecutor

__all__ = ["Executor", "LocalExecutor", "PreparedBatch", "RayExecutor", "RunJob", "WorkerLost"]


def __getattr__(name: str) -> Any:
    if name == "RayExecutor":
        from crucible.executors.ray_executor import RayExecutor

        return RayExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
