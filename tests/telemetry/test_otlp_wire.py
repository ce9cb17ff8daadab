"""Our OTLP wire encoding parses into exactly the message OpenTelemetry's own encoder builds."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from crucible.telemetry.offload import flatten
from crucible.telemetry.otlp_wire import encode_request

ATTRS = {
    "s": "text",
    "empty": "",
    "unicode": "naïve ✓",
    "i": 7,
    "neg": -3,
    "big": 2**62,
    "zero": 0,
    "t": True,
    "f": False,
    "x": 2.5,
    "strs": ["a", "b"],
    "ints": [1, -2],
    "bools": [True, False],
    "floats": [0.5],
}


def spans(provider: TracerProvider, memory: InMemorySpanExporter) -> list[ReadableSpan]:
    remote = SpanContext(
        0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "v1")]),
    )  # fmt: skip
    tracer = provider.get_tracer("scope-a", "1.0", schema_url="https://schema/a")
    other = provider.get_tracer("scope-b", attributes={"lib": "b"})
    parent = set_span_in_context(NonRecordingSpan(remote))
    with tracer.start_as_current_span("root", context=parent, kind=SpanKind.SERVER) as root:
        root.set_attributes(ATTRS)
        link = Link(remote, {"why": "batch"})
        for kind in SpanKind:
            with other.start_as_current_span(f"k-{kind.name}", kind=kind, links=[link]) as sp:
                sp.add_event("evt", {"n": 1, "ok": True})
                sp.add_event("bare")
        with tracer.start_as_current_span("err") as sp:
            sp.set_status(Status(StatusCode.ERROR, "went wrong"))
        with tracer.start_as_current_span("ok") as sp:
            sp.set_status(Status(StatusCode.OK))
    return list(memory.get_finished_spans())


def collect(resource: Resource) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return spans(provider, memory)


def decoded(spans: list[ReadableSpan]) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(encode_request([flatten(s) for s in spans]))


def test_rich_spans_match_the_opentelemetry_encoder() -> None:
    batch = collect(Resource({"service.name": "wire", "n": 3}, schema_url="https://schema/r"))
    batch += collect(Resource({"service.name": "other"}))  # two resources in one request
    ours = decoded(batch)
    assert ours == encode_spans(batch)
    assert len(ours.resource_spans) == 2
    assert sum(len(ss.spans) for rs in ours.resource_spans for ss in rs.scope_spans) == len(batch)


def test_cached_attribute_pairs_keep_types_apart() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "wire"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    for value in (1, True, "1", 1.0, 1, "1", True):  # equal or equal-hashing values
        tracer.start_span("s", attributes={"a": value}).end()
    batch = list(memory.get_finished_spans())
    ours = decoded(batch)
    assert ours == encode_spans(batch)
    values = [s.attributes[0].value for s in ours.resource_spans[0].scope_spans[0].spans]
    assert [v.WhichOneof("value") for v in values] == [
        "int_value", "bool_value", "string_value", "double_value",
        "int_value", "string_value", "bool_value",
    ]  # fmt: skip
