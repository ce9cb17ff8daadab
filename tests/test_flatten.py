"""Flattening nested run data into the ``a.b`` keys every table and diff shows."""

from __future__ import annotations

from crucible import Experiment, OutputSpec, StageDef
from crucible.flatten import flatten, flatten_configuration, is_number


def test_flatten_nests_mappings_and_keeps_lists_and_empty_mappings_whole() -> None:
    data = {"bench": {"ttest": {"p": 0.02, "t": 2.5}, "groups": ["a", "b"]}, "n": 3, "empty": {}}
    assert flatten(data) == {
        "bench.ttest.p": 0.02,
        "bench.ttest.t": 2.5,
        "bench.groups": ["a", "b"],
        "n": 3,
        "empty": {},
    }


def test_is_number_excludes_booleans() -> None:
    assert [is_number(v) for v in (1, 2.5, True, "1", None)] == [True, True, False, False, False]


def test_configuration_keys_stages_by_name_like_set_and_matrix() -> None:
    exp = Experiment(
        id="e",
        pipeline=[
            StageDef(name="load", options={"path": "d.jsonl", "limit": None}),
            StageDef(name="bench", options={"alpha": 0.05, "tests": ["ttest"]}, retries=2),
            StageDef(name="bench", options={"alpha": 0.01}, enabled=False),
        ],
        outputs=[OutputSpec(name="summary", formats=["html"])],
    )
    flat = flatten_configuration(exp.model_dump(mode="json", by_alias=True))
    assert flat["pipeline"] == ["load", "bench", "bench"]
    assert flat["load.path"] == "d.jsonl"
    assert "load.limit" not in flat  # unset values are left out
    assert flat["bench#1.alpha"] == 0.05
    assert flat["bench#1.tests"] == ["ttest"]
    assert flat["bench#1:retries"] == 2
    assert flat["bench#2.alpha"] == 0.01
    assert flat["bench#2:enabled"] is False
    assert flat["outputs[0].formats"] == ["html"]
    assert flat["outputs[0].name"] == "summary"
    assert flat["id"] == "e"
    assert not any(k.startswith("backend") for k in flat)  # None fields are absent
