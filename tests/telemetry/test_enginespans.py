"""Engine spans built beneath the SDK's API equal those the public API makes, field by field.

Each comparison runs the same experiment twice on fresh SDK providers: once on the fast path
(``SdkSpans``, the default for an SDK provider) and once with ``CRUCIBLE_ENGINE_SPANS=api``
(``ApiSpans``, the public API), and compares every exported span with ids replaced by their
position (ids are random).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context as OtelContext
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.span import TraceState

from crucible import Context, Experiment, Registry, StageDef, StageFailed, run, stage
from crucible.telemetry import spans as tel
from crucible.telemetry.enginespans import UntracedSpans
from crucible.telemetry.sdkprobe import probe

calls: dict[str, int] = {}


@stage("opts", description="Records an event with a list", register=False)
async def opts(ctx: Context, options: dict[str, Any]) -> Context:
    return ctx.put_metric("n", 1).record_event("noted", size=3, tags=["a", "b"], obj={"k": 1})


@stage("flaky", description="Fails on its first attempt", register=False)
async def flaky(ctx: Context) -> Context:
    calls["flaky"] = calls.get("flaky", 0) + 1
    if calls["flaky"] == 1:
        raise ConnectionError("first attempt fails")
    return ctx


@stage("nested", description="Opens a span of its own and touches the stage span", register=False)
async def nested(ctx: Context) -> Context:
    current = trace.get_current_span()
    current.set_attribute("user.set", "yes")
    current.add_event("user event", {"x": 1})
    provider = ctx.assigns["provider"]
    with provider.get_tracer("user", "1.0").start_as_current_span("user work") as mine:
        mine.set_attribute("user.depth", 2)
    return ctx


@stage("boom", description="Always raises", register=False)
async def boom(ctx: Context) -> Context:
    raise RuntimeError("kaboom")


@pytest.fixture
def reg() -> Registry:
    calls.clear()
    return Registry([opts, flaky, nested, boom])


EXPERIMENT = Experiment(
    id="compare",
    pipeline=[
        StageDef(name="opts", options={"b": 2, "a": "x", "api_key": "hunter2"}),
        StageDef(name="opts", enabled=False),
        StageDef(name="flaky", retries=1, retry_backoff=0.001),
        StageDef(name="nested"),
        StageDef(name="boom"),
    ],
)


class Ended(SpanProcessor):
    """Every span the provider's processors see end (sampled or only recorded)."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []
        self.started: list[tuple[str, bool]] = []

    def on_start(self, span: Any, parent_context: OtelContext | None = None) -> None:
        self.started.append((span.name, parent_context is not None))

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def provider(**kwargs: Any) -> tuple[TracerProvider, InMemorySpanExporter, Ended]:
    exporter = InMemorySpanExporter()
    ended = Ended()
    tp = TracerProvider(resource=Resource.create({"service.name": "compare"}), **kwargs)
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    tp.add_span_processor(ended)
    return tp, exporter, ended


