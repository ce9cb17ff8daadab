"""PgBulk's one statement stores exactly what the statements in order store."""

from __future__ import annotations

from typing import Any

import pytest

from crucible import Context, Experiment, SpanRecord, StageDef
from crucible.store import RunStore
from crucible.store.pg_bulk import PgBulk
from crucible.store.rows import (
    FINISHES,
    RUNS,
    Record,
    artifact_record,
    attempt_record,
    finish_record,
    start_record,
)
from crucible.store.sql import apply
from crucible.trace import SpanEvent

pytestmark = pytest.mark.postgres

EXP = Experiment(id="bulk", pipeline=[StageDef(name="step")], tags=["é", 'q"uote'],
                 metadata={"nested": {"list": [1, 2.5, None, True]}})  # fmt: skip
TEXT = 'quote " backslash \\ tab \t newline \n emoji 🎉 ü'


def records(run_id: str, duration_ns: int = 123_456_789) -> tuple[list[Record], list[Record]]:
    """A start with an attempt and an artifact, then the finish: two batches of one run."""
    start_ns = 1_733_212_345_678_901_234
    span = SpanRecord(
        name="stage step", stage="step", span_id="ab" * 8, parent_span_id="cd" * 8,
        start_ns=start_ns, end_ns=start_ns + duration_ns, result="failure", attempt=2,
        error_type="ValueError", error_message=TEXT, stage_index=0,
        events=(SpanEvent("retry", start_ns + 5, {"why": TEXT, "n": 3}),),
    )  # fmt: skip
    ctx = (
        Context(experiment_id=EXP.id, run_id=run_id, experiment=EXP)
        .put_metric("sum", 0.1 + 0.2)
        .put_metric("big", 2**62 + 1)
        .put_metric("text", TEXT)
        .put_metric("tiny", 1e-300)
    )
    first = [
        start_record(EXP, run_id, trace_id="f" * 32, batch_id="b-1", host="h", durable=True,
                     extra={"config": {"k": TEXT}, "git_dirty": True, "git_commit": "c" * 40}),
        attempt_record(run_id, span, durable=True),
        artifact_record(run_id, "report", type="file", location="/tmp/ü x.html", format="html",
                        metadata={"bytes": 12}, durable=True),
    ]  # fmt: skip
    last = [
        finish_record(run_id, "failed", context=ctx, failure_stage="step", failure_message=TEXT,
                      error_type="ValueError", durable=True),
    ]  # fmt: skip
    return first, last


_OWN = ("run_id", "id", "started_at", "finished_at", "created_at")


def comparable(info: Any) -> dict[str, Any]:
    """The stored run as plain data, without what differs between two runs (ids, times)."""
    out = {k: v for k, v in info.to_dict().items() if k not in (*_OWN, "duration_s")}
    for key in ("attempts", "artifacts"):
        out[key] = [{k: v for k, v in item.items() if k not in _OWN} for item in out[key]]
    return out


async def bulk_batches(store: RunStore, *batches: list[Record]) -> list[Any]:
    """Each batch through PgBulk on its own autocommit connection: what each one found."""
    sql = await store._writable()
    db = store._db.twin()
    found = []
    try:
        for batch in batches:
            async with db.autocommit("write") as conn:
                found.append(await PgBulk().apply(conn, sql, batch))
    finally:
        await db.dispose()
    return found


async def ordered_batches(store: RunStore, *batches: list[Record]) -> None:
    """Each batch as the statements in order, in one transaction per batch."""
    sql = await store._writable()
    db = store._db.twin()
    try:
        for batch in batches:
            async with db.begin("write") as conn:
                await apply(conn, sql, batch)
    finally:
        await db.dispose()


async def test_one_statement_stores_what_the_statements_in_order_store(pg_fresh: str) -> None:
    async with RunStore(pg_fresh) as store:
        await store.open()
        bulk_first, bulk_last = records("bulk-run")
        for applied in await bulk_batches(store, bulk_first, bulk_last):
            assert applied is not None and not applied.refused and not applied.missing
        await ordered_batches(store, *records("ordered-run"))
        bulk, ordered = await store.get_run("bulk-run"), await store.get_run("ordered-run")
    assert bulk is not None and ordered is not None
    assert comparable(bulk) == comparable(ordered)
    assert bulk.metrics == {"sum": 0.1 + 0.2, "big": 2**62 + 1, "text": TEXT, "tiny": 1e-300}
    assert bulk.attempts[0].start_ns == 1_733_212_345_678_901_234
    assert bulk.attempts[0].error_message == TEXT and bulk.failure_message == TEXT
    assert bulk.git_dirty is True
    assert bulk.started_at == bulk_first[0].row[RUNS.index["started_at"]]  # to the microsecond
    assert bulk.finished_at == bulk_last[0].row[FINISHES.index["finished_at"]]


async def test_a_run_started_and_finished_in_one_batch_is_stored_finished(
    pg_fresh: str,
) -> None:
    # Short runs start and end within one commit: one statement, as if written in order.
    async with RunStore(pg_fresh) as store:
        await store.open()
        first, last = records("together")
        other_first, other_last = records("finish-only")
        await bulk_batches(store, other_first)
        (applied,) = await bulk_batches(store, [*first, *last, *other_last])
        assert applied is not None and not applied.refused and not applied.missing
        o_first, o_last = records("ordered")
        await ordered_batches(store, [*o_first, *o_last])
        together, ordered = await store.get_run("together"), await store.get_run("ordered")
        finish_only = await store.get_run("finish-only")
    assert together is not None and ordered is not None and finish_only is not None
    assert comparable(together) == comparable(ordered)
    assert together.status == finish_only.status == "failed"
    assert together.metrics["big"] == 2**62 + 1 and together.config == {"k": TEXT}
    assert together.finished_at == last[0].row[FINISHES.index["finished_at"]]


async def test_a_replayed_start_and_finish_finish_the_run_stored_earlier(
    pg_fresh: str,
) -> None:
    async with RunStore(pg_fresh) as store:
        await store.open()
        first, last = records("replayed")
        await bulk_batches(store, first)  # committed, then the process died before the finish
        (applied,) = await bulk_batches(store, [*first, *last])  # the journal's replay
        assert applied is not None and not applied.refused and not applied.missing
        run = await store.get_run("replayed")
    assert run is not None and run.status == "failed" and run.metrics["text"] == TEXT
    assert len(run.attempts) == 1 and len(run.artifacts) == 1


async def test_a_start_and_finish_never_finish_another_runs_row(pg_fresh: str) -> None:
    async with RunStore(pg_fresh) as store:
        await store.open()
        theirs = start_record(EXP, "taken", trace_id="e" * 32, batch_id=None, host="other",
                              durable=True)  # fmt: skip
        await bulk_batches(store, [theirs])
        first, last = records("taken")
        (applied,) = await bulk_batches(store, [first[0], *last])
        assert applied is not None and applied.refused == {"taken"} and not applied.missing
        run = await store.get_run("taken")
    assert run is not None and run.status == "running" and run.trace_id == "e" * 32
