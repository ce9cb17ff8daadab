"""Pre-flight for ``run``, ``batch`` and ``validate``: every stage resolved and validated (at
every matrix point) before anything runs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from crucible.cli.app import CliError

if TYPE_CHECKING:
    from crucible.batch import BatchItem
    from crucible.engine import PlannedStage
    from crucible.errors import Problem
    from crucible.experiment import Experiment
    from crucible.experiment.matrix import StageSweep
    from crucible.files import FileAccess
    from crucible.registry import Registry

#: Matrix points a problem of ``crucible validate`` lists before saying how many more have it.
SHOWN_POINTS = 10


def file_access_for(
    file: Path, allow_read: Sequence[Path] | None, allow_write: Sequence[Path] | None
) -> FileAccess:
    """Where a run of ``file`` may read and write: the defaults plus ``--allow-read/-write``."""
    from crucible.files import FileAccess

    return FileAccess.default(
        experiment_dir=file.parent, allow_read=allow_read or (), allow_write=allow_write or ()
    )


def imports_hint(experiment: Experiment, *, allow_imports: bool) -> list[str]:
    """The ``--allow-imports`` hint, when the experiment names code to import and may not."""
    if allow_imports or not any(sd.module and sd.enabled for sd in experiment.pipeline):
        return []
    return [
        "hint: this experiment names code to import (module: ...); "
        "pass --allow-imports if you trust it"
    ]


def preflight(
    experiment: Experiment,
    registry: Registry,
    *,
    allow_imports: bool,
    source: str,
    access: FileAccess,
    restored: int = 0,
) -> list[PlannedStage]:
    """Resolve and validate every stage (the first ``restored`` as a resume restores them); a
    bad pipeline becomes a CliError listing problems."""
    from crucible.engine import plan
    from crucible.errors import InvalidPipeline
    from crucible.files import using_access

    try:
        with using_access(access):
            return plan(experiment, registry, allow_imports=allow_imports, restored=restored)
    except InvalidPipeline as err:
        n = len(err.problems)
        lines = _hidden([experiment], [f"{source}: {p}" for p in err.problems])
        lines.extend(imports_hint(experiment, allow_imports=allow_imports))
        raise CliError(
            f"{source}: invalid pipeline ({n} problem{'s' if n != 1 else ''}); nothing was run",
            lines=lines,
        ) from None


def point_of(item: BatchItem) -> Mapping[str, Any]:
    """The matrix point of a batch item (empty when the experiment has no matrix)."""
    point = (item.assigns or {}).get("matrix")
    return point if isinstance(point, Mapping) else {}


@contextmanager
def matrix_checked(source: str) -> Iterator[None]:
    """A bad matrix (a key naming no pipeline stage) as a CliError naming the file."""
    from crucible.errors import CrucibleError

    try:
        yield
    except CrucibleError as err:
        raise CliError(f"{source}: {err}; nothing was run") from None


def warn_matrix_overrides(experiment: Experiment, overrides: Sequence[str]) -> None:
    """Warn about each ``--set`` that a matrix key of the same name overrides at every point."""
    from crucible.cli.output import warn
    from crucible.experiment import parse_override

    for raw in overrides:
        key = raw.partition("=")[0].strip()
        if key in (experiment.matrix or {}):
            shown = parse_override(raw).shown
            warn(f"warning: --set {shown!r} is overridden by the matrix key {key!r}")


def expand_file_matrix(experiment: Experiment, *, source: str) -> list[BatchItem]:
    """The experiment's matrix as batch items; a bad matrix is a CliError naming the file."""
    from crucible.batch import expand_matrix

    with matrix_checked(source):
        return expand_matrix(experiment)


def _problems(
    experiment: Experiment, registry: Registry, *, allow_imports: bool, access: FileAccess
) -> tuple[tuple[Problem, ...], frozenset[str]]:
    """What pre-flight finds wrong with one variant (nothing: its secret values instead)."""
    from crucible.engine import plan
    from crucible.engine.plan import plan_secrets
    from crucible.errors import InvalidPipeline
    from crucible.files import using_access

    try:
        with using_access(access):
            return (), plan_secrets(plan(experiment, registry, allow_imports=allow_imports))
    except InvalidPipeline as err:
        return err.problems, frozenset()


