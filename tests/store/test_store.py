"""Run store tests against a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import os
import secrets
import socket
import sqlite3
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from crucible import Context, Experiment, SpanEvent, SpanRecord, StageDef, Trace
from crucible.errors import CrucibleError
from crucible.redact import REDACTED
from crucible.store import RunStatus, RunStore, StoreError, normalize_url

SECRET = "sk-123-do-not-store"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


# --- helpers ---------------------------------------------------------------------------------


async def raw(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Run SQL on the database directly, bypassing the store's types."""
    engine = create_async_engine(normalize_url(url))
    try:
        async with engine.connect() as conn:
            return [tuple(r) for r in await conn.execute(sa.text(sql), params)]
    finally:
        await engine.dispose()


def sqlite_file_bytes(path: Path) -> dict[str, bytes]:
    """The raw bytes of a SQLite database and its -wal/-shm companions."""
    return {p.name: p.read_bytes() for p in path.parent.glob(path.name + "*")}


def is_pg(url: str) -> bool:
    return url.startswith("postgresql")


def experiment(exp_id: str = "exp1", **kw: Any) -> Experiment:
    return Experiment(
        id=exp_id,
        pipeline=[
            StageDef(name="load", options={"api_key": SECRET, "n": 3}),
            StageDef(name="train", options={"lr": 0.1}),
        ],
        **kw,
    )


_clock = itertools.count()


def span(stage: str, attempt: int, result: str = "success", **kw: Any) -> SpanRecord:
    start = 1_700_000_000_000_000_000 + next(_clock) * 1_000_000
    return SpanRecord(
        name=f"stage {stage}",
        stage=stage,
        span_id=secrets.token_hex(8),
        parent_span_id="b7ad6b7169203331",
        start_ns=start,
        end_ns=start + 250_000_000,
        result=result,  # type: ignore[arg-type]
        attempt=attempt,
        **kw,
    )


# --- round trip ------------------------------------------------------------------------------


