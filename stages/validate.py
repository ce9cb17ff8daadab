"""The ``validate`` stage: re-check the run's own experiment and report what would go wrong.

Checks, for every enabled StageDef, that it resolves through the default registry (or, for an
import path, that it loads and is a stage) and that its options validate; and that every
OutputSpec has a known format and sink and a unique name. Disabled stages are reported as
knowingly skipped. Problems are warnings unless ``strict`` is true, which makes them fatal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import anyio
import structlog
from pydantic import BaseModel, ConfigDict, Field

from crucible.context import Context
from crucible.errors import CrucibleError, OptionsError, Problem, UnknownStage
from crucible.experiment import Experiment, StageDef
from crucible.registry import (
    Registry,
    default_registry,
    imports_allowed,
    load_import_path,
)
from crucible.stage import StageSpec, as_stage_spec, stage

__all__ = [
    "OUTPUT_FORMATS",
    "OUTPUT_SINKS",
    "ValidateOptions",
    "ValidationFailed",
    "ValidationReport",
    "check_experiment",
    "validate",
]

OUTPUT_FORMATS = ("markdown", "json", "html")
OUTPUT_SINKS = ("file", "stdout")
_log = structlog.get_logger("stages.validate")


class ValidateOptions(BaseModel):
    """Options of the ``validate`` stage."""

    model_config = ConfigDict(extra="forbid")

    strict: bool = Field(
        default=False, description="Fail the run (ValidationFailed) when any problem is found."
    )


class ValidationFailed(CrucibleError):
    """``strict`` validation found problems; ``problems`` holds them, ``errors`` their text."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        self.errors = [str(p) for p in self.problems]
        n = len(self.errors)
        lines = "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(f"validation failed ({n} problem{'s' if n != 1 else ''}):\n{lines}")


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """What ``check_experiment`` found: problems (warnings) and knowingly skipped stages."""

    problems: tuple[Problem, ...] = ()
    skipped: tuple[str, ...] = ()

    def metric(self) -> dict[str, object]:
        """The ``metrics["validation"]`` value: ``status`` ("passed" or "warnings"), the warning
        messages and the knowingly skipped stages."""
        if not self.problems:
            out: dict[str, object] = {"status": "passed"}
            if self.skipped:
                out["skipped"] = list(self.skipped)
            return out
        return {
            "status": "warnings",
            "warnings": [str(p) for p in self.problems],
            "skipped": list(self.skipped),
        }


def _resolve(
    i: int, sd: StageDef, registry: Registry, allow_imports: bool
) -> tuple[StageSpec | None, list[Problem]]:
    """Resolve one StageDef as the engine would; a problem instead of an exception."""

    def problem(message: str) -> tuple[None, list[Problem]]:
        return None, [Problem(message, stage_index=i, stage=sd.name)]

    if sd.module is None:
        if sd.name in registry:
            return registry.get(sd.name), []
        prefix = f"entry point {sd.name} = "
        broken = [e for e in registry.discovery_errors if e.startswith(prefix)]
        if broken:
            return problem(f"stage {sd.name!r} cannot be loaded: {broken[0]}")
        return problem(f"stage {sd.name!r} is not registered")
    if not allow_imports:
        return problem(
            f"stage {sd.name!r} names import path {sd.module!r}; checking (and running) it "
            "needs allow_imports=True"
        )
    try:
        obj = load_import_path(sd.module)
    except UnknownStage as err:
        msg = str(err)
        if "cannot be loaded" not in msg:
            msg = f"module {sd.module!r} cannot be loaded: {msg}"
        return problem(msg)
    try:
        return as_stage_spec(obj, name=sd.name), []
    except TypeError as err:
        return problem(f"{sd.module!r} does not implement run (not a stage): {err}")


def check_experiment(
    experiment: Experiment,
    *,
    registry: Registry | None = None,
    allow_imports: bool = False,
) -> ValidationReport:
    """Check stages, options and outputs of ``experiment``; pure apart from importing code."""
    reg = registry if registry is not None else default_registry()
    problems: list[Problem] = []
    skipped: list[str] = []
    for i, sd in enumerate(experiment.pipeline):
        if not sd.enabled:
            skipped.append(f"pipeline[{i}] ({sd.name}): disabled, skipped")
            continue
        spec, found = _resolve(i, sd, reg, allow_imports)
        problems += found
        if spec is None:
            continue
        try:
            spec.validate_options(sd.options)
        except OptionsError as err:
            problems += [Problem(m, stage_index=i, stage=sd.name, path=p) for p, m in err.problems]
    seen: set[str] = set()
    for j, out in enumerate(experiment.outputs or ()):
        where = f"outputs[{j}] ({out.name})"
        if out.name in seen:
            problems.append(Problem(f"{where}: duplicate output name {out.name!r}"))
        seen.add(out.name)
        if not out.formats:
            problems.append(Problem(f"{where}: no formats"))
        for fmt in out.formats:
            if fmt not in OUTPUT_FORMATS:
                known = ", ".join(OUTPUT_FORMATS)
                problems.append(Problem(f"{where}: unknown format {fmt!r} (known: {known})"))
        if out.sink not in OUTPUT_SINKS:
            known = ", ".join(OUTPUT_SINKS)
            problems.append(Problem(f"{where}: unknown sink {out.sink!r} (known: {known})"))
    return ValidationReport(problems=tuple(problems), skipped=tuple(skipped))


@stage(
    "validate",
    description=(
        "Check that every enabled stage of the experiment resolves and has valid options, and "
        "that its outputs are well formed; warnings, or a failure when strict"
    ),
    register=False,
)
async def validate(ctx: Context, opts: ValidateOptions) -> Context:
    """Record ``metrics["validation"]``; raise ValidationFailed on problems when strict."""
    allow = imports_allowed()  # read here: the worker thread does not see this run's contextvars
    report = await anyio.to_thread.run_sync(
        lambda: check_experiment(ctx.experiment, allow_imports=allow)
    )
    if report.skipped:
        _log.info("disabled stages skipped", skipped=list(report.skipped))
    if report.problems:
        if opts.strict:
            raise ValidationFailed(report.problems)
        _log.warning("experiment validation warnings", warnings=[str(p) for p in report.problems])
    ctx = ctx.record_event(
        "validation.checked",
        stages=len(ctx.experiment.pipeline),
        warnings=len(report.problems),
        skipped=len(report.skipped),
    )
    return ctx.put_metric("validation", report.metric())
