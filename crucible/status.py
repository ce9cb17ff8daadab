"""Where a run is in its life: the one run status used by the engine, batches and the store."""

from __future__ import annotations

import enum


class RunStatus(enum.StrEnum):
    """A run's status; every status except ``running`` is final.

    A StrEnum, so ``status == "completed"`` holds and it serialises as the plain string.
    """

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    ABANDONED = "abandoned"

    @property
    def final(self) -> bool:
        return self is not RunStatus.RUNNING


def status_for_result(result: str) -> RunStatus:
    """The run status a failed stage attempt's result leaves: timed_out, cancelled or failed."""
    if result == "timeout":
        return RunStatus.TIMED_OUT
    if result == "cancellation":
        return RunStatus.CANCELLED
    return RunStatus.FAILED