async def test_round_trip_every_field(store: RunStore, store_url: str) -> None:
    exp = experiment(owner="alice", tags=["nlp", "v2"], metadata={"team": "ml", "password": SECRET})
    before = dt.datetime.now(dt.UTC)
    await store.start_run(exp, "run-1", trace_id="1" * 32, batch_id="batch-a")
    after = dt.datetime.now(dt.UTC)

    started = await store.get_run("run-1")
    assert started is not None
    assert started.status == RunStatus.RUNNING.value == "running"
    assert started.finished_at is None and started.duration_s is None
    assert started.started_at.tzinfo is not None
    assert started.started_at.utcoffset() == dt.timedelta(0)
    assert before <= started.started_at <= after  # microsecond precision, not truncated
    assert started.owner_pid == os.getpid()
    assert started.owner_host == socket.gethostname()
    assert (started.metrics, started.outputs, started.assigns) == ({}, [], {})

    event = SpanEvent("retrying", 1_700_000_000_123_000_000, {"delay": 0.5, "token": SECRET})
    first = span("load", 1, "failure", error_type="ValueError", error_message="boom",
                 events=(event,), stage_index=0)  # fmt: skip
    second = span("load", 2, stage_index=0)
    third = span("train", 1, stage_index=1)
    for rec in (first, second, third):
        await store.record_attempt("run-1", rec)
    await store.record_artifact(
        "run-1", "report.md", type="report", location="/tmp/out/report.md", format="markdown",
        metadata={"bytes": 120, "secret": SECRET},
    )  # fmt: skip
    await store.record_artifact("run-1", "model")

    ctx = (
        Context(experiment_id=exp.id, run_id="run-1", experiment=exp)
        .put_metric("accuracy", 0.95)
        .put_metric("loss", float("nan"))
        .add_outputs([{"text": "hi", "score": 1}, 2, "three"])
        .assign(user="alice", api_key=SECRET)
        .mark_stage_complete("load")
    )
    ctx = dataclasses.replace(ctx, trace=Trace(trace_id=TRACE_ID, span_id="c" * 16))
    await store.finish_run(
        "run-1", "failed", context=ctx, failure_stage="train", failure_message="diverged",
        error_type="RuntimeError",
    )  # fmt: skip

    info = await store.get_run("run-1")
    assert info is not None
    assert info.run_id == info.id == "run-1"
    assert info.experiment_id == "exp1"
    assert info.status == "failed"
    assert info.started_at == started.started_at
    assert info.finished_at is not None and info.finished_at >= info.started_at
    assert info.finished_at.tzinfo is not None
    assert info.duration_s is not None and info.duration_s >= 0
    assert info.trace_id == TRACE_ID  # taken from the context's trace
    assert info.batch_id == "batch-a"
    assert info.metrics == {"accuracy": 0.95, "loss": "NaN"}
    assert info.outputs == [{"text": "hi", "score": 1}, 2, "three"]
    assert info.assigns == {"user": "alice", "api_key": REDACTED, "completed_stages": ["load"]}
    assert (info.failure_stage, info.failure_message, info.error_type) == (
        "train",
        "diverged",
        "RuntimeError",
    )
    assert (info.owner_pid, info.owner_host) == (os.getpid(), socket.gethostname())

    assert [(a.stage, a.attempt) for a in info.attempts] == [("load", 1), ("load", 2), ("train", 1)]
    a1 = info.attempts[0]
    assert a1.run_id == "run-1" and a1.name == "stage load" and a1.stage_index == 0
    assert a1.result == "failure"
    assert (a1.start_ns, a1.end_ns) == (first.start_ns, first.end_ns)
    assert a1.duration_s == pytest.approx(0.25)
    assert (a1.span_id, a1.parent_span_id) == (first.span_id, "b7ad6b7169203331")
    assert (a1.error_type, a1.error_message) == ("ValueError", "boom")
    assert a1.events == [
        {
            "name": "retrying",
            "timestamp_ns": 1_700_000_000_123_000_000,
            "attributes": {"delay": 0.5, "token": REDACTED},
        }
    ]
    assert info.attempts[1].result == "success" and info.attempts[1].events == []
    assert info.attempts[2].stage_index == 1

    report, model = info.artifacts
    assert (report.name, report.type, report.location, report.format) == (
        "report.md",
        "report",
        "/tmp/out/report.md",
        "markdown",
    )
    assert report.metadata == {"bytes": 120, "secret": REDACTED}
    assert report.created_at.tzinfo is not None and report.run_id == "run-1"
    assert (model.name, model.type, model.location, model.format, model.metadata) == (
        "model",
        "file",
        None,
        None,
        {},
    )

    stored = await store.get_experiment("exp1")
    assert stored is not None
    assert stored.owner == "alice" and stored.tags == ["nlp", "v2"]
    assert stored.metadata == {"team": "ml", "password": REDACTED}
    assert stored.definition["id"] == "exp1"
    assert stored.definition["pipeline"][0]["options"] == {"api_key": REDACTED, "n": 3}
    assert stored.definition["pipeline"][1]["options"] == {"lr": 0.1}

    as_json = json.loads(json.dumps(info.to_dict()))
    assert as_json["run_id"] == "run-1" and len(as_json["attempts"]) == 3
    assert as_json["started_at"] == info.started_at.isoformat()
    json.dumps(stored.to_dict())


async def test_secrets_never_reach_the_database(store: RunStore, store_url: str) -> None:
    exp = experiment(metadata={"db_password": SECRET})
    await store.start_run(exp, "run-s")
    rec = span("load", 1, events=(SpanEvent("call", 1, {"authorization": SECRET}),))
    await store.record_attempt("run-s", rec)
    await store.record_artifact("run-s", "x", metadata={"access_token": SECRET})
    ctx = Context(experiment_id=exp.id, run_id="run-s", experiment=exp).assign(
        password=SECRET, nested={"client_secret": SECRET, "ok": 1}
    )
    await store.finish_run("run-s", "completed", context=ctx)
    info = await store.get_run("run-s")
    assert info is not None and info.assigns["nested"] == {"client_secret": REDACTED, "ok": 1}

    tables = ("experiments", "runs", "stage_attempts", "artifacts")
    if is_pg(store_url):
        for table in tables:
            rows = await raw(store_url, f"SELECT t::text FROM {table} t")
            assert rows, table
            dump = " ".join(r[0] for r in rows)
            assert SECRET not in dump and "sk-123" not in dump, table
    else:
        for table in tables:
            rows = await raw(store_url, f"SELECT * FROM {table}")
            assert rows and SECRET not in repr(rows), table
        await store.close()  # checkpoint the WAL so the main file holds everything
        contents = sqlite_file_bytes(Path(store_url))
        assert contents and b"run-s" in b"".join(contents.values())
        for name, data in contents.items():
            assert b"sk-123" not in data, name