def shape(spans: Sequence[ReadableSpan]) -> list[dict[str, Any]]:
    """Every field of every span, ids replaced by the span's position among ``spans``."""
    pos = {s.context.span_id: i for i, s in enumerate(spans)}
    by_id = {s.context.span_id: s for s in spans}
    trace_ids = sorted({s.context.trace_id for s in spans})

    def local(text: str) -> str:
        for span_id, i in pos.items():
            text = text.replace(f"{span_id:016x}", f"<span {i}>")
        for i, trace_id in enumerate(trace_ids):
            text = text.replace(f"{trace_id:032x}", f"<trace {i}>")
        return text

    def outside(parent: SpanContext) -> str:  # a remote parent has a fixed id; a local one not
        return f"{parent.span_id:x}" if parent.is_remote else "<local, not among these>"

    def clean(attrs: Any, own: int = 0) -> list[tuple[str, Any]]:
        out = []
        for key, value in attrs.items():
            if key == "exception.stacktrace":
                value = value.strip().splitlines()[-1]
            if key == "cicd.pipeline.task.run.id" and f"{own:016x}".startswith(value):
                value = "<own id>"  # whole, or cut by a length limit
            out.append((key, local(value) if isinstance(value, str) else value))
        return out

    out = []
    for s in spans:
        parent = s.parent
        within = True
        if parent is not None and parent.span_id in by_id:
            p = by_id[parent.span_id]
            assert p.start_time is not None and p.end_time is not None
            assert s.start_time is not None and s.end_time is not None
            within = p.start_time <= s.start_time <= s.end_time <= p.end_time
        assert s.start_time is not None and s.end_time is not None
        out.append({
            "type": type(s).__name__,
            "name": s.name,
            "kind": s.kind,
            "trace": trace_ids.index(s.context.trace_id),
            "flags": int(s.context.trace_flags),
            "trace_state": s.context.trace_state.to_header(),
            "remote": s.context.is_remote,
            "parent": None if parent is None else pos.get(parent.span_id, outside(parent)),
            "parent_remote": None if parent is None else parent.is_remote,
            "parent_flags": None if parent is None else int(parent.trace_flags),
            "attributes": clean(s.attributes, s.context.span_id),
            "dropped_attributes": s.dropped_attributes,
            "events": [(e.name, clean(e.attributes)) for e in s.events],
            "events_in_span": all(s.start_time <= e.timestamp <= s.end_time for e in s.events),
            "dropped_events": s.dropped_events,
            "status": (s.status.status_code, s.status.description),
            "links": [(f"{x.context.span_id:x}", clean(x.attributes)) for x in s.links],
            "dropped_links": s.dropped_links,
            "resource": dict(s.resource.attributes),
            "scope": (
                s.instrumentation_scope.name if s.instrumentation_scope else None,
                s.instrumentation_scope.version if s.instrumentation_scope else None,
                s.instrumentation_scope.schema_url if s.instrumentation_scope else None,
            ),
            "ordered": s.start_time <= s.end_time,
            "within_parent": within,
        })  # fmt: skip
    return out


async def run_with(
    kind: str, monkeypatch: pytest.MonkeyPatch, reg: Registry, **kw: Any
) -> tuple[list[ReadableSpan], Ended, Context | None]:
    """Run EXPERIMENT on a fresh provider whose engine spans are ``kind`` (sdk or api)."""
    with monkeypatch.context() as env:
        if kind == "api":
            env.setenv("CRUCIBLE_ENGINE_SPANS", "api")
        else:
            env.delenv("CRUCIBLE_ENGINE_SPANS", raising=False)
        provider_kwargs = kw.pop("provider_kwargs", {})
        tp, exporter, ended = provider(**provider_kwargs)
        assert tel.telemetry_for(tp, None).spans.kind == kind
    calls.clear()
    ctx = None
    try:
        ctx = await run(
            kw.pop("experiment", EXPERIMENT), registry=reg, tracer_provider=tp, run_id="run-1",
            assigns={"provider": tp}, **kw,
        )  # fmt: skip
    except StageFailed as err:
        ctx = err.context
    return list(exporter.get_finished_spans()), ended, ctx


async def compare(monkeypatch: pytest.MonkeyPatch, reg: Registry, **kw: Any) -> list[Any]:
    fast, fast_ended, fast_ctx = await run_with("sdk", monkeypatch, reg, **dict(kw))
    api, api_ended, api_ctx = await run_with("api", monkeypatch, reg, **dict(kw))
    assert shape(fast) == shape(api)
    assert shape(fast_ended.spans) == shape(api_ended.spans)
    assert fast_ended.started == api_ended.started
    assert fast_ctx is not None and api_ctx is not None
    assert fast_ctx.trace is not None and api_ctx.trace is not None
    assert [(r.name, r.result, r.attempt) for r in fast_ctx.trace.spans] == [
        (r.name, r.result, r.attempt) for r in api_ctx.trace.spans
    ]
    return shape(fast)


