"""The engine: ordering, failures, timeouts, retries, cancellation, spans, trace, propagation."""

from __future__ import annotations

import io
import json
import threading
from typing import Any

import anyio
import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel

import crucible.logging
from crucible import (
    Context,
    Experiment,
    InvalidPipeline,
    Registry,
    StageDef,
    StageFailed,
    run,
    stage,
)
from crucible.testing import SpanCapture

HEX32 = r"^[0-9a-f]{32}$"


class ScaleOptions(BaseModel):
    factor: float = 2.0
    api_key: str | None = None


@stage("scale", description="Multiply metric x", register=False)
async def scale(ctx: Context, opts: ScaleOptions) -> Context:
    x = ctx.get_metric("x", 1.0) * opts.factor
    return ctx.put_metric("x", x).record_event("scaled", factor=opts.factor, tags=["a", "b"])


seen: dict[str, Any] = {}


@stage("sync_probe", description="Sync stage; records its thread", register=False)
def sync_probe(ctx: Context) -> Context:
    seen["thread"] = threading.get_ident()
    seen["carrier"] = dict(ctx.telemetry_context)
    seen["current"] = trace.get_current_span().get_span_context().span_id
    return ctx.assign(probed=True)


@stage("boom", description="Always raises", register=False)
async def boom(ctx: Context) -> Context:
    raise RuntimeError("kaboom")


@stage("not_ctx", description="Returns a dict", register=False)
async def not_ctx(ctx: Context) -> Any:
    return {"oops": 1}


@stage("sleepy", description="Sleeps", register=False)
async def sleepy(ctx: Context, opts: dict[str, Any]) -> Context:
    await anyio.sleep(float(opts.get("seconds", 10)))
    return ctx.put_metric("slept", True)


class FlakyOptions(BaseModel):
    failures: int = 2


@stage("flaky", description="Fails N times, then succeeds", register=False)
async def flaky(ctx: Context, opts: FlakyOptions) -> Context:
    n = seen.setdefault("flaky_calls", 0) + 1
    seen["flaky_calls"] = n
    if n <= opts.failures:
        raise ConnectionError(f"attempt {n} failed")
    return ctx.put_metric("flaky_ok_after", n)


class InnerSpan:
    name = "inner"
    description = "Opens its own span with the OpenTelemetry API"

    async def run(self, ctx: Context, opts: dict[str, Any]) -> Context:
        provider = ctx.assigns.get("provider") or trace.get_tracer_provider()
        with provider.get_tracer("user").start_as_current_span("user work"):
            pass
        return ctx


@pytest.fixture
def reg() -> Registry:
    seen.clear()
    return Registry([scale, sync_probe, boom, not_ctx, sleepy, flaky, InnerSpan])


def exp(*stages: StageDef, id: str = "exp1") -> Experiment:
    return Experiment(id=id, pipeline=list(stages))


async def test_runs_stages_in_order_and_marks_completion(reg: Registry) -> None:
    ctx = await run(
        exp(StageDef(name="scale", options={"factor": 3}), StageDef(name="scale")),
        registry=reg,
        run_id="r1",
        assigns={"user": "alice"},
    )
    assert ctx.get_metric("x") == 6.0
    assert ctx.completed_stages() == ["scale"]
    assert ctx.assigns["user"] == "alice"
    assert ctx.run_id == "r1" and ctx.experiment_id == "exp1"


async def test_trace_has_real_ids_and_one_record_per_attempt(reg: Registry) -> None:
    ctx = await run(exp(StageDef(name="scale"), StageDef(name="sync_probe")), registry=reg)
    t = ctx.trace
    assert t is not None and t.trace_id is not None and t.span_id is not None
    assert len(t.trace_id) == 32 and int(t.trace_id, 16) != 0
    assert len(t.span_id) == 16
    assert [r.stage for r in t.spans] == ["scale", "sync_probe"]
    for rec in t.spans:
        assert rec.parent_span_id == t.span_id and rec.result == "success" and rec.attempt == 1
        assert len(rec.span_id) == 16 and rec.end_ns >= rec.start_ns > 0
    assert t.spans[0].events[0].name == "scaled"
    assert list(t.pending_events) == []