async def test_statuses(store: RunStore) -> None:
    assert {s.value for s in RunStatus} == {
        "running",
        "completed",
        "failed",
        "timed_out",
        "cancelled",
        "abandoned",
    }
    exp = experiment()
    for status in ("completed", "failed", "timed_out", "cancelled"):
        await store.start_run(exp, f"run-{status}")
        await store.finish_run(f"run-{status}", RunStatus(status), failure_stage="s")
        info = await store.get_run(f"run-{status}")
        assert info is not None and info.status == status and info.finished_at is not None

    # Finishing twice keeps the last call; without a context the stored results are kept.
    ctx = Context(experiment_id=exp.id, run_id="twice", experiment=exp).put_metric("m", 1)
    await store.start_run(exp, "twice")
    await store.finish_run("twice", "failed", context=ctx, failure_stage="x", error_type="E")
    first = await store.get_run("twice")
    await store.finish_run("twice", "completed")
    last = await store.get_run("twice")
    assert first is not None and last is not None
    assert last.status == "completed" and last.metrics == {"m": 1}
    assert (last.failure_stage, last.error_type) == (None, None)
    assert last.finished_at is not None and first.finished_at is not None
    assert last.finished_at >= first.finished_at

    with pytest.raises(StoreError, match=r"finish_run for run 'twice'.*unknown status 'done'"):
        await store.finish_run("twice", "done")


async def test_failures_name_operation_and_run(store: RunStore) -> None:
    await store.start_run(experiment(), "dup")
    with pytest.raises(StoreError, match=r"start_run for run 'dup'.*already exists") as err:
        await store.start_run(experiment(), "dup")
    assert isinstance(err.value, CrucibleError)
    assert (err.value.operation, err.value.run_id) == ("start_run", "dup")
    # Foreign keys are enforced (on SQLite too): no attempt or artifact for an unknown run.
    with pytest.raises(StoreError, match=r"record_attempt for run 'ghost'"):
        await store.record_attempt("ghost", span("load", 1))
    with pytest.raises(StoreError, match=r"record_artifact for run 'ghost'"):
        await store.record_artifact("ghost", "x")
    with pytest.raises(StoreError, match=r"finish_run for run 'ghost'.*no such run"):
        await store.finish_run("ghost", "completed")
    assert await store.get_run("ghost") is None
    dup = await store.get_run("dup")
    assert dup is not None and dup.status == "running"


async def test_outputs_are_stored_as_a_json_list(store: RunStore, store_url: str) -> None:
    exp = experiment()
    outputs = [{"a": 1}, [1, 2], "x", None, 3.5]
    ctx = Context(experiment_id=exp.id, run_id="out", experiment=exp).add_outputs(outputs)
    await store.start_run(exp, "out")
    await store.finish_run("out", "completed", context=ctx)
    info = await store.get_run("out")
    assert info is not None and info.outputs == outputs
    fn = "jsonb_typeof" if is_pg(store_url) else "json_type"
    assert await raw(store_url, f"SELECT {fn}(outputs) FROM runs WHERE id = 'out'") == [("array",)]


async def test_upsert_experiment_keeps_created_at(store: RunStore) -> None:
    await store.start_run(experiment(owner="alice"), "u1")
    first = await store.get_experiment("exp1")
    await store.start_run(experiment(owner="bob", tags=["t"]), "u2")
    second = await store.get_experiment("exp1")
    assert first is not None and second is not None
    assert (second.owner, second.tags) == ("bob", ["t"])
    assert second.created_at == first.created_at and second.updated_at >= first.updated_at
    assert await store.get_experiment("nope") is None


