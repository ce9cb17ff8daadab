"""The store's records turn into plain data through one to_dict: exact keys, order and values."""

from __future__ import annotations

import datetime as dt
import json

from crucible.store import ArtifactInfo, AttemptInfo, CheckpointInfo, ExperimentInfo, RunInfo

T0 = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(seconds=2, microseconds=500_000)


def attempt() -> AttemptInfo:
    return AttemptInfo(
        id=3, run_id="r1", stage="load", name="stage load", stage_index=0, attempt=2,
        result="failure", start_ns=10, end_ns=30, duration_s=2e-8, span_id="a" * 16,
        parent_span_id="b" * 16, error_type="ValueError", error_message="boom",
        events=[{"name": "retrying", "timestamp_ns": 5, "attributes": {"delay": 0.5}}],
    )  # fmt: skip


def artifact() -> ArtifactInfo:
    return ArtifactInfo(
        id=4, run_id="r1", name="report.md", type="file", location="/out/report.md",
        format="markdown", metadata={"bytes": 12}, created_at=T1,
    )  # fmt: skip


ATTEMPT_DICT = {
    "id": 3,
    "run_id": "r1",
    "stage": "load",
    "name": "stage load",
    "stage_index": 0,
    "attempt": 2,
    "result": "failure",
    "start_ns": 10,
    "end_ns": 30,
    "duration_s": 2e-8,
    "span_id": "a" * 16,
    "parent_span_id": "b" * 16,
    "error_type": "ValueError",
    "error_message": "boom",
    "events": [{"name": "retrying", "timestamp_ns": 5, "attributes": {"delay": 0.5}}],
}
ARTIFACT_DICT = {
    "id": 4,
    "run_id": "r1",
    "name": "report.md",
    "type": "file",
    "location": "/out/report.md",
    "format": "markdown",
    "metadata": {"bytes": 12},
    "created_at": "2024-05-06T07:08:11.623456+00:00",
}


def assert_same(got: dict[str, object], want: dict[str, object]) -> None:
    assert got == want
    assert list(got) == list(want)  # key order is part of the output (JSON, the CLI)


def test_attempt_and_artifact() -> None:
    assert_same(attempt().to_dict(), ATTEMPT_DICT)
    assert_same(artifact().to_dict(), ARTIFACT_DICT)


def test_run_with_duration_after_finished_at_and_nested_records() -> None:
    info = RunInfo(
        run_id="r1", experiment_id="e1", status="failed", started_at=T0, finished_at=T1,
        trace_id="c" * 32, batch_id="b1", metrics={"acc": 0.9}, outputs=[1, {"x": 2}],
        assigns={"user": "ann"}, failure_stage="load", failure_message="boom",
        error_type="ValueError", owner_pid=42, owner_host="box", span_id="d" * 16,
        config={"id": "e1", "pipeline": [{"name": "load", "options": {"n": 2}}]},
        start_assigns={"matrix": {"load.n": 2}}, versions={"python": "3.11.7"},
        git_commit="e" * 40, git_dirty=False, rerun_of="r0", resumed_from=None,
        attempts=(attempt(),), artifacts=(artifact(),),
    )  # fmt: skip
    got = info.to_dict()
    assert_same(
        got,
        {
            "run_id": "r1",
            "experiment_id": "e1",
            "status": "failed",
            "started_at": "2024-05-06T07:08:09.123456+00:00",
            "finished_at": "2024-05-06T07:08:11.623456+00:00",
            "duration_s": 2.5,
            "trace_id": "c" * 32,
            "batch_id": "b1",
            "metrics": {"acc": 0.9},
            "outputs": [1, {"x": 2}],
            "assigns": {"user": "ann"},
            "failure_stage": "load",
            "failure_message": "boom",
            "error_type": "ValueError",
            "owner_pid": 42,
            "owner_host": "box",
            "span_id": "d" * 16,
            "config": {"id": "e1", "pipeline": [{"name": "load", "options": {"n": 2}}]},
            "start_assigns": {"matrix": {"load.n": 2}},
            "versions": {"python": "3.11.7"},
            "git_commit": "e" * 40,
            "git_dirty": False,
            "rerun_of": "r0",
            "resumed_from": None,
            "source": None,
            "trace_exported": None,
            "attempts": [ATTEMPT_DICT],
            "artifacts": [ARTIFACT_DICT],
        },
    )
    assert list(got["attempts"][0]) == list(ATTEMPT_DICT)
    # Containers are copies: changing the dict never changes the record.
    got["metrics"]["acc"] = 0.0
    got["outputs"].append(3)
    assert info.metrics == {"acc": 0.9} and info.outputs == [1, {"x": 2}]
    json.dumps(got)


def test_unfinished_run_has_no_finish_or_duration() -> None:
    info = RunInfo(
        run_id="r2", experiment_id="e1", status="running", started_at=T0, finished_at=None,
        trace_id=None, batch_id=None, metrics={}, outputs=[], assigns={}, failure_stage=None,
        failure_message=None, error_type=None, owner_pid=None, owner_host=None,
    )  # fmt: skip
    got = info.to_dict()
    assert (got["finished_at"], got["duration_s"]) == (None, None)
    assert (got["attempts"], got["artifacts"]) == ([], [])
    assert list(got)[4:6] == ["finished_at", "duration_s"]


def test_experiment() -> None:
    info = ExperimentInfo(
        id="e1", definition={"id": "e1", "pipeline": []}, owner=None, tags=["nlp"],
        metadata={"team": "ml"}, created_at=T0, updated_at=T1,
    )  # fmt: skip
    assert_same(
        info.to_dict(),
        {
            "id": "e1",
            "definition": {"id": "e1", "pipeline": []},
            "owner": None,
            "tags": ["nlp"],
            "metadata": {"team": "ml"},
            "created_at": "2024-05-06T07:08:09.123456+00:00",
            "updated_at": "2024-05-06T07:08:11.623456+00:00",
        },
    )


def test_checkpoint() -> None:
    info = CheckpointInfo(
        id=5, run_id="r1", stage_index=1, stage="load",
        state={"metrics": {"n": 2}, "outputs": [], "artifacts": {}, "assigns": {}}, created_at=T0,
    )  # fmt: skip
    assert_same(
        info.to_dict(),
        {
            "id": 5,
            "run_id": "r1",
            "stage_index": 1,
            "stage": "load",
            "state": {"metrics": {"n": 2}, "outputs": [], "artifacts": {}, "assigns": {}},
            "created_at": "2024-05-06T07:08:09.123456+00:00",
        },
    )
