"""Sweeps: the cartesian product of an experiment's ``matrix`` as experiment variants."""

from __future__ import annotations

import itertools
from typing import Any

from crucible.errors import CrucibleError
from crucible.experiment.models import Experiment


def matrix_points(experiment: Experiment) -> list[tuple[Experiment, dict[str, Any]]]:
    """One (variant, point) per combination of ``experiment.matrix``; itself when there is none.

    ``matrix: {"bench.alpha": [0.01, 0.05], "bench.tests": [[ttest], [welch]]}`` gives four
    variants; each sets the options on every pipeline stage with that name.
    """
    if not experiment.matrix:
        return [(experiment, {})]
    keys = list(experiment.matrix)
    split = [key.split(".", 1) for key in keys]  # (stage name, option) of each key
    names = {sd.name for sd in experiment.pipeline}
    missing = sorted({k.split(".", 1)[0] for k in keys} - names)
    if missing:
        raise CrucibleError(
            f"{experiment.id}: matrix names stages not in the pipeline: {', '.join(missing)}"
        )
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
