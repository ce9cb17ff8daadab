"""Experiment models, defaults, file loading (YAML/JSON/TOML) and clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from crucible import Experiment, ExperimentFileError, OutputSpec, StageDef, load_experiment
from crucible.experiment import BackendRef, DatasetRef, Reliability, Stats


def test_minimal_experiment_is_valid() -> None:
    exp = Experiment(id="exp1")
    assert exp.pipeline == [] and exp.backend is None and exp.outputs is None


def test_original_defaults() -> None:
    sd = StageDef(name="bench")
    assert (sd.module, sd.options, sd.enabled) == (None, None, True)
    assert (sd.timeout, sd.retries, sd.retry_backoff) == (None, 0, 0.5)
    out = OutputSpec(name="report")
    assert (out.formats, out.sink, out.options) == (["markdown"], "file", None)
    assert BackendRef(id="b").profile == "default"
    ds = DatasetRef(name="d")
    assert (ds.provider, ds.split) == ("crucible_datasets", "train")
    st = Stats()
    assert (st.tests, st.alpha) == (["ttest", "bootstrap"], 0.05)


def full_experiment() -> Experiment:
    return Experiment(
        id="full",
        description="everything set",
        owner="alice",
        tags=["a", "b"],
        metadata={"k": [1, 2]},
        backend=BackendRef(id="gpt", profile="fast", fallback=BackendRef(id="small")),
        dataset=DatasetRef(name="Custom Dataset 2024", split="test", schema={"x": "int"}),
        reliability=Reliability(stats=Stats(alpha=0.01, tests=["welch"], options={"a": 1})),
        pipeline=[
            StageDef(name="validate", options={"strict": True}),
            StageDef(name="bench", enabled=False, timeout=2.5, retries=2, retry_backoff=0.1),
            StageDef(name="custom", module="pkg.mod:Stage"),
        ],
        outputs=[OutputSpec(name="r", formats=["markdown", "json"], sink="stdout")],
        matrix={"bench.alpha": [0.01, 0.05]},
    )


def test_json_round_trip_preserves_every_field() -> None:
    exp = full_experiment()
    again = Experiment.model_validate_json(exp.to_json())
    assert again == exp
    assert again.dataset is not None and again.dataset.schema_ == {"x": "int"}


def test_models_are_frozen() -> None:
    exp = Experiment(id="e")
    with pytest.raises(Exception, match="frozen"):
        exp.id = "f"  # type: ignore[misc]


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


YAML = """
id: quick
pipeline:
  - name: validate
    options: {strict: true}
  - name: bench
    timeout: 3
    retries: 1
"""


def test_load_yaml_json_toml_agree(tmp_path: Path) -> None:
    y = load_experiment(write(tmp_path, "e.yaml", YAML))
    j = load_experiment(write(tmp_path, "e.json", y.to_json()))
    t = load_experiment(
        write(
            tmp_path,
            "e.toml",
            'id = "quick"\n[[pipeline]]\nname = "validate"\noptions = {strict = true}\n'
            '[[pipeline]]\nname = "bench"\ntimeout = 3\nretries = 1\n',
        )
    )
    assert y == j == t
    assert y.pipeline[1].timeout == 3.0


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "quickstart.yaml",
            "id: q\npipeline:\n  - name: a\n  - name: b\n  - name: c\n    timeout: soon\n",
            "quickstart.yaml: pipeline[2].timeout: Input should be a valid number",
        ),
        ("m.yaml", "pipeline: []\n", "m.yaml: id: Field required"),
        (
            "t.yaml",
            "id: x\npipeline:\n  - options: {}\n",
            "t.yaml: pipeline[0].name: Field required",
        ),
        ("u.yaml", "id: x\npipelin: []\n", "u.yaml: pipelin: Extra inputs are not permitted"),
        ("r.yaml", "id: x\npipeline:\n  - name: a\n    retries: -1\n", "pipeline[0].retries"),
        ("bad.yaml", "id: [unclosed\n", "bad.yaml: line 2"),
        ("list.yaml", "- a\n- b\n", "list.yaml: (top level): expected a mapping, got list"),
        ("bad.json", '{"id": "x",}', "bad.json: line 1, column 12: invalid JSON"),
        ("bad.toml", "id = \n", "bad.toml: invalid TOML"),
        ("e.txt", "id: x", "unsupported file type '.txt'"),
    ],
)
def test_bad_files_name_the_file_and_field(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    with pytest.raises(ExperimentFileError) as info:
        load_experiment(write(tmp_path, name, text))
    assert expected in str(info.value)


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    text = "id: x\npipeline:\n  - name: a\n    timeout: x\n  - name: b\n    enabled: maybe\n"
    with pytest.raises(ExperimentFileError) as info:
        load_experiment(write(tmp_path, "two.yaml", text))
    assert len(info.value.errors) == 2
    assert "pipeline[0].timeout" in str(info.value) and "pipeline[1].enabled" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ExperimentFileError, match=r"nope\.yaml: file not found"):
        load_experiment(tmp_path / "nope.yaml")


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    text = "id: !!python/object/apply:os.system ['echo pwned']\n"
    with pytest.raises(ExperimentFileError, match="invalid YAML"):
        load_experiment(write(tmp_path, "evil.yaml", text))


def test_matrix_keys_must_name_stage_and_option(tmp_path: Path) -> None:
    with pytest.raises(ExperimentFileError, match="matrix"):
        load_experiment(write(tmp_path, "m.yaml", "id: x\nmatrix:\n  alpha: [1, 2]\n"))