async def test_list_filter_count(store: RunStore) -> None:
    ids = []
    for i in range(6):
        exp_id = "exp-a" if i % 2 == 0 else "exp-b"
        run_id = f"r{i}"
        await store.start_run(experiment(exp_id), run_id, batch_id="b1" if i < 4 else "b2")
        if i % 3 == 0:
            await store.finish_run(run_id, "completed")
        ids.append(run_id)

    listed = await store.list_runs()
    assert [r.run_id for r in listed] == ids[::-1]  # newest first
    assert all(r.attempts == () and r.artifacts == () for r in listed)
    assert [r.run_id for r in await store.list_runs(limit=2)] == ["r5", "r4"]
    assert [r.run_id for r in await store.list_runs(experiment_id="exp-a")] == ["r4", "r2", "r0"]
    assert [r.run_id for r in await store.list_runs(status="completed")] == ["r3", "r0"]
    assert [r.run_id for r in await store.list_runs(batch_id="b2")] == ["r5", "r4"]
    got = await store.list_runs(experiment_id="exp-b", status="running", batch_id="b1")
    assert [r.run_id for r in got] == ["r1"]
    assert await store.count_runs() == 6
    assert await store.count_runs(experiment_id="exp-b") == 3
    assert await store.count_runs(status=RunStatus.RUNNING) == 4
    assert await store.count_runs(batch_id="b1", status="completed") == 2
    assert await store.count_runs(batch_id="nope") == 0


async def test_batch_prefix_matches_the_start_of_the_id_only(store: RunStore) -> None:
    for run_id, batch in (("p1", "3f2a9c1e-aa"), ("p2", "3f2a9c1e-bb"), ("p3", "x3f2a9c1e"),
                          ("p4", "3f_a%"), ("p5", None)):  # fmt: skip
        await store.start_run(experiment("exp"), run_id, batch_id=batch)
    got = await store.list_runs(batch_prefix="3f2a9c1e")
    assert sorted(r.run_id for r in got) == ["p1", "p2"]
    assert await store.count_runs(batch_prefix="3f2a9c1e-b") == 1
    # LIKE wildcards in the prefix are literal characters
    assert [r.run_id for r in await store.list_runs(batch_prefix="3f_")] == ["p4"]
    assert await store.count_runs(batch_prefix="3f%") == 0


# --- concurrency -----------------------------------------------------------------------------


async def test_many_concurrent_runs_lose_and_duplicate_nothing(
    store: RunStore, store_url: str
) -> None:
    n = 200 if is_pg(store_url) else 1000
    exps = [experiment(f"exp-{k}") for k in range(5)]

    async def one_run(i: int) -> None:
        run_id = f"c{i:04d}"
        exp = exps[i % len(exps)]
        await store.start_run(exp, run_id, batch_id="load", trace_id=f"{i:032x}")
        await store.record_attempt(run_id, span("load", 1, "failure"))
        await store.record_attempt(run_id, span("load", 2))
        ctx = Context(experiment_id=exp.id, run_id=run_id, experiment=exp).put_metric("i", i)
        await store.finish_run(run_id, "completed", context=ctx.add_output(i))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one_run, i)

    assert await store.count_runs(batch_id="load") == n
    assert await store.count_runs(status="completed") == n
    assert await raw(store_url, "SELECT count(*), count(DISTINCT id) FROM runs") == [(n, n)]
    assert await raw(store_url, "SELECT count(*) FROM stage_attempts") == [(2 * n,)]
    uneven = "SELECT run_id FROM stage_attempts GROUP BY run_id HAVING count(*) <> 2"
    assert await raw(store_url, uneven) == []
    assert await raw(store_url, "SELECT count(*) FROM experiments") == [(5,)]
    sample = await store.get_run("c0007")
    assert sample is not None and sample.metrics == {"i": 7} and sample.outputs == [7]
    assert [a.attempt for a in sample.attempts] == [1, 2]


# --- abandoned runs --------------------------------------------------------------------------

_CHILD = """
import asyncio, sys
from crucible import Experiment
from crucible.store import RunStore

async def main() -> None:
    store = RunStore(sys.argv[1])
    await store.open()
    await store.start_run(Experiment(id="exp-child"), sys.argv[2])
    await store.close()  # exits without finishing the run

asyncio.run(main())
"""


