"""Opening a database made by an earlier schema adds what the current one has (additive only)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from crucible import Context, Experiment, Registry, StageDef, run, stage
from crucible.store import RunStore, StoreError, normalize_url
from crucible.store.migrate import MigrationError, upgrade
from crucible.store.schema import metadata


@stage("step", description="Counts", register=False)
async def step(ctx: Context) -> Context:
    return ctx.put_metric("n", ctx.get_metric("n", 0) + 1)


def previous_schema() -> sa.MetaData:
    """An earlier version's schema: no unique keys on attempts, artifacts and checkpoints, but
    an index on their run_id alone (which the unique keys now serve)."""
    old = sa.MetaData()
    for table in metadata.tables.values():
        copy = table.to_metadata(old)
        for index in [i for i in copy.indexes if i.name and i.name.startswith("uq_")]:
            copy.indexes.discard(index)
        if table.name in ("stage_attempts", "artifacts", "checkpoints"):
            sa.Index(f"ix_{table.name}_run_id", copy.c.run_id)
    return old


async def on_database(url: str, fn: Any, *args: Any) -> Any:
    engine = create_async_engine(normalize_url(url))
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(fn, *args)
    finally:
        await engine.dispose()


def index_names(conn: sa.Connection, table: str) -> set[str]:
    return {i["name"] for i in sa.inspect(conn).get_indexes(table)}


def fill_the_old_way(conn: sa.Connection, old: sa.MetaData) -> None:
    """One finished run with an attempt, written through the previous version's tables."""
    now = dt.datetime.now(dt.UTC)
    t = old.tables
    conn.execute(t["experiments"].insert().values(
        id="old", definition={"id": "old"}, owner=None, tags=[], metadata={}, created_at=now,
        updated_at=now,
    ))  # fmt: skip
    conn.execute(t["runs"].insert().values(
        id="old-run", experiment_id="old", status="completed", started_at=now, finished_at=now,
        metrics={"n": 1}, outputs=[], assigns={},
    ))  # fmt: skip
    conn.execute(t["stage_attempts"].insert().values(
        run_id="old-run", stage="step", attempt=1, result="success", start_ns=1, end_ns=2,
        duration_s=0.0, span_id="a" * 16, events=[],
    ))  # fmt: skip


async def test_a_database_of_the_previous_version_keeps_working(store_url: str) -> None:
    old = previous_schema()
    await on_database(store_url, old.create_all)
    await on_database(store_url, fill_the_old_way, old)
    assert "uq_stage_attempts_run_span" not in await on_database(
        store_url, index_names, "stage_attempts"
    )

    async with RunStore(store_url) as store:
        ctx = await run(Experiment(id="new", pipeline=[StageDef(name="step")] * 2),
                        registry=Registry([step]), store=store, run_id="new-run")  # fmt: skip
        assert ctx.get_metric("n") == 2
        info = await store.get_run("new-run")
        assert info is not None and info.status == "completed" and len(info.attempts) == 2
        before = await store.get_run("old-run")
        assert before is not None and before.status == "completed"
        assert before.metrics == {"n": 1} and [a.span_id for a in before.attempts] == ["a" * 16]
    assert "uq_stage_attempts_run_span" in await on_database(
        store_url, index_names, "stage_attempts"
    )
    assert "uq_artifacts_run_name" in await on_database(store_url, index_names, "artifacts")
    assert "uq_checkpoints_run_stage" in await on_database(store_url, index_names, "checkpoints")
    # Nothing is dropped: the old run_id indexes stay.
    assert "ix_stage_attempts_run_id" in await on_database(store_url, index_names, "stage_attempts")


async def test_lookups_by_run_use_the_unique_keys(tmp_path: Any) -> None:
    db = tmp_path / "runs.db"
    async with RunStore(db) as store:
        await store.open()
    conn = sqlite3.connect(db)
    try:
        for table, index in (("stage_attempts", "uq_stage_attempts_run_span"),
                             ("artifacts", "uq_artifacts_run_name"),
                             ("checkpoints", "uq_checkpoints_run_stage")):  # fmt: skip
            plan = conn.execute(
                f"EXPLAIN QUERY PLAN SELECT * FROM {table} WHERE run_id = ?", ("r",)
            ).fetchall()
            assert index in " ".join(str(row[-1]) for row in plan), plan
    finally:
        conn.close()