async def test_spans_follow_cicd_conventions(reg: Registry, spans: SpanCapture) -> None:
    ctx = await run(
        exp(StageDef(name="scale", options={"factor": 2, "api_key": "sk-secret-1"})),
        registry=reg,
        run_id="run-42",
        tracer_provider=spans.provider,
    )
    run_span = spans.one("RUN exp1")
    stage_span = spans.one("stage scale")
    assert run_span.attributes is not None and stage_span.attributes is not None
    assert run_span.attributes["cicd.pipeline.name"] == "exp1"
    assert run_span.attributes["cicd.pipeline.run.id"] == "run-42"
    assert run_span.attributes["cicd.pipeline.result"] == "success"
    assert run_span.status.status_code == StatusCode.UNSET
    assert stage_span.kind == SpanKind.INTERNAL
    assert stage_span.parent is not None
    assert stage_span.parent.span_id == run_span.context.span_id
    assert stage_span.context.trace_id == run_span.context.trace_id
    assert stage_span.attributes["cicd.pipeline.task.name"] == "scale"
    assert stage_span.attributes["cicd.pipeline.task.run.result"] == "success"
    assert stage_span.attributes["crucible.stage.index"] == 0
    assert stage_span.attributes["crucible.stage.attempt"] == 1
    assert list(stage_span.attributes["crucible.stage.option_keys"]) == ["api_key", "factor"]
    assert stage_span.status.status_code == StatusCode.UNSET
    assert [e.name for e in stage_span.events] == ["scaled"]
    assert dict(stage_span.events[0].attributes or {}) == {"factor": 2.0, "tags": ("a", "b")}
    # Secrets never reach spans.
    dumped = json.dumps([dict(s.attributes or {}) for s in spans.spans()], default=str)
    assert "sk-secret-1" not in dumped and "[REDACTED]" in dumped
    # ctx.trace mirrors the exported spans.
    assert ctx.trace is not None
    assert ctx.trace.span_id == f"{run_span.context.span_id:016x}"
    assert ctx.trace.spans[0].span_id == f"{stage_span.context.span_id:016x}"
    assert ctx.trace.spans[0].start_ns == stage_span.start_time
    assert "run-42" not in run_span.name  # never run ids in span names


async def test_sync_stage_runs_in_worker_thread_with_stage_context(reg: Registry) -> None:
    ctx = await run(exp(StageDef(name="sync_probe")), registry=reg)
    assert seen["thread"] != threading.get_ident()
    assert ctx.assigns["probed"] is True
    assert ctx.trace is not None
    stage_span_id = ctx.trace.spans[0].span_id
    assert seen["carrier"]["traceparent"] == f"00-{ctx.trace.trace_id}-{stage_span_id}-01"
    assert f"{seen['current']:016x}" == stage_span_id  # the stage span is current in the thread


async def test_user_spans_nest_under_the_stage_span(reg: Registry, spans: SpanCapture) -> None:
    await run(
        exp(StageDef(name="inner")),
        registry=reg,
        tracer_provider=spans.provider,
        assigns={"provider": spans.provider},
    )
    stage_span = spans.one("stage inner")
    user = spans.one("user work")
    assert user.parent is not None and user.parent.span_id == stage_span.context.span_id
    assert user.context.trace_id == stage_span.context.trace_id


async def test_disabled_stage_is_skipped_and_recorded(reg: Registry, spans: SpanCapture) -> None:
    ctx = await run(
        exp(StageDef(name="boom", enabled=False), StageDef(name="scale")),
        registry=reg,
        tracer_provider=spans.provider,
    )
    assert ctx.trace is not None
    assert [(r.stage, r.result) for r in ctx.trace.spans] == [
        ("boom", "skip"),
        ("scale", "success"),
    ]
    assert ctx.completed_stages() == ["scale"]
    skip_attrs = spans.one("stage boom").attributes or {}
    assert skip_attrs["cicd.pipeline.task.run.result"] == "skip"


async def test_failing_stage_raises_stage_failed_and_keeps_history(
    reg: Registry, spans: SpanCapture
) -> None:
    with pytest.raises(StageFailed) as info:
        await run(
            exp(StageDef(name="scale"), StageDef(name="boom"), StageDef(name="scale")),
            registry=reg,
            tracer_provider=spans.provider,
        )
    err = info.value
    assert err.stage == "boom" and isinstance(err.cause, RuntimeError)
    assert err.context is not None
    assert err.context.get_metric("x") == 2.0  # the first stage's work is kept
    assert err.context.completed_stages() == ["scale"]
    assert err.context.trace is not None
    last = err.context.trace.spans[-1]
    assert (last.stage, last.result, last.error_type) == ("boom", "failure", "RuntimeError")
    assert last.error_message == "kaboom"
    boom_span = spans.one("stage boom")
    assert boom_span.status.status_code == StatusCode.ERROR
    assert "kaboom" in (boom_span.status.description or "")
    assert (boom_span.attributes or {})["error.type"] == "RuntimeError"
    assert (boom_span.attributes or {})["cicd.pipeline.task.run.result"] == "failure"
    exc_events = [e for e in boom_span.events if e.name == "exception"]
    assert exc_events and (exc_events[0].attributes or {})["exception.message"] == "kaboom"
    run_span = spans.one("RUN exp1")
    assert run_span.status.status_code == StatusCode.ERROR
    assert (run_span.attributes or {})["cicd.pipeline.result"] == "failure"
    assert len(spans.named("stage scale")) == 1  # nothing after the failure ran


