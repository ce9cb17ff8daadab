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


def pipeline_result(status: RunStatus, failure_result: str | None = None) -> str:
    """``cicd.pipeline.result`` of a finished run; ``failure_result`` is the failed attempt's
    result (``error`` when the engine or the system failed, not the stage)."""
    if status is RunStatus.COMPLETED:
        return "success"
    if status is RunStatus.CANCELLED:
        return "cancellation"
    if status is RunStatus.TIMED_OUT:
        return "timeout"
    return "error" if failure_result == "error" else "failure"


def status_for_result(result: str) -> RunStatus:
    """The run status a failed stage attempt's result leaves: timed_out, cancelled or failed."""
    if result == "timeout":
        return RunStatus.TIMED_OUT
    if result == "cancellation":
        return RunStatus.CANCELLED
    return RunStatus.FAILED
