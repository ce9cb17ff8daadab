"""The OTLP test receivers decode what the real OpenTelemetry OTLP exporters send."""

from __future__ import annotations

import gzip
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]
import pytest
from google.protobuf import json_format  # type: ignore[import-untyped, unused-ignore]
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanKind, Status, StatusCode

from crucible.telemetry.jsonl import read_otlp_jsonl
from crucible.testing.otlp import (
    OtlpGrpcReceiver,
    OtlpHttpReceiver,
    ReceivedSpan,
    RotelHop,
    rotel_available,
    spans_from_request,
)

pytestmark = [pytest.mark.otlp]

SERVICE = "crucible-test-svc"


@pytest.fixture
def http_receiver() -> Iterator[OtlpHttpReceiver]:
    with OtlpHttpReceiver() as receiver:
        yield receiver


@pytest.fixture
def grpc_receiver() -> Iterator[OtlpGrpcReceiver]:
    with OtlpGrpcReceiver() as receiver:
        yield receiver


def emit_tree(exporter: SpanExporter, *, batch: bool = False) -> tuple[str, str, str]:
    """Export a parent and an erroring child through a real SDK; return (trace, parent, child)."""
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("crucible.tests", "1.2.3")
    try:
        with tracer.start_as_current_span("RUN exp1", kind=SpanKind.SERVER) as parent:
            parent.set_attribute("cicd.pipeline.name", "exp1")
            with tracer.start_as_current_span("stage load") as child:
                child.set_attributes(
                    {"crucible.stage.index": 0, "ratio": 0.5, "ok": False, "tags": ["a", "b"]}
                )
                child.add_event("rows.loaded", {"rows": 42})
                child.set_status(Status(StatusCode.ERROR, "boom"))
        if batch:
            assert provider.force_flush(timeout_millis=5000)
    finally:
        provider.shutdown()
    ctx_p, ctx_c = parent.get_span_context(), child.get_span_context()
    return (
        format(ctx_p.trace_id, "032x"),
        format(ctx_p.span_id, "016x"),
        format(ctx_c.span_id, "016x"),
    )


def assert_tree(spans: list[ReceivedSpan], ids: tuple[str, str, str]) -> None:
    trace_id, parent_id, child_id = ids
    by_name = {s.name: s for s in spans}
    assert set(by_name) == {"RUN exp1", "stage load"}
    parent, child = by_name["RUN exp1"], by_name["stage load"]
    assert parent.trace_id == child.trace_id == trace_id
    assert (parent.span_id, child.span_id) == (parent_id, child_id)
    assert parent.parent_span_id is None
    assert child.parent_span_id == parent.span_id
    assert (parent.kind, child.kind) == ("SERVER", "INTERNAL")
    assert parent.attributes == {"cicd.pipeline.name": "exp1"}
    assert child.attributes == {
        "crucible.stage.index": 0,
        "ratio": 0.5,
        "ok": False,
        "tags": ("a", "b"),
    }
    assert (child.status_code, child.status_message) == ("ERROR", "boom")
    assert parent.status_code == "UNSET"
    assert child.events == (("rows.loaded", {"rows": 42}),)
    assert child.events[0].name == "rows.loaded"
    assert child.resource_attributes["service.name"] == SERVICE == child.service_name
    assert (child.scope_name, child.scope_version) == ("crucible.tests", "1.2.3")
    assert parent.start_ns <= child.start_ns <= child.end_ns <= parent.end_ns
    assert child.duration_ns >= 0


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_http_protobuf_exporter_tree_is_decoded(
    http_receiver: OtlpHttpReceiver, compression: Compression
) -> None:
    exporter = HttpSpanExporter(
        endpoint=http_receiver.traces_endpoint, timeout=2, compression=compression
    )
    ids = emit_tree(exporter)
    assert_tree(http_receiver.wait_for_spans(2, timeout=2.0), ids)
    assert http_receiver.request_count == 2  # SimpleSpanProcessor: one request per span
    assert len(http_receiver.requests) == 2
    assert http_receiver.endpoint.startswith("http://127.0.0.1:")


