"""Bounds on a stage's retries and backoff: refused by the model, the loader and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from crucible import Experiment, ExperimentFileError, StageDef, run
from crucible.experiment import experiment_from_mapping
from crucible.experiment.models import MAX_RETRIES

REPO = Path(__file__).resolve().parents[2]


def test_retries_up_to_the_maximum_are_accepted() -> None:
    assert StageDef(name="flaky", retries=MAX_RETRIES).retries == MAX_RETRIES == 100


@pytest.mark.parametrize("retries", [MAX_RETRIES + 1, 1025, 10**30])
def test_more_retries_are_refused_naming_the_stage_and_the_field(retries: int) -> None:
    with pytest.raises(ValidationError) as caught:
        StageDef(name="flaky", retries=retries)
    (error,) = caught.value.errors()
    assert error["loc"] == ("retries",)
    assert error["msg"] == (
        f"stage 'flaky': retries={retries} is more than the maximum of {MAX_RETRIES}"
    )


def test_a_document_with_too_many_retries_names_file_index_stage_and_field() -> None:
    data = {"id": "x", "pipeline": [{"name": "ok"}, {"name": "flaky", "retries": 1025}]}
    with pytest.raises(ExperimentFileError) as caught:
        experiment_from_mapping(data, source="exp.yaml")
    assert str(caught.value) == (
        "exp.yaml: pipeline[1].retries: stage 'flaky': retries=1025 is more than the maximum of 100"
    )


@pytest.mark.parametrize("backoff", [float("inf"), float("nan"), -1.0])
def test_retry_backoff_must_be_a_finite_non_negative_number(backoff: float) -> None:
    with pytest.raises(ValidationError) as caught:
        StageDef(name="flaky", retry_backoff=backoff)
    assert caught.value.errors()[0]["loc"] == ("retry_backoff",)
    assert StageDef(name="flaky", retry_backoff=1e308).retry_backoff == 1e308  # capped when used


async def test_run_refuses_a_mapping_with_too_many_retries_before_anything_runs() -> None:
    with pytest.raises(ExperimentFileError) as caught:
        await run({"id": "x", "pipeline": [{"name": "flaky", "retries": 5000}]})
    assert str(caught.value) == (
        "<experiment>: pipeline[0].retries: stage 'flaky': retries=5000 is more than the maximum"
        " of 100"
    )


@pytest.mark.parametrize("command", ["validate", "run"])
def test_the_cli_exits_2_naming_the_stage_and_field(tmp_path: Path, command: str) -> None:
    (tmp_path / "many.yaml").write_text(
        "id: many\npipeline:\n  - name: validate\n  - name: bench\n    retries: 1025\n"
        "    retry_backoff: 0\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CRUCIBLE_"))}
    done = subprocess.run(
        [sys.executable, "-m", "crucible", command, "many.yaml"],
        cwd=tmp_path,
        env=env | {"PYTHONPATH": str(REPO), "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    expected = "many.yaml: pipeline[1].retries: stage 'bench': retries=1025 is more than the"
    assert f"error: {expected}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / ".crucible").exists()  # nothing stored, nothing ran


def test_an_experiment_built_in_python_is_refused_too() -> None:
    with pytest.raises(ValidationError, match=r"stage 'bench': retries=101"):
        Experiment(id="x", pipeline=[{"name": "bench", "retries": 101}])  # type: ignore[list-item]