async def test_non_context_return_is_a_type_error_naming_stage_and_type(reg: Registry) -> None:
    with pytest.raises(StageFailed) as info:
        await run(exp(StageDef(name="not_ctx")), registry=reg)
    assert isinstance(info.value.cause, TypeError)
    assert "not_ctx" in str(info.value.cause) and "dict" in str(info.value.cause)
    assert info.value.result == "error"


async def test_stage_timeout(reg: Registry, spans: SpanCapture) -> None:
    with anyio.fail_after(5):
        with pytest.raises(StageFailed) as info:
            await run(
                exp(StageDef(name="sleepy", timeout=0.05, options={"seconds": 5})),
                registry=reg,
                tracer_provider=spans.provider,
            )
    assert info.value.result == "timeout" and isinstance(info.value.cause, TimeoutError)
    assert "0.05" in str(info.value.cause)
    assert (spans.one("stage sleepy").attributes or {})["cicd.pipeline.task.run.result"] == (
        "timeout"
    )
    assert (spans.one("RUN exp1").attributes or {})["cicd.pipeline.result"] == "timeout"


async def test_run_timeout(reg: Registry) -> None:
    with anyio.fail_after(5):
        with pytest.raises(StageFailed) as info:
            await run(
                exp(StageDef(name="scale"), StageDef(name="sleepy", options={"seconds": 5})),
                registry=reg,
                timeout=0.1,
            )
    assert info.value.result == "timeout" and "run timeout" in str(info.value.cause)
    assert info.value.context is not None and info.value.context.get_metric("x") == 2.0


async def test_retries_each_attempt_its_own_span(reg: Registry, spans: SpanCapture) -> None:
    ctx = await run(
        exp(StageDef(name="flaky", retries=3, retry_backoff=0.001, options={"failures": 2})),
        registry=reg,
        tracer_provider=spans.provider,
    )
    assert ctx.get_metric("flaky_ok_after") == 3
    assert ctx.trace is not None
    assert [(r.attempt, r.result) for r in ctx.trace.spans] == [
        (1, "failure"),
        (2, "failure"),
        (3, "success"),
    ]
    assert len(spans.named("stage flaky")) == 3
    assert spans.one("RUN exp1").status.status_code == StatusCode.UNSET


async def test_retries_exhausted(reg: Registry) -> None:
    with pytest.raises(StageFailed) as info:
        await run(
            exp(StageDef(name="flaky", retries=1, retry_backoff=0.001, options={"failures": 5})),
            registry=reg,
        )
    assert isinstance(info.value.cause, ConnectionError)
    assert info.value.context is not None and info.value.context.trace is not None
    assert [r.attempt for r in info.value.context.trace.spans] == [1, 2]


async def test_outside_cancellation_propagates_and_ends_spans(
    reg: Registry, spans: SpanCapture
) -> None:
    with anyio.move_on_after(0.1) as scope:
        await run(
            exp(StageDef(name="scale"), StageDef(name="sleepy", options={"seconds": 5})),
            registry=reg,
            tracer_provider=spans.provider,
        )
        pytest.fail("run should have been cancelled")
    assert scope.cancelled_caught
    sleepy_span = spans.one("stage sleepy")
    assert (sleepy_span.attributes or {})["cicd.pipeline.task.run.result"] == "cancellation"
    run_span = spans.one("RUN exp1")
    assert (run_span.attributes or {})["cicd.pipeline.result"] == "cancellation"
    assert run_span.end_time is not None


async def test_invalid_pipeline_lists_every_problem_and_runs_nothing(
    reg: Registry, spans: SpanCapture
) -> None:
    with pytest.raises(InvalidPipeline) as info:
        await run(
            exp(
                StageDef(name="scale", options={"factor": "lots", "facter": 2}),
                StageDef(name="missing_stage"),
                StageDef(name="flaky", options={"failures": []}),
            ),
            registry=reg,
            tracer_provider=spans.provider,
        )
    problems = info.value.problems
    where = {(p.stage_index, p.stage, p.path) for p in problems}
    assert (0, "scale", "factor") in where and (0, "scale", "facter") in where
    assert (1, "missing_stage", "") in where and (2, "flaky", "failures") in where
    assert "unknown stage 'missing_stage'" in str(info.value)
    assert spans.spans() == []  # nothing ran


