"""Reliability: a dead or slow OTLP endpoint, a store that dies mid-run, 1,000 concurrent runs."""

from __future__ import annotations

import io
import json
import socket
import time
import uuid
from pathlib import Path

import anyio
import anyio.lowlevel
import asyncpg
import pytest
import structlog

import crucible.logging
from crucible import Context, Experiment, Registry, StageDef, run, run_batch, stage
from crucible.store import RunStore
from crucible.telemetry.setup import configure
from crucible.testing.otlp import OtlpHttpReceiver
from tests.support.missing import missing_service

pytestmark = [pytest.mark.slow]


@stage("quick", description="Awaits once", register=False)
async def quick(ctx: Context) -> Context:
    await anyio.lowlevel.checkpoint()
    return ctx.put_metric("n", ctx.get_metric("n", 0) + 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens here once the socket is closed


EXP = Experiment(id="rel", pipeline=[StageDef(name="quick") for _ in range(3)])
REG = Registry([quick])


@pytest.mark.parametrize("endpoint_state", ["down", "slow"])
@pytest.mark.otlp
async def test_otlp_endpoint_down_or_slow(endpoint_state: str) -> None:
    receiver = OtlpHttpReceiver(delay_s=3.0)
    receiver.start()
    endpoint = f"http://127.0.0.1:{free_port()}" if endpoint_state == "down" else receiver.endpoint
    handle = configure("rel", "otlp", endpoint=endpoint, set_global=False,
                       export_timeout_s=1.0, schedule_delay_ms=50)  # fmt: skip
    buf = io.StringIO()
    try:
        t0 = time.monotonic()
        outcomes = await run_batch([EXP] * 40, registry=REG, max_concurrency=8,
                                   tracer_provider=handle.tracer_provider)  # fmt: skip
        elapsed = time.monotonic() - t0
        assert all(o.ok for o in outcomes)
        # Runs never wait for the exporter: 40 runs finish well before one slow export would.
        assert elapsed < 2.5, f"runs waited on the exporter ({elapsed:.2f}s)"
        crucible.logging.configure(json=True, level="warning", stream=buf)
        t1 = time.monotonic()
        report = handle.shutdown(timeout_s=1.5)
        assert time.monotonic() - t1 < 4.0  # bounded, even though the endpoint never answers
    finally:
        structlog.reset_defaults()
        receiver.stop()
    expected = 40 * (1 + 3) + 1  # runs x (RUN + 3 stages) + the BATCH span
    assert report.ended == expected
    assert report.exported == 0
    # Every span accounted for, none silently: failed, dropped, or still in flight when
    # shutdown gave up (unexported).
    # (A batch still in flight may yet arrive after shutdown returns; the report cannot know.)
    assert report.lost == expected, report


@pytest.mark.postgres
async def test_store_lost_mid_run_keeps_the_result(tmp_path: Path) -> None:
    name = f"crucible_rel_{uuid.uuid4().hex[:10]}"
    try:
        admin = await asyncpg.connect(host="127.0.0.1", user="postgres", database="postgres",
                                      timeout=3)  # fmt: skip
    except (OSError, asyncpg.PostgresError) as err:
        missing_service(f"PostgreSQL not reachable on 127.0.0.1:5432: {err}")
    await admin.execute(f'CREATE DATABASE "{name}"')
    journal = tmp_path / "journal"
    store = RunStore(f"postgresql://postgres@127.0.0.1:5432/{name}", connect_timeout=2,
                     journal_after_s=1, journal_dir=journal)  # fmt: skip

    @stage("pull_the_plug", description="Drops the store's database", register=False)
    async def pull_the_plug(ctx: Context) -> Context:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        return ctx.put_metric("after_plug", True)

    buf = io.StringIO()
    crucible.logging.configure(json=True, level="warning", stream=buf)
    try:
        await store.open()
        ctx = await run(
            Experiment(id="plug", pipeline=[StageDef(name="quick"), StageDef(name="pull_the_plug"),
                                            StageDef(name="quick")]),
            registry=Registry([quick, pull_the_plug]), store=store, run_id="r-plug",
        )  # fmt: skip
        waiting = store.journal_pending()
    finally:
        await store.close()
        structlog.reset_defaults()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    assert ctx.get_metric("n") == 2 and ctx.get_metric("after_plug") is True
    assert ctx.completed_stages() == ["quick", "pull_the_plug"]
    # Nothing dropped: what the lost database could not take waits in the journal, run() returned
    # once its final record was there, and the store said so.
    records = [json.loads(line) for p in journal.glob("*.jsonl")
               for line in p.read_text().splitlines()[1:]]  # fmt: skip
    assert {r["run_id"] for r in records} == {"r-plug"}
    ops = [r["op"] for r in records]
    assert ops.count("finish_run") == 1 and ops.count("record_attempt") >= 2
    assert waiting == len(records)
    events = [json.loads(line) for line in buf.getvalue().splitlines()]
    names = [e["event"] for e in events]
    assert "run store unreachable; journaling records" in names
    assert "run store write failed" not in names
    (warned,) = [e for e in events if e["event"] == "run store journal has records waiting"]
    assert warned["records"] == len(records) and warned["journal"] == str(journal)


async def test_thousand_concurrent_runs_on_sqlite(tmp_path: Path) -> None:
    async with RunStore(tmp_path / "runs.db") as store:
        outcomes = await run_batch([EXP] * 1000, registry=REG, max_concurrency=1000,
                                   store=store, batch_id="thousand")  # fmt: skip
        assert [o.status for o in outcomes].count("completed") == 1000
        assert len({o.run_id for o in outcomes}) == 1000
        assert await store.count_runs(batch_id="thousand", status="completed") == 1000
        runs = await store.list_runs(batch_id="thousand", limit=2000)
        assert sorted(r.run_id for r in runs) == sorted(o.run_id for o in outcomes)
        sample = await store.get_run(outcomes[500].run_id)
        assert sample is not None and [a.stage for a in sample.attempts] == ["quick"] * 3
        assert sample.trace_id == outcomes[500].trace_id
        assert sample.metrics == {"n": 3}