def extended_schema() -> sa.MetaData:
    """The current schema plus what another change might add: a column and an index."""
    new = sa.MetaData()
    for table in metadata.tables.values():
        copy = table.to_metadata(new)
        copies = {i.name: i for i in copy.indexes}
        for index in table.indexes:  # to_metadata drops an index's info and ddl_if
            if "dialect" in index.info:
                copies[index.name].info.update(index.info)
                copies[index.name].ddl_if(dialect=index.info["dialect"])
    runs = new.tables["runs"]
    runs.append_column(sa.Column("future_note", sa.String(255)))
    runs.append_column(sa.Column("future_flag", sa.Boolean(), nullable=False,
                                 server_default=sa.false()))  # fmt: skip
    sa.Index("ix_runs_future_note", runs.c.future_note)
    return new


def columns_of(conn: sa.Connection, table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(conn).get_columns(table)}


async def test_new_columns_and_indexes_in_the_schema_are_added_at_open(store_url: str) -> None:
    async with RunStore(store_url) as store:
        await store.start_run(Experiment(id="e"), "kept")
    added = await on_database(store_url, upgrade, extended_schema())
    assert added == [
        "column runs.future_note",
        "column runs.future_flag",
        "index ix_runs_future_note",
    ]
    assert {"future_note", "future_flag"} <= await on_database(store_url, columns_of, "runs")
    assert "ix_runs_future_note" in await on_database(store_url, index_names, "runs")
    assert await on_database(store_url, upgrade, extended_schema()) == []  # nothing twice
    async with RunStore(store_url) as store:  # the store keeps working with the extra columns
        assert (await store.get_run("kept")) is not None
        await store.finish_run("kept", "completed")


async def test_a_change_that_is_not_additive_is_refused(store_url: str) -> None:
    async with RunStore(store_url):
        pass
    bad = extended_schema()
    bad.tables["runs"].append_column(sa.Column("needs_a_value", sa.Integer(), nullable=False))
    with pytest.raises(MigrationError, match=r"runs\.needs_a_value .* must be nullable"):
        await on_database(store_url, upgrade, bad)


async def test_rows_that_break_a_new_unique_key_refuse_the_open(store_url: str) -> None:
    old = previous_schema()
    await on_database(store_url, old.create_all)
    await on_database(store_url, fill_the_old_way, old)

    def repeat_the_attempt(conn: sa.Connection) -> None:
        row = dict(conn.execute(sa.select(old.tables["stage_attempts"])).mappings().one())
        del row["id"]
        conn.execute(old.tables["stage_attempts"].insert().values(row))

    await on_database(store_url, repeat_the_attempt)
    store = RunStore(store_url)
    try:
        with pytest.raises(StoreError, match="cannot add unique index uq_stage_attempts_run_span"):
            await store.open()
    finally:
        await store.close()


async def test_the_run_id_prefix_index_is_made_on_postgresql_only(store_url: str) -> None:
    async with RunStore(store_url) as store:
        await store.start_run(Experiment(id="e"), "r")
    pg = store_url.startswith("postgresql")
    assert ("ix_runs_id_prefix" in await on_database(store_url, index_names, "runs")) == pg
    if pg:  # a database made before the index existed
        await on_database(store_url, lambda c: c.exec_driver_sql("DROP INDEX ix_runs_id_prefix"))
    added = await on_database(store_url, upgrade, metadata)
    assert added == (["index ix_runs_id_prefix"] if pg else [])  # SQLite: never, nor reported
    assert await on_database(store_url, upgrade, metadata) == []


def _tables(path: Any) -> list[str]:
    with sqlite3.connect(path) as conn:
        return sorted(
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        )


async def test_another_programs_sqlite_file_is_refused_and_left_as_it_was(tmp_path: Any) -> None:
    notes, clash = tmp_path / "notes.db", tmp_path / "clash.db"
    with sqlite3.connect(notes) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    with sqlite3.connect(clash) as conn:  # a table of our name that is not ours
        conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, foo TEXT)")
    for path, why in ((notes, "not a crucible run store"), (clash, "cannot add column runs")):
        before = _tables(path)
        with pytest.raises(StoreError, match=why):
            async with RunStore(path):
                pass
        assert _tables(path) == before  # nothing was added before the refusal
