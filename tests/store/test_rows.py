"""The per-run row builders write exactly the rows the column mappings describe."""

from __future__ import annotations

import datetime as dt
import json

from crucible import Context, Experiment, SpanEvent, SpanRecord, StageDef
from crucible.store.rows import (
    ATTEMPTS,
    EXPERIMENTS,
    FINISHES,
    RUNS,
    attempt_record,
    finish_record,
    start_record,
)

EXP = Experiment(id="rows", pipeline=[StageDef(name="a")], tags=["t"], metadata={"k": 1})


def _as_mapping(columns: tuple[str, ...], row: tuple[object, ...]) -> dict[str, object]:
    assert len(columns) == len(row)
    return dict(zip(columns, row, strict=True))


def test_start_row_fills_every_column_by_name() -> None:
    extra = {"span_id": "ab" * 8, "config": {"id": "rows"}, "start_assigns": None,
             "versions": None, "git_commit": "c0ffee", "git_dirty": True, "rerun_of": "r0",
             "resumed_from": None, "source": "/x.yaml", "trace_exported": False}  # fmt: skip
    rec = start_record(EXP, "run-1", trace_id="t" * 32, batch_id="b", host="h", durable=True,
                       extra=extra)  # fmt: skip
    row = _as_mapping(RUNS.columns, rec.row)
    assert row["id"] == "run-1" and row["experiment_id"] == "rows"
    assert row["status"] == "running" and row["trace_id"] == "t" * 32 and row["batch_id"] == "b"
    assert isinstance(row["started_at"], dt.datetime) and row["started_at"].tzinfo is not None
    assert row["finished_at"] is None and row["owner_host"] == "h"
    assert (row["metrics"], row["outputs"], row["assigns"]) == ("{}", "[]", "{}")
    assert json.loads(str(row["config"])) == {"id": "rows"}  # JSON columns encoded
    assert {k: row[k] for k in extra if k != "config"} == {
        k: v for k, v in extra.items() if k != "config"
    }
    assert rec.experiment is not None
    exp = _as_mapping(EXPERIMENTS.columns, rec.experiment)
    assert exp["id"] == "rows" and json.loads(str(exp["tags"])) == ["t"]
    assert json.loads(str(exp["metadata"])) == {"k": 1}
    assert exp["created_at"] == exp["updated_at"] == row["started_at"]


def test_start_row_without_extra_leaves_reproducibility_columns_null() -> None:
    rec = start_record(EXP, "run-2", trace_id=None, batch_id=None, host="h", durable=False)
    row = _as_mapping(RUNS.columns, rec.row)
    assert all(row[c] is None for c in ("config", "versions", "git_commit", "source"))


def test_attempt_row_matches_the_span_record() -> None:
    span = SpanRecord(
        name="stage a", stage="a", span_id="cd" * 8, parent_span_id="ef" * 8, start_ns=10,
        end_ns=2_000_000_010, result="failure", attempt=2, stage_index=0, error_type="E",
        error_message="boom", events=(SpanEvent("note", 11, {"x": 1}),),
    )  # fmt: skip
    row = _as_mapping(ATTEMPTS.columns, attempt_record("run-1", span, durable=True).row)
    assert row == {
        "run_id": "run-1", "stage": "a", "name": "stage a", "stage_index": 0, "attempt": 2,
        "result": "failure", "start_ns": 10, "end_ns": 2_000_000_010, "duration_s": 2.0,
        "span_id": "cd" * 8, "parent_span_id": "ef" * 8, "error_type": "E",
        "error_message": "boom", "events": row["events"],
    }  # fmt: skip
    assert json.loads(str(row["events"]))[0]["name"] == "note"


def test_finish_row_keeps_stored_values_without_a_context() -> None:
    bare = _as_mapping(FINISHES.columns, finish_record(
        "run-1", "failed", context=None, failure_stage="a", failure_message="m",
        error_type="E", durable=True).row)  # fmt: skip
    assert bare["id"] == "run-1" and bare["status"] == "failed"
    assert all(bare[c] is None for c in ("metrics", "outputs", "assigns", "trace_id"))
    ctx = Context(experiment_id=EXP.id, run_id="run-1", experiment=EXP)
    ctx = ctx.put_metric("acc", 0.5).assign(k="v")
    full = _as_mapping(FINISHES.columns, finish_record(
        "run-1", "completed", context=ctx, failure_stage=None, failure_message=None,
        error_type=None, durable=True).row)  # fmt: skip
    assert json.loads(str(full["metrics"])) == {"acc": 0.5}
    assert json.loads(str(full["assigns"])) == {"k": "v"} and full["outputs"] == "[]"


def test_sqlite_datetimes_are_the_text_sqlalchemy_stores() -> None:
    import pytest
    from sqlalchemy.dialects import sqlite

    from crucible.store.schema import UTCDateTime
    from crucible.store.sql import sqlite_datetime

    dialect = sqlite.dialect()  # type: ignore[no-untyped-call]
    theirs = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert theirs is not None
    east = dt.timezone(dt.timedelta(hours=5, minutes=30))
    for when in (
        dt.datetime(2026, 12, 4, 19, 41, 43, 793704, tzinfo=dt.UTC),
        dt.datetime(2026, 12, 4, 19, 41, 43, tzinfo=dt.UTC),  # no microseconds: still written
        dt.datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC),
        dt.datetime(2026, 1, 1, 2, 0, 0, 1, tzinfo=east),  # another offset: the UTC day before
        None,
    ):
        assert sqlite_datetime(when) == theirs(when)
    with pytest.raises(ValueError, match="naive"):
        sqlite_datetime(dt.datetime(2026, 1, 1))