def preflight_batch(
    items: Sequence[BatchItem],
    registry: Registry,
    *,
    allow_imports: bool,
    source: str,
    access: FileAccess,
) -> frozenset[str]:
    """Resolve and validate every variant before any runs; problems name their matrix point.

    Returns the secret values of every variant's options (to scrub from what is printed).
    """
    from crucible.cli.batch_summary import point_text

    found: dict[str, list[str]] = {}
    bad_variants = 0
    secrets: set[str] = set()
    for item in items:
        experiment = cast("Experiment", item.experiment)
        problems, found_secrets = _problems(
            experiment, registry, allow_imports=allow_imports, access=access
        )
        secrets |= found_secrets
        bad_variants += bool(problems)
        where = point_text(point_of(item))
        for problem in problems:
            found.setdefault(str(problem), []).append(where)
    if not found:
        return frozenset(secrets)
    lines: list[str] = []
    for text, points in found.items():
        if len(items) > 1 and len(points) == len(items):
            lines.append(f"{source} [every matrix point]: {text}")
        else:
            lines.extend(f"{source} [{p}]: {text}" if p else f"{source}: {text}" for p in points)
    lines = _hidden([cast("Experiment", i.experiment) for i in items], lines)
    lines.extend(imports_hint(cast("Experiment", items[0].experiment), allow_imports=allow_imports))
    scope = f" in {bad_variants} of {len(items)} matrix points" if len(items) > 1 else ""
    raise CliError(f"{source}: invalid pipeline{scope}; nothing was run", lines=lines)


def preflight_matrix(
    experiment: Experiment,
    registry: Registry,
    *,
    allow_imports: bool,
    source: str,
    access: FileAccess,
) -> list[StageSweep]:
    """Pre-flight a sweep as ``crucible batch`` would, without planning the whole product.

    A stage's options validate on their own, so each stage is checked at every combination of
    its own matrix keys (``stage_sweeps``). A problem names those keys and values: only the
    values that cause it when one value does (``[bench.alpha=5]``). Raises CliError.
    """
    from crucible.experiment.matrix import stage_sweeps

    with matrix_checked(source):
        sweeps = stage_sweeps(experiment)
    varied = {s.stage for s in sweeps}
    fixed: dict[str, None] = {}  # problems of stages no matrix key varies: at every point
    lines: list[str] = []
    count = 0
    good = 1  # matrix points without a problem, when every sweep was checked together
    for sweep in sweeps:
        found: dict[str, list[Mapping[str, Any]]] = {}
        bad = 0
        for variant, point in sweep.variants:
            problems, _ = _problems(variant, registry, allow_imports=allow_imports, access=access)
            mine = [p for p in problems if p.stage == sweep.stage]
            fixed.update((str(p), None) for p in problems if p.stage not in varied)
            bad += bool(mine)
            for problem in mine:
                found.setdefault(str(problem), []).append(point)
        good *= sweep.combinations - bad
        count += len(found)
        for text, points in found.items():
            where = _where(points, sweep, experiment.matrix or {})
            lines += [f"{source} [{w}]: {text}" for w in where[:SHOWN_POINTS]]
            if (more := len(where) - SHOWN_POINTS) > 0:
                lines.append(f"{source}: and at {more:,} more matrix points: {text}")
    if not fixed and not count:
        return sweeps
    lines[:0] = [f"{source} [every matrix point]: {text}" for text in fixed]
    lines = _hidden([experiment], lines)
    lines.extend(imports_hint(experiment, allow_imports=allow_imports))
    if all(s.together for s in sweeps):
        total = _points(sweeps)
        scope = f" in {total - (0 if fixed else good):,} of {total:,} matrix points"
    else:
        n = count + len(fixed)
        scope = f" ({n} problem{'s' if n != 1 else ''})"
    raise CliError(f"{source}: invalid pipeline{scope}; nothing was run", lines=lines)


def _hidden(experiments: Sequence[Experiment], lines: list[str]) -> list[str]:
    """``lines`` without the secret values of ``experiments`` (matrix values under secret-looking
    keys among them): pre-flight prints before a command's scrubber knows its runs' secrets."""
    from crucible.scrub import Scrubber, definition_secrets

    hide = Scrubber(frozenset().union(*(definition_secrets(e) for e in experiments)))
    return [hide.text(line) for line in lines] if hide else lines


def _points(sweeps: Sequence[StageSweep]) -> int:
    """The points of the whole matrix: the product of every stage's combinations."""
    total = 1
    for sweep in sweeps:
        total *= sweep.combinations
    return total


def _where(
    points: Sequence[Mapping[str, Any]], sweep: StageSweep, matrix: Mapping[str, Sequence[Any]]
) -> list[str]:
    """Where one problem of ``sweep``'s stage occurs: its points, or the values causing it.

    When every combination holding ``key=value`` has the problem and such slices cover all its
    points, the slices are named (``bench.alpha=5``) instead of each combination.
    """
    from crucible.cli.batch_summary import point_text
    from crucible.cli.output import value_text

    if sweep.together and len(points) == sweep.combinations and len(points) > 1:
        return ["every matrix point"]
    if sweep.together and len(sweep.keys) > 1:
        slices: list[tuple[str, str]] = []
        for key in sweep.keys:
            texts = [value_text(v) for v in matrix[key]]
            if len(set(texts)) < 2:
                continue  # a key with one value says nothing about the cause
            per_value = sweep.combinations // len(texts)
            have = Counter(value_text(p[key]) for p in points)
            slices += [(key, t) for t, n in have.items() if n == texts.count(t) * per_value]
        if slices and all(any(value_text(p[k]) == t for k, t in slices) for p in points):
            return [f"{k}={t}" for k, t in slices]
    return [point_text(p) for p in points]
