"""diff_runs: configuration by option path, versions, status and every metric with b - a."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from crucible import Experiment, StageDef
from crucible.compare import Change, MetricRow, diff_runs, flatten_config
from crucible.provenance import experiment_config
from crucible.store import RunInfo

T0 = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)


def info(run_id: str, experiment: Experiment | None, **fields: Any) -> RunInfo:
    base: dict[str, Any] = {
        "experiment_id": "e", "status": "completed", "started_at": T0, "finished_at": T0,
        "trace_id": None, "batch_id": None, "metrics": {}, "outputs": [], "assigns": {},
        "failure_stage": None, "failure_message": None, "error_type": None, "owner_pid": None,
        "owner_host": None,
        "config": None if experiment is None else experiment_config(experiment),
    }  # fmt: skip
    return RunInfo(run_id=run_id, **{**base, **fields})


A = Experiment(
    id="e",
    pipeline=[
        StageDef(name="load", options={"rows": 10, "source": {"path": "a.csv", "sep": ","}}),
        StageDef(name="bench", options={"alpha": 0.05, "tests": ["ttest"]}, timeout=5),
        StageDef(name="report"),
        StageDef(name="report", options={"format": "md"}),
    ],
    tags=["x"],
)
B = Experiment(
    id="e",
    pipeline=[
        StageDef(name="load", options={"rows": 10, "source": {"path": "b.csv", "sep": ","}}),
        StageDef(name="bench", options={"alpha": 0.01, "tests": ["ttest", "welch"]}, timeout=9),
        StageDef(name="report"),
        StageDef(name="report", options={"format": "html", "extra": True}),
    ],
    tags=["x"],
    description="tuned",
)


def test_configuration_differences_by_option_path() -> None:
    diff = diff_runs(info("a", A), info("b", B))
    assert diff.config == (
        Change("load.source.path", "a.csv", "b.csv", "changed"),
        Change("bench.alpha", 0.05, 0.01, "changed"),
        Change("bench.tests", ["ttest"], ["ttest", "welch"], "changed"),
        Change("pipeline[bench].timeout", 5, 9, "changed"),
        Change("pipeline[3].options.format", "md", "html", "changed"),
        Change("description", None, "tuned", "changed"),
        Change("pipeline[3].options.extra", None, True, "added"),  # keys only in b come last
    )


def test_same_configuration_and_a_changed_pipeline_shape() -> None:
    assert diff_runs(info("a", A), info("b", A)).config == ()
    shorter = A.model_copy(update={"pipeline": A.pipeline[:2]})
    changes = {c.path: c for c in diff_runs(info("a", A), info("b", shorter)).config}
    assert changes["pipeline"] == Change(
        "pipeline", ["load", "bench", "report", "report"], ["load", "bench"], "changed"
    )
    assert changes["pipeline[3].options.format"] == Change(
        "pipeline[3].options.format", "md", None, "removed"
    )


def test_a_stage_named_like_an_experiment_field_keeps_its_index_path() -> None:
    exp = Experiment(id="e", pipeline=[StageDef(name="dataset", options={"name": "x"})])
    flat = flatten_config(experiment_config(exp))
    assert flat["pipeline[0].options.name"] == "x" and "dataset.name" not in flat


def test_versions_and_git_and_status() -> None:
    a = info("a", A, versions={"python": "3.11.7", "crucible-pipelines": "0.1.0", "lib": "1"},
             git_commit="1" * 40, git_dirty=False, status="failed")  # fmt: skip
    b = info("b", A, versions={"python": "3.11.7", "crucible-pipelines": "0.2.0"},
             git_commit="2" * 40, git_dirty=True)  # fmt: skip
    diff = diff_runs(a, b)
    assert diff.versions == (
        Change("crucible-pipelines", "0.1.0", "0.2.0", "changed"),
        Change("lib", "1", None, "removed"),
        Change("git.commit", "1" * 40, "2" * 40, "changed"),
        Change("git.dirty", False, True, "changed"),
    )
    assert (diff.status_a, diff.status_b) == ("failed", "completed")


def test_every_metric_side_by_side_with_the_difference() -> None:
    a = info("a", A, metrics={"acc": 0.9, "n": 10, "bench": {"p": 0.2, "name": "t"},
                              "only_a": 1, "flag": True})  # fmt: skip
    b = info("b", B, metrics={"acc": 0.95, "n": 10, "bench": {"p": 0.05, "name": "w"},
                              "flag": False, "only_b": [1]})  # fmt: skip
    rows = {m.name: m for m in diff_runs(a, b).metrics}
    assert list(rows) == ["acc", "n", "bench.p", "bench.name", "only_a", "flag", "only_b"]
    assert rows["acc"].change == "changed" and rows["acc"].difference == pytest.approx(0.05)
    assert rows["n"] == MetricRow("n", 10, 10, "same", 0)
    assert rows["bench.p"].difference == pytest.approx(-0.15)
    assert rows["bench.name"] == MetricRow("bench.name", "t", "w", "changed", None)
    assert rows["only_a"] == MetricRow("only_a", 1, None, "removed", None)
    assert rows["only_b"] == MetricRow("only_b", None, [1], "added", None)
    assert rows["flag"].difference is None  # booleans are not numbers to subtract


def test_to_dict_is_the_documented_json_shape() -> None:
    a = info("a", A, metrics={"acc": 0.5}, versions={"python": "3.11.7"})
    b = info("b", B, metrics={"acc": 0.75}, versions={"python": "3.12.1"}, status="failed")
    data = json.loads(json.dumps(diff_runs(a, b).to_dict()))
    assert list(data) == ["a", "b", "status", "config", "versions", "metrics"]
    assert (data["a"], data["b"]) == ("a", "b")
    assert data["status"] == {"a": "completed", "b": "failed", "same": False}
    assert data["config"][0] == {
        "path": "load.source.path", "a": "a.csv", "b": "b.csv", "change": "changed",
    }  # fmt: skip
    assert data["versions"] == [
        {"path": "python", "a": "3.11.7", "b": "3.12.1", "change": "changed"}
    ]
    assert data["metrics"] == [
        {"name": "acc", "a": 0.5, "b": 0.75, "change": "changed", "difference": 0.25}
    ]


def test_runs_stored_without_configuration_compare_their_metrics() -> None:
    diff = diff_runs(info("a", None, metrics={"x": 1}), info("b", None, metrics={"x": 3}))
    assert diff.config == () and diff.versions == ()
    assert diff.metrics == (MetricRow("x", 1, 3, "changed", 2),)
