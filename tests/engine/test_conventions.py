"""CI/CD semantic conventions as the release candidate states them; logs name the right span."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import structlog
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.trace import SpanKind, StatusCode

import crucible.logging
from crucible import Context, Experiment, Registry, StageDef, StageFailed, run, stage
from crucible.errors import StageError
from crucible.testing import SpanCapture


@stage("fine", description="Succeeds", register=False)
async def fine(ctx: Context) -> Context:
    return ctx.put_metric("fine", 1)


@stage("raises", description="Raises", register=False)
async def raises(ctx: Context) -> Context:
    raise RuntimeError("stage broke")


@stage("wrong_type", description="Returns a dict", register=False)
async def wrong_type(ctx: Context) -> Any:
    return {"not": "a context"}


@stage("gives_up", description="Records work, then fails keeping it", register=False)
async def gives_up(ctx: Context) -> Context:
    ctx = ctx.put_metric("rows_seen", 7).record_event("checked", rows=7)
    ctx = ctx.record_event("bad row", row=3)
    raise StageError("row 3 is malformed", context=ctx)


REG = Registry([fine, raises, wrong_type, gives_up])


def exp(*names: str, **stage_kw: Any) -> Experiment:
    return Experiment(id="conv", pipeline=[StageDef(name=n, **stage_kw) for n in names])


async def test_run_span_is_server_and_stage_spans_internal(spans: SpanCapture) -> None:
    await run(exp("fine"), registry=REG, tracer_provider=spans.provider)
    assert spans.one("RUN conv").kind == SpanKind.SERVER
    assert spans.one("stage fine").kind == SpanKind.INTERNAL


async def test_task_url_only_when_a_url_is_known(spans: SpanCapture) -> None:
    template = "http://svc.local/runs/{run_id}?trace={trace_id}&span={span_id}"
    ctx = await run(
        exp("fine"), registry=REG, tracer_provider=spans.provider, run_id="r-url", url=template
    )
    stage_span = spans.one("stage fine")
    assert ctx.trace is not None
    sid = ctx.trace.spans[0].span_id
    assert stage_span.attributes is not None
    assert stage_span.attributes["cicd.pipeline.task.run.url.full"] == (
        f"http://svc.local/runs/r-url?trace={ctx.trace.trace_id}&span={sid}"
    )
    spans.clear()
    await run(exp("fine"), registry=REG, tracer_provider=spans.provider)
    assert "cicd.pipeline.task.run.url.full" not in (spans.one("stage fine").attributes or {})


async def test_raising_is_failure_and_a_bad_return_is_an_engine_error(
    spans: SpanCapture,
) -> None:
    with pytest.raises(StageFailed):
        await run(exp("raises"), registry=REG, tracer_provider=spans.provider)
    raised = spans.one("stage raises").attributes or {}
    assert raised["cicd.pipeline.task.run.result"] == "failure"
    assert (spans.one("RUN conv").attributes or {})["cicd.pipeline.result"] == "failure"
    spans.clear()
    with pytest.raises(StageFailed) as info:
        await run(exp("wrong_type"), registry=REG, tracer_provider=spans.provider)
    assert info.value.result == "error" and isinstance(info.value.cause, TypeError)
    bad = spans.one("stage wrong_type").attributes or {}
    assert bad["cicd.pipeline.task.run.result"] == "error"
    assert (spans.one("RUN conv").attributes or {})["cicd.pipeline.result"] == "error"


async def test_run_metrics_carry_the_run_state() -> None:
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    await run(exp("fine"), registry=REG, meter_provider=mp)
    data = reader.get_metrics_data()
    assert data is not None
    points = {
        m.name: list(m.data.data_points)  # type: ignore[union-attr]
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    for name in ("cicd.pipeline.run.duration", "cicd.pipeline.run.active"):
        assert points[name], name
        for p in points[name]:
            assert p.attributes["cicd.pipeline.run.state"] == "executing"
            assert p.attributes["cicd.pipeline.name"] == "conv"
    assert points["cicd.pipeline.run.duration"][0].attributes["cicd.pipeline.result"] == "success"
    mp.shutdown()


async def test_metric_attributes_carry_no_secret_of_the_run() -> None:
    secret = "metric-secret-5353"
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    with pytest.raises(StageFailed):
        await run(Experiment(id=f"conv-{secret}", pipeline=[StageDef(name="raises")]),
                  registry=REG, meter_provider=mp, assigns={"token": secret})  # fmt: skip
    data = reader.get_metrics_data()
    mp.shutdown()
    assert data is not None
    attributes = [
        dict(p.attributes or {})
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        for p in m.data.data_points  # type: ignore[union-attr]
    ]
    assert len(attributes) >= 3 and secret not in str(attributes)
    assert {"conv-[REDACTED]"} == {a["cicd.pipeline.name"] for a in attributes}


async def test_attempt_log_lines_carry_the_attempt_span() -> None:
    buf = io.StringIO()
    crucible.logging.configure(json=True, level="warning", stream=buf)
    try:
        with pytest.raises(StageFailed) as info:
            await run(exp("raises", retries=1, retry_backoff=0.001), registry=REG)
    finally:
        structlog.reset_defaults()
    ctx = info.value.context
    assert ctx is not None and ctx.trace is not None
    attempt_spans = [s.span_id for s in ctx.trace.spans]
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    failed = [line for line in lines if line["event"] == "stage failed"]
    retrying = [line for line in lines if line["event"] == "stage attempt failed; retrying"]
    assert [line["span_id"] for line in failed] == attempt_spans
    assert [line["span_id"] for line in retrying] == attempt_spans[:1]
    assert all(line["trace_id"] == ctx.trace.trace_id for line in failed + retrying)
    assert ctx.trace.span_id not in {line["span_id"] for line in failed}


async def test_stage_error_keeps_events_and_metrics(spans: SpanCapture) -> None:
    with pytest.raises(StageFailed) as info:
        await run(exp("fine", "gives_up"), registry=REG, tracer_provider=spans.provider)
    failed = info.value
    assert isinstance(failed.cause, StageError) and failed.result == "failure"
    kept = failed.context
    assert kept is not None and kept.metrics == {"fine": 1, "rows_seen": 7}
    assert kept.trace is not None and not kept.trace.pending_events
    record = kept.trace.spans[-1]
    assert record.stage == "gives_up" and record.result == "failure"
    assert [e.name for e in record.events] == ["checked", "bad row"]
    span = spans.one("stage gives_up")
    assert [e.name for e in span.events] == ["checked", "bad row", "exception"]
    assert span.status.status_code == StatusCode.ERROR
    assert "row 3 is malformed" in (span.status.description or "")
    assert kept.telemetry_context["traceparent"].split("-")[2] == kept.trace.span_id