async def test_runs_of_dead_processes_become_abandoned(store: RunStore, store_url: str) -> None:
    result = await anyio.run_process([sys.executable, "-c", _CHILD, store_url, "orphan"])
    assert result.returncode == 0
    orphan = await store.get_run("orphan")
    assert orphan is not None and orphan.status == "running"
    child_pid = orphan.owner_pid
    assert child_pid is not None and child_pid != os.getpid()

    await store.start_run(experiment(), "mine")  # owned by this live process
    await store.start_run(experiment(), "remote")  # pretend another host owns it
    engine = create_async_engine(normalize_url(store_url))
    try:
        async with engine.begin() as conn:
            sql = "UPDATE runs SET owner_host = 'elsewhere', owner_pid = :pid WHERE id = 'remote'"
            await conn.execute(sa.text(sql), {"pid": child_pid})
    finally:
        await engine.dispose()

    async with RunStore(store_url) as fresh:  # open() detects the dead owner
        gone = await fresh.get_run("orphan")
        assert gone is not None and gone.status == "abandoned"
        assert gone.failure_message == f"process {child_pid} exited while the run was running"
        assert gone.finished_at is None
        for alive in ("mine", "remote"):
            info = await fresh.get_run(alive)
            assert info is not None and info.status == "running", alive
        assert await fresh.mark_abandoned() == 0
        assert await fresh.count_runs(status="abandoned") == 1
    assert await store.mark_abandoned() == 0


# --- configuration and errors ----------------------------------------------------------------


def test_normalize_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    default = normalize_url(None)
    assert default.drivername == "sqlite+aiosqlite"
    assert default.database == str(tmp_path / ".crucible" / "runs.db")
    assert normalize_url("x.db").database == str(tmp_path / "x.db")
    assert normalize_url("x.db").drivername == "sqlite+aiosqlite"
    rel = normalize_url("sqlite:///sub/x.db")
    assert (rel.drivername, rel.database) == ("sqlite+aiosqlite", str(tmp_path / "sub" / "x.db"))
    assert normalize_url("sqlite:////abs/x.db").database == "/abs/x.db"
    pg = normalize_url("postgresql://u:pw@db.example:5433/runs")
    assert pg.render_as_string(hide_password=False) == (
        "postgresql+asyncpg://u:pw@db.example:5433/runs"
    )
    assert normalize_url("postgres://h/db").drivername == "postgresql+asyncpg"
    assert normalize_url("postgresql+asyncpg://h/db").drivername == "postgresql+asyncpg"
    assert "pw" not in RunStore("postgresql://u:pw@db.example/runs").url
    with pytest.raises(StoreError, match="empty database URL"):
        RunStore("")


async def test_default_store_creates_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = RunStore()
    assert not (tmp_path / ".crucible").exists()  # nothing happens before first use
    async with store:
        await store.start_run(experiment(), "r")
    assert (tmp_path / ".crucible" / "runs.db").is_file()


async def test_sqlite_in_memory_and_lazy_open() -> None:
    store = RunStore("sqlite://")
    try:
        await store.start_run(experiment(), "m")  # opens lazily
        await store.finish_run("m", "completed")
        info = await store.get_run("m")
        assert info is not None and info.status == "completed"
    finally:
        await store.close()


async def test_sqlite_wal_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    async with RunStore(f"sqlite:///{path}") as store:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        # Another connection holds the write lock for a while: the store waits, then writes.
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            async with anyio.create_task_group() as tg:
                tg.start_soon(store.start_run, experiment(), "waited")
                await anyio.sleep(0.5)
                other.execute("COMMIT")
        finally:
            other.close()
        assert await store.get_run("waited") is not None
        with pytest.raises(StoreError, match="FOREIGN KEY"):
            await store.record_attempt("missing", span("load", 1))


async def test_bad_url_raises_store_error() -> None:
    store = RunStore("nosuchdb://somewhere/x")
    with pytest.raises(StoreError, match=r"open failed: cannot use nosuchdb://.*NoSuchModuleError"):
        await store.open()
    with pytest.raises(StoreError, match=r"start_run for run 'r1' failed: could not open"):
        await store.start_run(experiment(), "r1")


async def test_unwritable_sqlite_location_raises_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match=f"its folder {blocker} is not a folder"):
        RunStore(blocker / "runs.db")  # refused when made, before any open


@pytest.mark.postgres
async def test_unreachable_postgres_raises_store_error() -> None:
    with socket.socket() as sock:  # find a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = RunStore(f"postgresql://postgres:pw@127.0.0.1:{port}/x", connect_timeout=3)
    with anyio.fail_after(15):
        with pytest.raises(StoreError, match=rf"open failed: .*127\.0\.0\.1:{port}") as err:
            await store.open()
        assert "pw@" not in str(err.value)
        with pytest.raises(StoreError, match=r"finish_run for run 'r9'"):
            await store.finish_run("r9", "completed")
    await store.close()
