"""Every exception Crucible raises on purpose; all derive from CrucibleError.

Where a standard base helps callers (``except LookupError``), it is kept as a second base.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crucible.context import Context


class CrucibleError(Exception):
    """Base class of every error raised by Crucible."""


def format_location(loc: Sequence[int | str], *, empty: str = "(top level)") -> str:
    """A pydantic-style location as a field path: ``("pipeline", 2, "timeout")`` becomes
    ``pipeline[2].timeout``; an empty location becomes ``empty``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or empty


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

    def __reduce__(self) -> tuple[object, ...]:
        return (_invalid_pipeline, (self.problems, self.source))


def _invalid_pipeline(problems: Sequence[Problem], source: str | None) -> InvalidPipeline:
    return InvalidPipeline(problems, source=source)


class ExperimentFileError(CrucibleError):
    """An experiment file could not be read: malformed, missing field or wrong type."""

    def __init__(self, path: str, errors: Sequence[str]) -> None:
        self.path = path
        self.errors = tuple(errors)
        super().__init__("\n".join(f"{path}: {e}" for e in self.errors))


class OverrideError(CrucibleError):
    """A ``--set STAGE.OPTION=VALUE`` override is malformed or names no stage in the pipeline."""


class UnknownStage(CrucibleError, LookupError):
    """No stage has that name (or an import path could not be loaded)."""


class ImportsNotAllowed(CrucibleError, PermissionError):
    """An experiment names code to import but the caller did not pass ``allow_imports=True``."""


class OptionsError(CrucibleError, ValueError):
    """Options did not validate; ``problems`` lists (option path, message)."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{p}: {m}" for p, m in self.problems))


class FileAccessError(CrucibleError, PermissionError):
    """A path is outside the folders the run may read or write, or the file is missing."""


class StageError(CrucibleError):
    """Raised by a stage to fail and keep what it did: ``context`` is the stage's last Context.

    The engine puts that Context's recorded events on the stage span and returns it (with the
    attempt's trace record) as ``StageFailed.context``, so metrics and events survive the failure.
    """

    def __init__(self, message: str, *, context: Context) -> None:
        self.context = context
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (_stage_error, (str(self), self.context))


def _stage_error(message: str, context: Context) -> StageError:
    return StageError(message, context=context)


class StageFailed(CrucibleError):
    """A stage raised, timed out, was cancelled or returned something that is not a Context.

    ``context`` is the last good Context (the input of the failing stage, or the Context a
    ``StageError`` carried, with the trace record of the failed attempt appended), so nothing
    that already happened is lost.
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

    def __reduce__(self) -> tuple[object, ...]:
        """Pickle with every field (a failure shipped back from another process)."""
        return (_stage_failed, (self.stage, self.cause, self.context, self.result))


def _stage_failed(
    stage: str, cause: BaseException, context: Context | None, result: str
) -> StageFailed:
    return StageFailed(stage, cause, context, result=result)


class StoreError(CrucibleError):
    """A run-store operation failed; ``operation`` and ``run_id`` say which."""

    def __init__(self, operation: str, message: str, *, run_id: str | None = None) -> None:
        self.operation = operation
        self.run_id = run_id
        self.reason = message
        where = f" for run {run_id!r}" if run_id is not None else ""
        super().__init__(f"run store: {operation}{where} failed: {message}")

    def __reduce__(self) -> tuple[object, ...]:
        return (_store_error, (type(self), self.operation, self.reason, self.run_id))


def _store_error(
    cls: type[StoreError], operation: str, message: str, run_id: str | None
) -> StoreError:
    return cls(operation, message, run_id=run_id)


class DuplicateRun(StoreError):
    """The run store already holds a run with this id; the run was not started."""


class ReplayError(CrucibleError):
    """A stored run cannot be rerun or resumed: unknown, completed, without checkpoints, ..."""


class Unrestorable(ReplayError):
    """Stored values that cannot be restored; ``problems`` lists (key path, what it was)."""

    def __init__(self, problems: Sequence[tuple[str, str]], *, hint: str = "") -> None:
        self.problems = tuple(problems)
        lines = "; ".join(f"{path}: {what} cannot be restored" for path, what in self.problems)
        super().__init__(lines + (f" ({hint})" if hint else ""))