def test_grpc_exporter_batch_tree_is_decoded(grpc_receiver: OtlpGrpcReceiver) -> None:
    exporter = GrpcSpanExporter(endpoint=grpc_receiver.endpoint, timeout=2)
    ids = emit_tree(exporter, batch=True)
    assert_tree(grpc_receiver.wait_for_spans(2, timeout=2.0), ids)
    assert grpc_receiver.request_count == 1  # one batch
    assert grpc_receiver.address == f"127.0.0.1:{grpc_receiver.port}"


def test_grpc_exporter_with_plain_address_and_insecure(grpc_receiver: OtlpGrpcReceiver) -> None:
    exporter = GrpcSpanExporter(endpoint=grpc_receiver.address, insecure=True, timeout=2)
    ids = emit_tree(exporter)
    assert_tree(grpc_receiver.wait_for_spans(2, timeout=2.0), ids)


OTLP_JSON = {
    "resourceSpans": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "js"}}]},
            "scopeSpans": [
                {
                    "scope": {"name": "manual"},
                    "spans": [
                        {
                            "traceId": "5b8efff798038103d269b633813fc60c",
                            "spanId": "eee19b7ec3c1b174",
                            "parentSpanId": "eee19b7ec3c1b173",
                            "name": "json-span",
                            "kind": 3,
                            "startTimeUnixNano": "1544712660000000000",
                            "endTimeUnixNano": "1544712661000000000",
                            "attributes": [
                                {"key": "n", "value": {"intValue": "7"}},
                                {
                                    "key": "xs",
                                    "value": {
                                        "arrayValue": {
                                            "values": [{"doubleValue": 1.5}, {"boolValue": True}]
                                        }
                                    },
                                },
                            ],
                            "events": [{"name": "ev", "timeUnixNano": "1544712660500000000"}],
                            "links": [
                                {
                                    "traceId": "00000000000000000000000000000001",
                                    "spanId": "0000000000000002",
                                    "attributes": [],
                                }
                            ],
                            "status": {"code": "STATUS_CODE_OK"},
                        }
                    ],
                }
            ],
        }
    ]
}


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, str]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers.get("Content-Type", "")


@pytest.mark.parametrize("gzipped", [False, True])
def test_http_json_with_hex_ids(http_receiver: OtlpHttpReceiver, gzipped: bool) -> None:
    body = json.dumps(OTLP_JSON).encode()
    headers = {"Content-Type": "application/json"}
    if gzipped:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    status, reply, content_type = post(http_receiver.traces_endpoint, body, headers)
    assert (status, content_type) == (200, "application/json")
    assert json.loads(reply) == {}
    [span] = http_receiver.wait_for_spans(1, timeout=1.0)
    assert span.trace_id == "5b8efff798038103d269b633813fc60c"
    assert (span.span_id, span.parent_span_id) == ("eee19b7ec3c1b174", "eee19b7ec3c1b173")
    assert (span.name, span.kind, span.status_code) == ("json-span", "CLIENT", "OK")
    assert span.duration_ns == 1_000_000_000
    assert span.attributes == {"n": 7, "xs": (1.5, True)}
    assert span.events == (("ev", {}),)
    assert span.links == (("00000000000000000000000000000001", "0000000000000002", {}),)
    assert (span.service_name, span.scope_name) == ("js", "manual")


def test_http_rejects_bad_input_and_accepts_other_signals(
    http_receiver: OtlpHttpReceiver,
) -> None:
    url = http_receiver.traces_endpoint
    assert post(url, b"\xff\xff", {"Content-Type": "application/x-protobuf"})[0] == 400
    assert post(url, b"{not json", {"Content-Type": "application/json"})[0] == 400
    assert post(url, b"", {"Content-Type": "text/plain"})[0] == 415
    bad_gzip = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    assert post(url, b"not gzip", bad_gzip)[0] == 400
    assert post(http_receiver.endpoint + "/v1/nope", b"", {})[0] == 404
    assert http_receiver.request_count == 4  # every trace request is counted, even bad ones
    assert http_receiver.spans() == [] and http_receiver.requests == []
    metrics = post(
        http_receiver.endpoint + "/v1/metrics", b"", {"Content-Type": "application/x-protobuf"}
    )
    assert metrics[0] == 200 and len(http_receiver.metrics_requests) == 1