async def test_fast_path_spans_equal_the_public_apis(
    monkeypatch: pytest.MonkeyPatch, reg: Registry
) -> None:
    other = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))
    spans = await compare(
        monkeypatch, reg, url="http://ui/runs/{run_id}#{span_id}",
        links=[Link(other, {"why": "rerun"})],
    )  # fmt: skip
    names = [s["name"] for s in spans]
    assert names == [
        "stage opts", "stage opts", "stage flaky", "stage flaky", "user work", "stage nested",
        "stage boom", "RUN compare",
    ]  # fmt: skip
    stage = dict(spans[0]["attributes"])
    assert stage["crucible.stage.option_keys"] == ("a", "api_key", "b")
    assert "hunter2" not in stage["crucible.stage.options"]
    assert stage["cicd.pipeline.task.run.id"] == "<own id>"
    assert stage["cicd.pipeline.task.run.url.full"] == "http://ui/runs/run-1#<span 0>"
    assert spans[0]["events"] == [
        ("noted", [("size", 3), ("tags", ("a", "b")), ("obj", "{'k': 1}")])
    ]
    assert spans[2]["status"][0].name == "ERROR" and spans[2]["events"][0][0] == "exception"
    assert spans[4]["parent"] == 5 and spans[4]["scope"][0] == "user"  # nested under the stage
    assert ("user.set", "yes") in spans[5]["attributes"]
    assert spans[7]["links"] == [("def", [("why", "rerun")])]
    assert all(s["within_parent"] and s["ordered"] and s["events_in_span"] for s in spans)


async def test_remote_parent_with_tracestate_and_baggage(
    monkeypatch: pytest.MonkeyPatch, reg: Registry
) -> None:
    parent = {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "vendor=opaque",
        "baggage": "team=ml",
    }
    spans = await compare(monkeypatch, reg, parent=parent)
    run_span = spans[-1]
    assert run_span["parent_remote"] is True and run_span["trace_state"] == "vendor=opaque"
    assert all(s["trace_state"] == "vendor=opaque" for s in spans)


async def test_limits_truncate_and_drop_alike(
    monkeypatch: pytest.MonkeyPatch, reg: Registry
) -> None:
    limits = SpanLimits(max_span_attributes=4, max_attribute_length=3, max_events=1)
    spans = await compare(monkeypatch, reg, provider_kwargs={"span_limits": limits})
    assert any(s["dropped_attributes"] for s in spans)
    texts = [v for s in spans for _, v in s["attributes"] if isinstance(v, str) and v != "<own id>"]
    assert texts and all(len(v) <= 3 for v in texts)