async def test_validate_options_warn_and_off(reg: Registry) -> None:
    bad = exp(StageDef(name="flaky", options={"failures": 0, "unknown": 1}))
    ctx = await run(bad, registry=reg, validate_options="warn")
    assert ctx.completed_stages() == ["flaky"]
    ctx = await run(bad, registry=reg, validate_options="off")
    assert ctx.completed_stages() == ["flaky"]
    with pytest.raises(ValueError, match="validate_options"):
        await run(bad, registry=reg, validate_options="loud")  # type: ignore[arg-type]


async def test_import_paths_need_explicit_permission() -> None:
    e = exp(StageDef(name="imported", module="tests.engine.test_engine:scale"))
    with pytest.raises(InvalidPipeline, match="allow_imports=True"):
        await run(e, registry=Registry())
    ctx = await run(e, registry=Registry(), allow_imports=True)
    assert ctx.get_metric("x") == 2.0 and ctx.completed_stages() == ["imported"]
    with pytest.raises(InvalidPipeline, match="cannot be loaded"):
        await run(
            exp(StageDef(name="x", module="no_such_pkg.mod:thing")),
            registry=Registry(),
            allow_imports=True,
        )


TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    "parent",
    [TP, {"traceparent": TP, "tracestate": "vendor=1"}, {"Traceparent": TP}],
)
async def test_parent_traceparent_and_carrier(
    reg: Registry, spans: SpanCapture, parent: Any
) -> None:
    ctx = await run(exp(StageDef(name="scale")), registry=reg, tracer_provider=spans.provider,
                    parent=parent)  # fmt: skip
    run_span = spans.one("RUN exp1")
    assert ctx.trace is not None and ctx.trace.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert run_span.parent is not None and run_span.parent.span_id == 0xB7AD6B7169203331
    if isinstance(parent, dict) and "tracestate" in parent:
        assert ctx.telemetry_context["tracestate"] == "vendor=1"


async def test_parent_otel_context_and_ambient_span(reg: Registry, spans: SpanCapture) -> None:
    tracer = spans.provider.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        ctx = await run(exp(StageDef(name="scale")), registry=reg, tracer_provider=spans.provider)
    rid = request.get_span_context()
    assert ctx.trace is not None and ctx.trace.trace_id == f"{rid.trace_id:032x}"
    assert spans.one("RUN exp1").parent.span_id == rid.span_id  # type: ignore[union-attr]
    spans.clear()
    with tracer.start_as_current_span("other") as other:
        explicit = trace.set_span_in_context(other)
    ctx = await run(exp(StageDef(name="scale")), registry=reg, tracer_provider=spans.provider,
                    parent=explicit)  # fmt: skip
    assert ctx.trace is not None
    assert ctx.trace.trace_id == f"{other.get_span_context().trace_id:032x}"


async def test_traceparent_env_var_and_bad_parent(
    reg: Registry, spans: SpanCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACEPARENT", TP)
    ctx = await run(exp(StageDef(name="scale")), registry=reg, tracer_provider=spans.provider)
    assert ctx.trace is not None and ctx.trace.trace_id == TP.split("-")[1]
    monkeypatch.delenv("TRACEPARENT")
    ctx2 = await run(exp(StageDef(name="scale")), registry=reg, tracer_provider=spans.provider)
    assert ctx2.trace is not None and ctx2.trace.trace_id != ctx.trace.trace_id
    with pytest.raises(ValueError, match="traceparent"):
        await run(exp(StageDef(name="scale")), registry=reg, parent="not-a-traceparent")
    with pytest.raises(TypeError, match="parent must be"):
        await run(exp(StageDef(name="scale")), registry=reg, parent=42)


async def test_trace_filled_without_any_configured_provider(reg: Registry) -> None:
    assert isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider
    )
    ctx = await run(exp(StageDef(name="scale")), registry=reg)
    assert ctx.trace is not None and ctx.trace.trace_id is not None
    assert int(ctx.trace.trace_id, 16) != 0 and len(ctx.trace.spans) == 1


