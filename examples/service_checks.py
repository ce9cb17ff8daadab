"""The service's pre-flight: everything a request may not do is a 422 before anything runs.

On top of the engine's own pre-flight (every stage resolved, its options validated, its paths
inside the service's folders) it refuses stages not on the allow-list, ``module:`` imports,
import-path options and report paths outside the reports folder, which the stages would
otherwise refuse only when they run, after the stages before them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from pydantic import BaseModel

from crucible import Experiment, InvalidPipeline, Registry
from crucible.engine import PlannedStage
from crucible.engine.plan import cached_plan
from crucible.files import FileAccess
from examples.service_views import NO_MASK, PathMask
from stages.report import chosen_paths, output_problems

__all__ = ["IMPORT_PATH_OPTIONS", "Problem", "pipeline_problems", "preflight", "stage_problems"]

_CLI_HINT: Final = "; allow it with --allow-read DIR or run(..., file_access=...)"
_CLI_WRITE_HINT: Final = "; allow it with --allow-write DIR or run(..., file_access=...)"
_REPORT: Final = "stages.report:report"

#: Options of built-in stages that name code to import when they are strings (the stage
#: imports it as it runs, which needs allow_imports), with the strings that are not imports.
IMPORT_PATH_OPTIONS: Final[Mapping[str, Mapping[str, frozenset[str]]]] = {
    "stages.guardrails:guardrails": {"adapter": frozenset()},
    "stages.data_checks:data_checks": {"checker": frozenset()},
    "stages.bench:bench": {"data_source": frozenset({"outputs", "metrics"})},
}


class Problem(BaseModel):
    """One thing wrong with a request: where (field, stage) and what."""

    message: str
    field: str | None = None
    stage: str | None = None
    stage_index: int | None = None
    source: str | None = None


def _prefix(source: str | None) -> str:
    """Fields are paths in the request body, or in the experiment file ``source``."""
    return "" if source is not None else "experiment."


def pipeline_problems(
    err: InvalidPipeline, *, source: str | None = None, paths: PathMask = NO_MASK
) -> list[Problem]:
    """An InvalidPipeline's problems; ``field`` is a path in the request body, or in ``source``;
    the service's folders appear by name (``paths``)."""
    prefix = _prefix(source)
    problems = []
    for p in err.problems:
        where = None
        if p.stage_index is not None:
            where = f"{prefix}pipeline[{p.stage_index}]" + (f".options.{p.path}" if p.path else "")
        problems.append(
            Problem(
                message=paths.text(_service_hint(p.message)) or "",
                field=where,
                stage=p.stage,
                stage_index=p.stage_index,
                source=source,
            )
        )
    return problems


def _service_hint(message: str) -> str:
    """File-access messages name the CLI's remedy; here the remedy is the service's setting."""
    return message.replace(
        _CLI_HINT, "; this service reads only inside its data folder (CRUCIBLE_SERVICE_DATA_DIR)"
    ).replace(
        _CLI_WRITE_HINT,
        "; this service writes only inside its reports folder (CRUCIBLE_SERVICE_REPORTS_DIR)",
    )


def stage_problems(
    experiment: Experiment,
    offered: Sequence[str],
    *,
    source: str | None = None,
    max_stages: int | None = None,
) -> list[Problem]:
    """A pipeline longer than ``max_stages``; entries naming a stage not on the allow-list, or
    a ``module:`` import."""
    prefix = _prefix(source)
    listed = ", ".join(sorted(offered)) or "(none)"
    problems = []
    if max_stages is not None and len(experiment.pipeline) > max_stages:
        message = (
            f"the pipeline has {len(experiment.pipeline):,} stages; this service runs at most "
            f"{max_stages:,} (ServiceSettings.max_stages, CRUCIBLE_SERVICE_MAX_STAGES)"
        )
        return [Problem(message=message, field=f"{prefix}pipeline", source=source)]
    for i, sd in enumerate(experiment.pipeline):
        where = f"{prefix}pipeline[{i}]"
        if sd.module is not None:
            message = (
                f"stage {sd.name!r} names module {sd.module!r}; this service never imports code "
                f"named in a request; it offers: {listed}"
            )
            problems.append(
                Problem(
                    message=message,
                    field=f"{where}.module",
                    stage=sd.name,
                    stage_index=i,
                    source=source,
                )
            )
        elif sd.name not in offered:
            message = (
                f"unknown stage {sd.name!r}: this service offers only {listed} "
                "(ServiceSettings.stages, CRUCIBLE_SERVICE_STAGES)"
            )
            problems.append(
                Problem(message=message, field=where, stage=sd.name, stage_index=i, source=source)
            )
    return problems


def import_problems(planned: Sequence[PlannedStage], *, source: str | None = None) -> list[Problem]:
    """Options naming code to import (``guardrails.adapter: "os:system"``): never allowed."""
    problems = []
    for p in planned:
        names = IMPORT_PATH_OPTIONS.get(p.spec.origin) if p.spec is not None else None
        for option, words in (names or {}).items():
            value = getattr(p.options, option, None)
            if isinstance(value, str) and value not in words:
                message = (
                    f"option {option!r}: {value!r} is an import path; this service never imports "
                    "code named in a request"
                )
                field = f"{_prefix(source)}pipeline[{p.index}].options.{option}"
                problems.append(
                    Problem(
                        message=message,
                        field=field,
                        stage=p.name,
                        stage_index=p.index,
                        source=source,
                    )
                )
    return problems


def report_problems(
    experiment: Experiment,
    planned: Sequence[PlannedStage],
    run_id: str,
    *,
    source: str | None = None,
) -> list[Problem]:
    """Outputs a ``report`` stage of the pipeline would refuse (a path outside its folder, an
    unknown format or sink, two with one name), named without the service's folders."""
    specs = list(experiment.outputs or ())
    problems: list[Problem] = []
    for p in planned:
        if not specs or p.spec is None or p.spec.origin != _REPORT:
            continue
        out_dir = p.options.out_dir  # validated: resolved, inside the reports folder
        for i, path in chosen_paths(experiment.id, run_id, specs, out_dir):
            if path.exists() or path.is_symlink():  # another run's report: never overwritten
                problems.append(Problem(
                    message="a report already exists at this path; this service never "
                    "overwrites one (leave options.path out for a name of the run's own)",
                    field=f"{_prefix(source)}outputs[{i}].options.path",
                    stage=p.name, stage_index=p.index, source=source,
                ))  # fmt: skip
        for bad in output_problems(experiment.id, run_id, specs, out_dir, show_paths=False):
            field = f"{_prefix(source)}outputs[{bad.spec_index}].{bad.field}"
            problems.append(
                Problem(
                    message=bad.message,
                    field=field,
                    stage=p.name,
                    stage_index=p.index,
                    source=source,
                )
            )
    return problems


def preflight(
    experiment: Experiment,
    registry: Registry,
    access: FileAccess,
    run_id: str,
    *,
    source: str | None = None,
    paths: PathMask = NO_MASK,
) -> list[Problem]:
    """Every reason not to run ``experiment`` (none: it may run).

    The plan is the one ``crucible.run`` will use (the same cache entry), so checking it here
    costs a run nothing.
    """
    try:
        planned = cached_plan(
            experiment, registry, validate_options="error", allow_imports=False, file_access=access
        )
    except InvalidPipeline as err:
        return pipeline_problems(err, source=source, paths=paths)
    return import_problems(planned, source=source) + report_problems(
        experiment, planned, run_id, source=source
    )
