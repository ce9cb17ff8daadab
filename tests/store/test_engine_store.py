"""The engine writes every run, attempt and artifact through a real SQLite run store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from crucible import (
    Context,
    DuplicateRun,
    Experiment,
    Registry,
    StageDef,
    StageFailed,
    run,
    stage,
)
from crucible.store import RunStore

calls: list[str] = []


@stage("ok", description="Records a metric and an artifact", register=False)
async def ok(ctx: Context, opts: dict[str, Any]) -> Context:
    calls.append("ok")
    return ctx.put_metric("score", 0.9).put_artifact(
        "model", {"location": "/tmp/model.bin", "format": "bin"}
    )


@stage("bad", description="Raises", register=False)
async def bad(ctx: Context) -> Context:
    raise KeyError("missing column")


@stage("slow", description="Sleeps", register=False)
async def slow(ctx: Context) -> Context:
    await anyio.sleep(10)
    return ctx


REG = Registry([ok, bad, slow])


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    async with RunStore(tmp_path / "runs.db") as s:
        yield s


async def test_completed_run_is_stored_with_attempts_and_artifacts(store: RunStore) -> None:
    exp = Experiment(
        id="stored",
        pipeline=[StageDef(name="ok", options={"api_key": "sk-9"}), StageDef(name="ok")],
    )
    ctx = await run(exp, registry=REG, store=store, run_id="r1")
    info = await store.get_run("r1")
    assert info is not None and info.status == "completed"
    assert ctx.trace is not None and info.trace_id == ctx.trace.trace_id
    assert info.metrics == {"score": 0.9}
    assert [(a.stage, a.result, a.span_id) for a in info.attempts] == [
        ("ok", "success", r.span_id) for r in ctx.trace.spans
    ]
    assert [(a.name, a.location, a.format) for a in info.artifacts] == [
        ("model", "/tmp/model.bin", "bin")
    ]
    exp_info = await store.get_experiment("stored")
    assert exp_info is not None and "sk-9" not in str(exp_info.definition)


async def test_failed_run_is_stored_failed_with_the_stage(store: RunStore) -> None:
    retrying = StageDef(name="bad", retries=1, retry_backoff=0.001)
    exp = Experiment(id="f", pipeline=[StageDef(name="ok"), retrying])
    with pytest.raises(StageFailed):
        await run(exp, registry=REG, store=store, run_id="r2")
    info = await store.get_run("r2")
    assert info is not None and info.status == "failed"
    assert info.failure_stage == "bad" and info.error_type == "KeyError"
    assert "missing column" in (info.failure_message or "")
    assert info.metrics == {"score": 0.9}  # the last good context's metrics are kept
    assert [(a.stage, a.attempt, a.result) for a in info.attempts] == [
        ("ok", 1, "success"), ("bad", 1, "failure"), ("bad", 2, "failure"),
    ]  # fmt: skip


async def test_timed_out_and_cancelled_runs(store: RunStore) -> None:
    with pytest.raises(StageFailed):
        await run(Experiment(id="t", pipeline=[StageDef(name="slow", timeout=0.05)]),
                  registry=REG, store=store, run_id="r3")  # fmt: skip
    with anyio.move_on_after(0.1):
        await run(Experiment(id="c", pipeline=[StageDef(name="ok"), StageDef(name="slow")]),
                  registry=REG, store=store, run_id="r4")  # fmt: skip
    t, c = await store.get_run("r3"), await store.get_run("r4")
    assert t is not None and t.status == "timed_out"
    assert c is not None and c.status == "cancelled" and c.failure_stage == "slow"
    assert [a.result for a in c.attempts] == ["success", "cancellation"]


async def test_duplicate_run_id_is_refused_and_the_first_record_kept(store: RunStore) -> None:
    calls.clear()
    exp = Experiment(id="d", pipeline=[StageDef(name="ok")])
    await run(exp, registry=REG, store=store, run_id="same")
    with pytest.raises(DuplicateRun, match="already exists"):
        await run(Experiment(id="d", pipeline=[StageDef(name="bad")]), registry=REG,
                  store=store, run_id="same")  # fmt: skip
    info = await store.get_run("same")
    assert info is not None and info.status == "completed" and len(info.attempts) == 1
    assert calls == ["ok"]


async def test_run_cancelled_while_an_observer_starts_it_is_stored_cancelled(
    tmp_path: Path,
) -> None:
    from crucible.observers import RunObserver, RunStart

    class SlowStart(RunObserver):
        async def on_run_start(self, *, run: RunStart) -> None:
            await anyio.sleep(30)

    registry = Registry([ok])
    exp = Experiment(id="e", pipeline=[StageDef(name="ok")])
    async with RunStore(tmp_path / "runs.db") as store:
        with anyio.move_on_after(0.3) as scope:
            await run(exp, registry=registry, store=store, observers=[SlowStart()])
        assert scope.cancelled_caught
        [info] = await store.list_runs()
        assert info.status == "cancelled"
        assert info.failure_message == "cancelled as it started"


async def test_the_store_knows_whether_a_runs_spans_were_exported(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    def exporting(**kwargs: Any) -> TracerProvider:
        provider = TracerProvider(**kwargs)
        provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        return provider

    exp = Experiment(id="e", pipeline=[StageDef(name="ok")])
    async with RunStore(tmp_path / "runs.db") as store:
        cases = {
            "untraced": await run(exp, registry=REG, store=store),
            "traced": await run(exp, registry=REG, store=store, tracer_provider=exporting()),
            "no processor": await run(exp, registry=REG, store=store,
                                      tracer_provider=TracerProvider()),
            "sampled out": await run(exp, registry=REG, store=store,
                                     tracer_provider=exporting(sampler=ALWAYS_OFF)),
        }  # fmt: skip
        found = {name: await store.get_run(ctx.run_id) for name, ctx in cases.items()}
    assert {name: info.trace_exported for name, info in found.items() if info} == {
        "untraced": False, "traced": True, "no processor": False, "sampled out": False
    }  # fmt: skip
