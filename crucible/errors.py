"""The exception hierarchy: every error Crucible raises on purpose derives from CrucibleError."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crucible.context import Context


class CrucibleError(Exception):
    """Base class of every error raised by Crucible."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a pipeline: where (stage index/name, option path) and what."""

    message: str
    stage_index: int | None = None
    stage: str | None = None
    path: str = ""

    def __str__(self) -> str:
        where = []
        if self.stage_index is not None:
            where.append(f"pipeline[{self.stage_index}]")
        if self.stage is not None:
            where.append(f"({self.stage})")
        if self.path:
            where.append(f"options.{self.path}")
        prefix = " ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


class InvalidPipeline(CrucibleError):
    """The pipeline cannot run: unknown stages or invalid options. Nothing was run."""

    def __init__(self, problems: Sequence[Problem], *, source: str | None = None) -> None:
        self.problems = tuple(problems)
        self.source = source
        head = f"{source}: " if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        n = len(self.problems)
        super().__init__(f"{head}invalid pipeline ({n} problem{'s' if n != 1 else ''}):\n{lines}")


class ExperimentFileError(CrucibleError):
    """An experiment file could not be read: malformed, missing field or wrong type."""

    def __init__(self, path: str, errors: Sequence[str]) -> None:
        self.path = path
        self.errors = tuple(errors)
        super().__init__("\n".join(f"{path}: {e}" for e in self.errors))


class StageFailed(CrucibleError):
    """A stage raised, timed out, was cancelled or returned something that is not a Context.

    ``context`` is the last good Context (the input of the failing stage, with the trace
    record of the failed attempt appended), so nothing that already happened is lost.
    """

    def __init__(
        self,
        stage: str,
        cause: BaseException,
        context: Context | None,
        *,
        result: str = "failure",
    ) -> None:
        self.stage = stage
        self.cause = cause
        self.context = context
        self.result = result
        super().__init__(f"stage {stage!r} failed ({result}): {type(cause).__name__}: {cause}")


class DuplicateRun(CrucibleError):
    """The run store already holds a run with this id; the run was not started."""