class PickySampler(Sampler):
    """Drops ``stage flaky``, records ``stage nested`` without sampling, tags everything else."""

    def should_sample(
        self,
        parent_context: OtelContext | None,
        trace_id: int,
        name: str,
        kind: Any = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        state = trace.get_current_span(parent_context).get_span_context().trace_state
        if name == "stage flaky":
            return SamplingResult(Decision.DROP, None, state)
        if name == "stage nested":
            return SamplingResult(Decision.RECORD_ONLY, attributes, state)
        return SamplingResult(
            Decision.RECORD_AND_SAMPLE, {**(attributes or {}), "sampler.saw": name}, state
        )

    def get_description(self) -> str:
        return "PickySampler"


async def test_a_users_sampler_is_honoured(monkeypatch: pytest.MonkeyPatch, reg: Registry) -> None:
    spans = await compare(monkeypatch, reg, provider_kwargs={"sampler": PickySampler()})
    names = [s["name"] for s in spans]
    assert "stage flaky" not in names and "stage nested" not in names  # dropped, record-only
    assert all(
        ("sampler.saw", s["name"]) in s["attributes"] for s in spans if s["scope"][0] == "crucible"
    )
    _, ended, ctx = await run_with(
        "sdk", monkeypatch, reg, provider_kwargs={"sampler": PickySampler()}
    )
    assert [s.name for s in ended.spans].count("stage nested") == 1  # recorded, not exported
    assert ctx is not None and ctx.trace is not None
    assert [r.name for r in ctx.trace.spans].count("stage flaky") == 2  # ids and times kept


async def test_ratio_sampler_drops_whole_runs_alike(
    monkeypatch: pytest.MonkeyPatch, reg: Registry
) -> None:
    spans = await compare(
        monkeypatch, reg, provider_kwargs={"sampler": ParentBased(TraceIdRatioBased(0.0))}
    )
    assert spans == []


def test_probe_accepts_this_sdk_and_refuses_what_it_does_not_know() -> None:
    tp = TracerProvider()
    assert probe(tp, tp.get_tracer("x")) is None

    class MyProvider(TracerProvider):
        pass

    mine = MyProvider()
    assert probe(mine, mine.get_tracer("x")) == "not an SDK provider"
    assert tel.telemetry_for(mine, None).spans.kind == "api"


async def test_a_wrapped_start_span_keeps_the_public_api(
    monkeypatch: pytest.MonkeyPatch, reg: Registry
) -> None:
    original = SdkTracer.start_span
    seen: list[str] = []

    def wrapped(self: SdkTracer, name: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(name)
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(SdkTracer, "start_span", wrapped)
    tp, exporter, _ = provider()
    assert probe(tp, tp.get_tracer("x")) == "Tracer.start_span is wrapped"
    assert tel.telemetry_for(tp, None).spans.kind == "api"
    await run(
        Experiment(id="w", pipeline=[StageDef(name="opts")]), registry=reg, tracer_provider=tp
    )
    assert seen == ["RUN w", "stage opts"]
    assert [s.name for s in exporter.get_finished_spans()] == ["stage opts", "RUN w"]


def untraced_pair() -> tuple[TracerProvider, UntracedSpans]:
    tp = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    return tp, UntracedSpans(tp.get_tracer("crucible"), tp)


def test_untraced_spans_carry_the_ids_and_flags_the_provider_would_give() -> None:
    tp, untraced = untraced_pair()
    root = untraced.start("RUN x", None, trace.SpanKind.SERVER, {})
    assert type(root) is NonRecordingSpan
    sc = root.get_span_context()
    assert sc.is_valid and not sc.is_remote and sc.trace_flags.sampled
    assert sc.trace_flags.random_trace_id  # as the SDK's random id generator marks its ids
    ctx = trace.set_span_in_context(root)
    child = untraced.start_child("stage s", root, ctx, {}).get_span_context()
    assert child.trace_id == sc.trace_id and child.span_id != sc.span_id
    assert child.trace_flags == sc.trace_flags
    unsampled = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(0))
    remote = trace.set_span_in_context(NonRecordingSpan(unsampled))
    under = untraced.start("RUN y", remote, trace.SpanKind.SERVER, {}).get_span_context()
    public = tp.get_tracer("crucible").start_span("RUN y", context=remote).get_span_context()
    assert (under.trace_id, under.trace_flags) == (public.trace_id, public.trace_flags)


def test_untraced_spans_are_recorded_once_a_processor_is_added() -> None:
    tp, untraced = untraced_pair()
    exporter = InMemorySpanExporter()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    span = untraced.start("RUN x", None, trace.SpanKind.SERVER, {"a": 1})
    untraced.finish(span, {"b": 2})
    [done] = exporter.get_finished_spans()
    assert done.name == "RUN x" and dict(done.attributes or {}) == {"a": 1, "b": 2}


async def test_untraced_run_fills_ctx_trace(reg: Registry) -> None:
    ctx = await run(Experiment(id="u", pipeline=[StageDef(name="opts")] * 2), registry=reg)
    assert tel.telemetry_for(None, None).spans.kind == "untraced"
    assert ctx.trace is not None and re.fullmatch(r"[0-9a-f]{32}", ctx.trace.trace_id or "")
    a, b = ctx.trace.spans
    assert a.span_id != b.span_id and a.parent_span_id == b.parent_span_id == ctx.trace.span_id
    assert a.start_ns <= a.end_ns <= b.start_ns <= b.end_ns
    assert ctx.telemetry_context["traceparent"].endswith(f"{ctx.trace.span_id}-01")


def test_checked_attributes_know_their_longest_string_and_refuse_other_values() -> None:
    from crucible.telemetry.attributes import Checked, checked

    made = checked({"a": "xyz", "b": ("hello", "hi"), "c": 7, "d": True})
    assert type(made) is Checked and made.longest == 5
    assert dict(made) == {"a": "xyz", "b": ("hello", "hi"), "c": 7, "d": True}
    as_list = {"a": ["not", "a", "tuple"]}
    assert checked(as_list) is as_list  # the SDK validates it, as before
    assert type(checked({})) is Checked and checked({}).longest == 0  # type: ignore[attr-defined]
