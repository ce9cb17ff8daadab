"""diff_runs and run_configuration: what `crucible ui` compare and `crucible runs diff` show."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

import crucible
from crucible import Experiment, StageDef
from crucible.compare import diff_runs, run_configuration
from crucible.store import ExperimentInfo, RunInfo, RunStore
from tests.ui.stages import REGISTRY, sweep_experiment

T0 = dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.UTC)


def info(run_id: str, metrics: dict[str, Any], status: str = "completed", **kw: Any) -> RunInfo:
    fields: dict[str, Any] = {
        "run_id": run_id,
        "experiment_id": "exp",
        "status": status,
        "started_at": T0,
        "finished_at": T0 + dt.timedelta(seconds=2),
        "trace_id": None,
        "batch_id": None,
        "metrics": metrics,
        "outputs": [],
        "assigns": {},
        "failure_stage": None,
        "failure_message": None,
        "error_type": None,
        "owner_pid": None,
        "owner_host": None,
    }
    fields.update(kw)
    return RunInfo(**fields)


def config(alpha: float, **extra: Any) -> dict[str, Any]:
    stage = {"name": "bench", "options": {"alpha": alpha, "tests": ["ttest"]}, "retries": 0}
    return {"id": "exp", "pipeline": [stage], **extra}


def test_two_runs_side_by_side_with_differences() -> None:
    a = info("a", {"bench": {"p": 0.04, "t": 2}, "label": "x", "only_a": 1, "flag": True})
    b = info(
        "b",
        {"bench": {"p": 0.01, "t": 2.0}, "label": "y", "flag": 1},
        status="failed",
        failure_stage="bench",
        failure_message="boom",
        error_type="ValueError",
    )
    diff = diff_runs([a, b], [config(0.05), config(0.01, description="second")])

    assert [r.run_id for r in diff.runs] == ["a", "b"]
    assert diff.status_differs
    assert diff.runs[1].failure == "stage bench: ValueError: boom"
    assert diff.runs[0].duration_s == 2.0
    # Only differing options, flattened the way --set names them.
    assert {r.key: dict(r.values) for r in diff.configuration} == {
        "bench.alpha": {"a": 0.05, "b": 0.01},
        "description": {"b": "second"},
    }
    rows = {r.key: r for r in diff.metrics}
    assert sorted(rows) == ["bench.p", "bench.t", "flag", "label", "only_a"]
    assert rows["bench.p"].differs
    assert rows["bench.p"].deltas["b"] == pytest.approx(-0.03)
    assert not rows["bench.t"].differs  # 2 and 2.0 are the same number
    assert rows["bench.t"].deltas == {"b": 0.0}
    assert rows["flag"].differs  # True is not the number 1
    assert rows["flag"].deltas == {}
    assert rows["label"].differs and rows["label"].deltas == {}
    assert rows["only_a"].differs and dict(rows["only_a"].values) == {"a": 1}


def test_every_delta_is_taken_against_the_first_run() -> None:
    runs = [info("r1", {"m": 1.0}), info("r2", {"m": 1.5}), info("r3", {"m": 0.5}), info("r4", {})]
    diff = diff_runs(runs, [config(0.05)] * 4)
    (row,) = diff.metrics
    assert dict(row.deltas) == {"r2": 0.5, "r3": -0.5}
    assert diff.configuration == ()
    assert not diff.status_differs


def test_to_dict_is_plain_json() -> None:
    diff = diff_runs([info("a", {"m": 1}), info("b", {"m": 3})], [config(0.1), config(0.2)])
    data = json.loads(json.dumps(diff.to_dict()))
    assert data["metrics"] == [
        {"key": "m", "values": {"a": 1, "b": 3}, "deltas": {"b": 2}, "differs": True}
    ]
    assert data["configuration"][0]["key"] == "bench.alpha"
    assert data["runs"][0]["started_at"] == T0.isoformat()


@pytest.mark.parametrize(
    ("ids", "configs"),
    [(["a"], 1), (["a", "a"], 2), (["a", "b"], 1)],
)
def test_bad_input_is_refused(ids: list[str], configs: int) -> None:
    with pytest.raises(ValueError):
        diff_runs([info(i, {}) for i in ids], [config(0.1)] * configs)


def test_run_configuration_applies_the_runs_matrix_point() -> None:
    exp = ExperimentInfo(
        id="exp",
        definition=config(0.3),
        owner=None,
        tags=[],
        metadata={},
        created_at=T0,
        updated_at=T0,
    )
    run = info("a", {}, assigns={"matrix": {"bench.alpha": 0.1, "other.x": 1}})
    assert run_configuration(run, exp)["pipeline"][0]["options"] == {
        "alpha": 0.1,
        "tests": ["ttest"],
    }
    assert exp.definition["pipeline"][0]["options"]["alpha"] == 0.3  # not changed in place
    assert run_configuration(info("b", {}), None) == {"id": "exp"}


async def test_sweep_points_from_a_real_store_differ_in_their_matrix_option(
    tmp_path: Path,
) -> None:
    sweep = sweep_experiment().model_copy(update={"matrix": {"ui_score.alpha": [0.1, 0.3]}})
    async with RunStore(tmp_path / "runs.db") as store:
        outcomes = await crucible.run_batch(
            crucible.expand_matrix(sweep), store=store, registry=REGISTRY
        )
        await crucible.run(
            Experiment(id="other", pipeline=[StageDef(name="ui_score")]),
            store=store,
            registry=REGISTRY,
        )
        infos = [await store.get_run(o.run_id) for o in outcomes]
        runs = [i for i in infos if i is not None]
        exp = await store.get_experiment("sweep")
    diff = diff_runs(runs, [run_configuration(r, exp) for r in runs])
    assert [(r.key, dict(r.values)) for r in diff.configuration] == [
        ("ui_score.alpha", {runs[0].run_id: 0.1, runs[1].run_id: 0.3})
    ]
    score = next(r for r in diff.metrics if r.key == "score")
    assert score.deltas[runs[1].run_id] == pytest.approx(2.0)


def test_versions_and_own_configuration_come_from_the_run_row() -> None:
    def config(k: int) -> dict[str, Any]:
        return {"id": "exp", "pipeline": [{"name": "s", "options": {"k": k}}]}

    a = info("a", {}, versions={"python": "3.11.7", "stagepack": "1.0"}, git_commit="1" * 40,
             git_dirty=False, config=config(1))  # fmt: skip
    b = info("b", {}, versions={"python": "3.11.7", "stagepack": "1.1"}, git_commit="2" * 40,
             git_dirty=False, config=config(2))  # fmt: skip
    stale = ExperimentInfo("exp", {"id": "exp", "pipeline": []}, None, [], {}, T0, T0)
    diff = diff_runs([a, b], [run_configuration(a, stale), run_configuration(b, stale)])
    assert [(r.key, dict(r.values)) for r in diff.versions] == [
        ("git.commit", {"a": "1" * 40, "b": "2" * 40}),
        ("stagepack", {"a": "1.0", "b": "1.1"}),
    ]
    assert [(r.key, dict(r.values), dict(r.deltas)) for r in diff.configuration] == [
        ("s.k", {"a": 1, "b": 2}, {"b": 1})
    ]
    assert diff.to_dict()["versions"][1]["key"] == "stagepack"