def export_one(exporter: SpanExporter, name: str) -> SpanExportResult:
    """Export one finished span directly (no processor), then shut the exporter down."""
    span = TracerProvider().get_tracer("t").start_span(name)
    span.end()
    assert isinstance(span, ReadableSpan)
    try:
        return exporter.export([span])
    finally:
        exporter.shutdown()


def test_http_503_makes_exporter_fail() -> None:
    with OtlpHttpReceiver(status_code=503) as receiver:
        started = time.monotonic()
        exporter = HttpSpanExporter(endpoint=receiver.traces_endpoint, timeout=0.5)
        assert export_one(exporter, "rejected") is SpanExportResult.FAILURE
        assert time.monotonic() - started < 3.0
        assert receiver.request_count >= 1
        assert receiver.spans() == [] and receiver.requests == []


def test_http_fail_count_lets_exporter_retry_then_succeed() -> None:
    with OtlpHttpReceiver(status_code=503, fail_count=1, retry_after_s=0) as receiver:
        exporter = HttpSpanExporter(endpoint=receiver.traces_endpoint, timeout=3)
        assert export_one(exporter, "retried") is SpanExportResult.SUCCESS
        assert receiver.request_count == 2
        assert [s.name for s in receiver.spans()] == ["retried"]


def test_http_delay_beyond_exporter_timeout_fails_fast() -> None:
    with OtlpHttpReceiver(delay_s=5.0) as receiver:
        started = time.monotonic()
        exporter = HttpSpanExporter(endpoint=receiver.traces_endpoint, timeout=0.3)
        assert export_one(exporter, "slow") is SpanExportResult.FAILURE
        assert time.monotonic() - started < 2.0
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 2.0  # stop() cuts the pending delay short


@pytest.mark.parametrize("retry", [False, True])
def test_grpc_unavailable(retry: bool) -> None:
    receiver = OtlpGrpcReceiver(
        status_code=grpc.StatusCode.UNAVAILABLE,
        fail_count=1 if retry else None,
        retry_after_s=0.01 if retry else None,
    )
    with receiver:
        exporter = GrpcSpanExporter(endpoint=receiver.endpoint, timeout=2 if retry else 0.5)
        result = export_one(exporter, "g")
        if retry:
            assert result is SpanExportResult.SUCCESS
            assert receiver.request_count == 2 and len(receiver.spans()) == 1
        else:
            assert result is SpanExportResult.FAILURE
            assert receiver.request_count >= 1 and receiver.spans() == []


def test_wait_for_spans_raises_clearly_and_clear_resets(http_receiver: OtlpHttpReceiver) -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"at least 1 span\(s\) within 0.1s, got 0"):
        http_receiver.wait_for_spans(1, timeout=0.1)
    assert time.monotonic() - started < 1.0
    emit_tree(HttpSpanExporter(endpoint=http_receiver.traces_endpoint, timeout=2))
    assert len(http_receiver.wait_for_spans(2, timeout=2.0)) == 2
    assert [s.name for s in http_receiver.spans(name="stage load")] == ["stage load"]
    http_receiver.clear()
    assert http_receiver.spans() == [] and http_receiver.request_count == 0


def test_not_running_receiver_has_no_endpoint() -> None:
    with pytest.raises(RuntimeError, match="not running"):
        _ = OtlpHttpReceiver().endpoint
    with pytest.raises(RuntimeError, match="not running"):
        _ = OtlpGrpcReceiver().endpoint