async def test_metrics_are_recorded(reg: Registry) -> None:
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    await run(exp(StageDef(name="scale")), registry=reg, meter_provider=mp)
    with pytest.raises(StageFailed):
        await run(exp(StageDef(name="boom")), registry=reg, meter_provider=mp)
    data = reader.get_metrics_data()
    assert data is not None
    metrics = {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    assert {"cicd.pipeline.run.duration", "cicd.pipeline.run.active", "cicd.pipeline.run.errors",
            "crucible.stage.duration"} <= set(metrics)  # fmt: skip
    assert metrics["cicd.pipeline.run.duration"].unit == "s"
    errors = metrics["cicd.pipeline.run.errors"].data.data_points  # type: ignore[union-attr]
    assert sum(p.value for p in errors) == 1  # type: ignore[union-attr]
    active = metrics["cicd.pipeline.run.active"].data.data_points  # type: ignore[union-attr]
    assert sum(p.value for p in active) == 0  # type: ignore[union-attr]
    mp.shutdown()


async def test_logs_carry_run_stage_and_trace_ids(reg: Registry) -> None:
    @stage("logger", description="logs a line", register=False)
    async def logger_stage(ctx: Context) -> Context:
        structlog.get_logger("user").info("inside stage", n=1)
        return ctx

    buf = io.StringIO()
    crucible.logging.configure(json=True, level="info", stream=buf)
    try:
        ctx = await run(exp(StageDef(name="logger")), registry=Registry([logger_stage]),
                        run_id="run-log")  # fmt: skip
        structlog.get_logger("user").info("after the run")
    finally:
        structlog.reset_defaults()
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    inside = next(line for line in lines if line["event"] == "inside stage")
    assert ctx.trace is not None
    assert inside["experiment_id"] == "exp1" and inside["run_id"] == "run-log"
    assert inside["stage"] == "logger" and inside["trace_id"] == ctx.trace.trace_id
    assert inside["span_id"] == ctx.trace.spans[0].span_id
    after = next(line for line in lines if line["event"] == "after the run")
    assert "stage" not in after and "run_id" not in after  # nothing leaks out of the run


async def test_concurrent_runs_do_not_mix(reg: Registry, spans: SpanCapture) -> None:
    results: dict[str, Context] = {}

    async def one(i: int) -> None:
        results[f"r{i}"] = await run(
            exp(StageDef(name="scale", options={"factor": i}), StageDef(name="sync_probe"),
                id=f"e{i}"),
            registry=reg, run_id=f"r{i}", tracer_provider=spans.provider,
        )  # fmt: skip

    async with anyio.create_task_group() as tg:
        for i in range(40):
            tg.start_soon(one, i)
    trace_ids = {c.trace.trace_id for c in results.values() if c.trace}
    assert len(trace_ids) == 40
    for i in range(40):
        c = results[f"r{i}"]
        assert c.get_metric("x") == float(i) and c.experiment_id == f"e{i}"
        assert c.trace is not None and all(
            r.parent_span_id == c.trace.span_id for r in c.trace.spans
        )
    by_trace: dict[int, set[str]] = {}
    for s in spans.spans():
        by_trace.setdefault(s.context.trace_id, set()).add(s.name)
    assert all(len(names) == 3 for names in by_trace.values())  # RUN + 2 stages, never mixed


async def test_experiment_as_mapping_and_bad_types(reg: Registry) -> None:
    ctx = await run({"id": "m", "pipeline": [{"name": "scale"}]}, registry=reg)
    assert ctx.get_metric("x") == 2.0
    with pytest.raises(TypeError, match="Experiment or a mapping"):
        await run(42, registry=reg)  # type: ignore[arg-type]
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="timeout must be positive seconds"):
            await run(exp(), registry=reg, timeout=bad)


async def test_empty_pipeline_succeeds(reg: Registry, spans: SpanCapture) -> None:
    ctx = await run(Experiment(id="empty"), registry=reg, tracer_provider=spans.provider)
    assert ctx.trace is not None and list(ctx.trace.spans) == []
    assert (spans.one("RUN empty").attributes or {})["cicd.pipeline.result"] == "success"


async def test_sampled_out_runs_still_fill_ctx_trace(reg: Registry) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    ctx = await run(exp(StageDef(name="scale"), StageDef(name="sync_probe")), registry=reg,
                    tracer_provider=provider)  # fmt: skip
    assert exporter.get_finished_spans() == ()  # nothing recorded or exported
    assert ctx.trace is not None and int(ctx.trace.trace_id or "0", 16) != 0
    assert [r.stage for r in ctx.trace.spans] == ["scale", "sync_probe"]
    assert all(r.end_ns >= r.start_ns > 0 for r in ctx.trace.spans)
    assert ctx.telemetry_context["traceparent"].endswith("-00")  # not sampled, said so
