"""Sweeps: the cartesian product of an experiment's ``matrix`` as experiment variants."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from crucible.errors import CrucibleError
from crucible.experiment.models import Experiment

#: Most combinations of one stage's matrix options that :func:`stage_sweeps` checks together;
#: beyond it each option's values are checked on their own (with the others at their first).
MAX_COMBINATIONS = 10_000


def check_matrix(experiment: Experiment) -> None:
    """Raise CrucibleError when a matrix key names a stage the pipeline does not have."""
    names = {sd.name for sd in experiment.pipeline}
    missing = sorted({k.split(".", 1)[0] for k in experiment.matrix or {}} - names)
    if missing:
        raise CrucibleError(
            f"{experiment.id}: matrix names stages not in the pipeline: {', '.join(missing)}"
        )


def matrix_points(experiment: Experiment) -> list[tuple[Experiment, dict[str, Any]]]:
    """One (variant, point) per combination of ``experiment.matrix``; itself when there is none.

    ``matrix: {"bench.alpha": [0.01, 0.05], "bench.tests": [[ttest], [welch]]}`` gives four
    variants; each sets the options on every pipeline stage with that name.
    """
    if not experiment.matrix:
        return [(experiment, {})]
    check_matrix(experiment)
    keys = list(experiment.matrix)
    split = [key.split(".", 1) for key in keys]  # (stage name, option) of each key
    out: list[tuple[Experiment, dict[str, Any]]] = []
    for values in itertools.product(*(experiment.matrix[k] for k in keys)):
        point = dict(zip(keys, values, strict=True))
        pipeline = []
        for sd in experiment.pipeline:
            varied = {
                option: value
                for (stage_name, option), value in zip(split, values, strict=True)
                if stage_name == sd.name
            }
            # A stage the sweep does not vary stays the same object in every variant, so the
            # engine plans it once for the whole sweep (crucible.engine.plan).
            options = {**(sd.options or {}), **varied}
            pipeline.append(sd.model_copy(update={"options": options}) if varied else sd)
        out.append((experiment.model_copy(update={"pipeline": pipeline, "matrix": None}), point))
    return out


@dataclass(frozen=True, slots=True)
class StageSweep:
    """The matrix points that decide one stage's options.

    ``variants`` are real points of the sweep: every combination of the keys naming ``stage``
    (``together``), or past ``MAX_COMBINATIONS`` each key's values on their own, every other
    key at its first value. Each point holds only ``keys``. ``combinations`` counts them all.
    """

    stage: str
    keys: tuple[str, ...]
    variants: list[tuple[Experiment, dict[str, Any]]]
    combinations: int
    together: bool


def stage_sweeps(experiment: Experiment, *, limit: int = MAX_COMBINATIONS) -> list[StageSweep]:
    """Per stage the matrix varies, the points to check its options at (none without a matrix).

    A stage's options are validated on their own, so checking each stage's combinations covers
    every point of the full product with far fewer plans.
    """
    matrix = experiment.matrix or {}
    check_matrix(experiment)
    by_stage: dict[str, list[str]] = {}
    for key in matrix:
        by_stage.setdefault(key.split(".", 1)[0], []).append(key)
    sweeps: list[StageSweep] = []
    for name, keys in by_stage.items():
        total = math.prod(len(matrix[k]) for k in keys)
        together = total <= limit
        grids = [set(keys)] if together else [{k} for k in keys]
        variants: list[tuple[Experiment, dict[str, Any]]] = []
        for n, chosen in enumerate(grids):
            # past the limit, key n > 0 skips its first value: the first point is checked once
            grid = {k: matrix[k][int(n > 0) :] if k in chosen else matrix[k][:1] for k in matrix}
            if not all(grid.values()):
                continue
            sub = experiment.model_copy(update={"matrix": grid})
            variants += [(v, {k: p[k] for k in keys}) for v, p in matrix_points(sub)]
        sweeps.append(StageSweep(name, tuple(keys), variants, total, together))
    return sweeps