def test_spans_from_request_decodes_every_value_kind() -> None:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = b"\x01" * 16, b"\x02" * 8, "s"
    values: dict[str, Any] = {
        "s": AnyValue(string_value="x"),
        "b": AnyValue(bytes_value=b"\x00"),
        "empty": AnyValue(),
    }
    for key, value in values.items():
        span.attributes.append(KeyValue(key=key, value=value))
    nested = span.attributes.add(key="kv")
    nested.value.kvlist_value.values.append(KeyValue(key="i", value=AnyValue(int_value=3)))
    [decoded] = spans_from_request(request)
    assert decoded.trace_id == "01" * 16 and decoded.span_id == "02" * 8
    assert decoded.parent_span_id is None
    assert (decoded.kind, decoded.status_code) == ("UNSPECIFIED", "UNSET")
    assert decoded.attributes == {"s": "x", "b": b"\x00", "empty": None, "kv": {"i": 3}}
    assert decoded.service_name is None


def test_protobuf_values_decode_like_the_json_lines_reader(tmp_path: Path) -> None:
    """Both paths share one AnyValue decoder; only arrays differ (tuples here, lists there)."""
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = b"\x01" * 16, b"\x02" * 8, "s"
    span.attributes.append(KeyValue(key="i", value=AnyValue(int_value=-(2**53) - 1)))
    span.attributes.append(KeyValue(key="d", value=AnyValue(double_value=0.5)))
    span.attributes.append(KeyValue(key="f", value=AnyValue(bool_value=False)))
    span.attributes.append(KeyValue(key="raw", value=AnyValue(bytes_value=b"\x00\xff")))
    xs = span.attributes.add(key="xs").value.array_value.values
    xs.add(string_value="a")
    xs.add().array_value.values.add(int_value=2)
    span.attributes.add(key="kv").value.kvlist_value.values.add(key="k").value.string_value = ""
    path = tmp_path / "one.jsonl"
    path.write_text(json_format.MessageToJson(request, indent=None) + "\n", encoding="utf-8")
    [from_json] = read_otlp_jsonl(path)
    [received] = spans_from_request(request)
    assert received.attributes == {
        "i": -(2**53) - 1,
        "d": 0.5,
        "f": False,
        "raw": b"\x00\xff",
        "xs": ("a", (2,)),
        "kv": {"k": ""},
    }
    assert from_json["attributes"] == {**received.attributes, "xs": ["a", [2]]}


needs_rotel = pytest.mark.skipif(not rotel_available(), reason="rotel is not installed")


@needs_rotel
def test_grpc_exporter_through_rotel_to_http_receiver(http_receiver: OtlpHttpReceiver) -> None:
    with RotelHop(http_receiver) as hop:
        assert hop.protocol == "http"
        exporter = GrpcSpanExporter(endpoint=hop.grpc_endpoint, timeout=2)
        ids = emit_tree(exporter, batch=True)
        assert_tree(http_receiver.wait_for_spans(2, timeout=5.0), ids)


@needs_rotel
def test_http_exporter_through_rotel_to_grpc_receiver(grpc_receiver: OtlpGrpcReceiver) -> None:
    with RotelHop(grpc_receiver.address, protocol="grpc") as hop:
        exporter = HttpSpanExporter(endpoint=hop.http_traces_endpoint, timeout=2)
        ids = emit_tree(exporter)
        assert_tree(grpc_receiver.wait_for_spans(2, timeout=5.0), ids)
        pid = hop.pid
        assert pid is not None
    assert hop.pid is None
    with pytest.raises(ProcessLookupError):  # terminated and reaped
        os.kill(pid, 0)


@needs_rotel
def test_rotel_hop_reports_a_failed_start(http_receiver: OtlpHttpReceiver) -> None:
    hop = RotelHop(http_receiver, extra_args=["--no-such-flag"], startup_timeout=5.0)
    with pytest.raises(RuntimeError, match="no-such-flag"):
        hop.start()
    assert hop.pid is None
