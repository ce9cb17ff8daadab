"""``--set`` overrides: parsing YAML values, applying them to every matching entry, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from crucible import CrucibleError, Experiment, ExperimentFileError, StageDef
from crucible.errors import OverrideError
from crucible.experiment import Override, apply_overrides, load_with_overrides, parse_override


def test_values_are_read_as_yaml() -> None:
    assert parse_override("bench.alpha=0.01") == Override(
        "bench.alpha=0.01", "bench", ("alpha",), 0.01
    )
    assert parse_override("a.fields=[input, output]").value == ["input", "output"]
    assert parse_override("a.opts={k: 1}").value == {"k": 1}
    assert parse_override("a.flag=true").value is True
    assert parse_override("a.label=from cli").value == "from cli"
    assert parse_override("a.empty=").value == ""
    nested = parse_override(" a.deep . er = 3")
    assert (nested.stage, nested.path, nested.value) == ("a", ("deep", "er"), 3)


@pytest.mark.parametrize("raw", ["a.count", "count=3", ".x=1", "a.=1", "a.b..c=1"])
def test_malformed_overrides_raise_override_error(raw: str) -> None:
    with pytest.raises(OverrideError, match=r"expected STAGE\.OPTION=VALUE") as info:
        parse_override(raw)
    assert isinstance(info.value, CrucibleError)
    assert repr(raw) in str(info.value)


def test_unreadable_yaml_value_is_named() -> None:
    with pytest.raises(OverrideError, match=r"cannot read '\[1, 2' as a YAML value"):
        parse_override("a.x=[1, 2")


def experiment() -> Experiment:
    return Experiment(
        id="e",
        pipeline=[
            StageDef(name="a", options={"keep": 1, "nested": {"old": True}}),
            StageDef(name="b"),
            StageDef(name="a"),
        ],
    )


def test_every_entry_with_the_name_is_set_and_others_are_untouched() -> None:
    base = experiment()
    out = apply_overrides(
        base,
        [parse_override("a.nested.new=2"), parse_override("a.fresh.deep=x")],
        source="e.yaml",
    )
    first, second, third = out.pipeline
    assert first.options == {"keep": 1, "nested": {"old": True, "new": 2}, "fresh": {"deep": "x"}}
    assert second.options is None
    assert third.options == {"nested": {"new": 2}, "fresh": {"deep": "x"}}
    assert base.pipeline[0].options == {"keep": 1, "nested": {"old": True}}  # input unchanged
    assert apply_overrides(base, [], source="e.yaml") is base


def test_unknown_stage_and_non_mapping_path_raise() -> None:
    with pytest.raises(OverrideError, match=r"no stage named 'zz' \(its stages: a, b\)"):
        apply_overrides(experiment(), [parse_override("zz.x=1")], source="e.yaml")
    with pytest.raises(OverrideError, match="option 'keep' is not a mapping"):
        apply_overrides(experiment(), [parse_override("a.keep.x=1")], source="e.yaml")


def test_load_with_overrides_reads_the_file_then_applies(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("id: e\npipeline:\n  - name: a\n    options: {count: 1}\n", encoding="utf-8")
    assert load_with_overrides(path, ["a.count=3"]).pipeline[0].options == {"count": 3}
    assert load_with_overrides(path, []).pipeline[0].options == {"count": 1}
    with pytest.raises(OverrideError):  # a bad --set is refused before the file is read
        load_with_overrides(tmp_path / "absent.yaml", ["oops"])
    with pytest.raises(ExperimentFileError, match=r"absent\.yaml"):
        load_with_overrides(tmp_path / "absent.yaml", ["a.count=3"])
