"""stage_sweeps: each varied stage's combinations, as real points of the full matrix."""

from __future__ import annotations

import json
from typing import Any

import pytest

from crucible.errors import CrucibleError
from crucible.experiment import Experiment, StageDef, matrix_points
from crucible.experiment.matrix import stage_sweeps


def sweep_exp(matrix: dict[str, list[Any]]) -> Experiment:
    return Experiment(
        id="sw",
        pipeline=[StageDef(name="a", options={"keep": 1}), StageDef(name="b"), StageDef(name="c")],
        matrix=matrix,
    )


def options_of(variant: Experiment) -> str:
    return json.dumps([sd.options for sd in variant.pipeline], sort_keys=True)


MATRIX = {"a.x": [1, 2, 3], "b.z": [1, 2, 3, 4], "a.y": ["p", "q"]}


def test_each_stage_gets_its_own_combinations_and_every_variant_is_a_real_point() -> None:
    exp = sweep_exp(MATRIX)
    full = {options_of(v) for v, _ in matrix_points(exp)}
    sweeps = stage_sweeps(exp)
    assert [(s.stage, s.keys, s.combinations, s.together) for s in sweeps] == [
        ("a", ("a.x", "a.y"), 6, True),
        ("b", ("b.z",), 4, True),
    ]
    a, b = sweeps
    assert len(full) == 24 and len(a.variants) + len(b.variants) == 10  # not 24 plans
    for sweep in sweeps:
        assert all(options_of(v) in full for v, _ in sweep.variants)
        assert all(set(point) == set(sweep.keys) for _, point in sweep.variants)
        assert all(v.matrix is None for v, _ in sweep.variants)
    assert [p for _, p in a.variants] == [
        {"a.x": x, "a.y": y} for x in (1, 2, 3) for y in ("p", "q")
    ]
    assert {json.dumps(v.pipeline[0].options, sort_keys=True) for v, _ in a.variants} == {
        json.dumps({"keep": 1, "x": x, "y": y}, sort_keys=True) for x in (1, 2, 3) for y in "pq"
    }
    assert stage_sweeps(sweep_exp({})) == []


def test_past_the_limit_each_option_is_checked_alone_with_the_others_at_their_first() -> None:
    [a, _] = stage_sweeps(sweep_exp(MATRIX), limit=5)
    assert (a.combinations, a.together) == (6, False)
    assert [p for _, p in a.variants] == [
        {"a.x": 1, "a.y": "p"}, {"a.x": 2, "a.y": "p"}, {"a.x": 3, "a.y": "p"},
        {"a.x": 1, "a.y": "q"},
    ]  # fmt: skip


def test_a_key_naming_no_stage_is_refused_as_matrix_points_refuses_it() -> None:
    exp = sweep_exp({"a.x": [1], "nope.x": [1]})
    with pytest.raises(CrucibleError) as swept:
        stage_sweeps(exp)
    with pytest.raises(CrucibleError) as expanded:
        matrix_points(exp)
    assert str(swept.value) == str(expanded.value)
    assert str(swept.value) == "sw: matrix names stages not in the pipeline: nope"
