"""The offloaded OTLP exporter: spans survive the trip to the child intact; failures count."""

from __future__ import annotations

import logging
import pickle
import threading
import time

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from crucible.telemetry import offload
from crucible.telemetry.offload import OffloadedOtlpExporter, dumps, flatten, rebuild
from crucible.telemetry.setup import configure
from crucible.testing.otlp import OtlpHttpReceiver

pytestmark = [pytest.mark.otlp]


def finished_spans() -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "offload-test"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("scope-x", "1.2")
    with tracer.start_as_current_span("parent", kind=SpanKind.SERVER) as parent:
        link = Link(parent.get_span_context(), {"why": "batch"})
        with tracer.start_as_current_span("child", links=[link], attributes={"n": 3}) as child:
            child.add_event("evt", {"k": "v", "xs": [1, 2]})
            child.set_status(Status(StatusCode.ERROR, "bad"))
    return list(memory.get_finished_spans())


def test_flatten_and_rebuild_keep_every_field() -> None:
    spans = finished_spans()
    for original in spans:
        copy = rebuild(pickle.loads(dumps(flatten(original))))
        assert copy.name == original.name and copy.kind == original.kind
        assert copy.context == original.context
        assert (copy.parent.span_id if copy.parent else None) == (
            original.parent.span_id if original.parent else None
        )
        assert dict(copy.attributes or {}) == dict(original.attributes or {})
        assert [(e.name, e.timestamp, dict(e.attributes or {})) for e in copy.events] == [
            (e.name, e.timestamp, dict(e.attributes or {})) for e in original.events
        ]
        assert [(lk.context.span_id, dict(lk.attributes or {})) for lk in copy.links] == [
            (lk.context.span_id, dict(lk.attributes or {})) for lk in original.links
        ]
        assert copy.status.status_code == original.status.status_code
        assert copy.status.description == original.status.description
        assert (copy.start_time, copy.end_time) == (original.start_time, original.end_time)
        assert copy.instrumentation_scope == original.instrumentation_scope
        assert copy.resource.attributes["service.name"] == "offload-test"


@pytest.mark.parametrize("protocol", ["http/protobuf"])
def test_child_exports_to_a_real_receiver_and_restarts_after_dying(protocol: str) -> None:
    spans = finished_spans()
    with OtlpHttpReceiver() as receiver:
        exporter = OffloadedOtlpExporter(protocol, receiver.traces_endpoint, timeout_s=2.0)
        try:
            assert exporter.export(spans) is SpanExportResult.SUCCESS
            got = receiver.wait_for_spans(2)
            child = next(s for s in got if s.name == "child")
            assert child.status_code == "ERROR" and child.attributes["n"] == 3
            assert child.resource_attributes["service.name"] == "offload-test"
            assert exporter._proc is not None
            exporter._proc.kill()  # the child dies: the next export starts a new one
            exporter._proc.wait(timeout=5)
            assert exporter.export(spans) is SpanExportResult.SUCCESS
            receiver.wait_for_spans(4)
        finally:
            exporter.shutdown()
    assert exporter.export(spans) is SpanExportResult.FAILURE  # after shutdown


def test_failed_exports_are_reported_as_failures() -> None:
    with OtlpHttpReceiver(status_code=400) as receiver:
        exporter = OffloadedOtlpExporter("http/protobuf", receiver.traces_endpoint, timeout_s=1.0)
        try:
            t0 = time.monotonic()
            assert exporter.export(finished_spans()) is SpanExportResult.FAILURE
            assert time.monotonic() - t0 < 10
        finally:
            exporter.shutdown()


def test_configure_offloads_by_default_and_can_be_told_not_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    on = configure("x", "otlp", set_global=False)
    off = configure("x", "otlp", set_global=False, offload=False)
    monkeypatch.setenv("CRUCIBLE_OTLP_OFFLOAD", "0")
    env_off = configure("x", "otlp", set_global=False)
    monkeypatch.setenv("CRUCIBLE_OTLP_OFFLOAD", "maybe")
    with pytest.raises(ValueError, match="CRUCIBLE_OTLP_OFFLOAD"):
        configure("x", "otlp", set_global=False)
    for handle in (on, off, env_off):
        handle.shutdown(timeout_s=2)
    assert isinstance(on.span_exporters[0], OffloadedOtlpExporter)
    assert not isinstance(off.span_exporters[0], OffloadedOtlpExporter)
    assert not isinstance(env_off.span_exporters[0], OffloadedOtlpExporter)


def test_flatten_reads_the_same_fields_without_the_fast_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spans = finished_spans()
    assert offload._fields_of is offload._PRIVATE  # the fast path works on this SDK
    fast = [flatten(s) for s in spans]
    monkeypatch.setattr(offload, "_fields_of", offload._public)
    assert [flatten(s) for s in spans] == fast


def test_the_installed_http_exporter_takes_encoded_bytes() -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces", timeout=1)
    try:
        assert offload.bytes_sender(exporter) is not None  # else every span takes the slow path
    finally:
        exporter.shutdown()


def test_processor_exports_every_span_from_many_threads() -> None:
    with OtlpHttpReceiver() as receiver:
        handle = configure("handoff", "otlp", endpoint=receiver.endpoint, set_global=False,
                           schedule_delay_ms=20)  # fmt: skip
        tracer = handle.tracer_provider.get_tracer("threads")

        def work(t: int) -> None:
            for i in range(700):
                with tracer.start_as_current_span(f"t{t}", attributes={"i": i}):
                    pass

        threads = [threading.Thread(target=work, args=(t,)) for t in range(3)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert handle.tracer_provider.force_flush(10_000)
        assert len(receiver.wait_for_spans(2100, timeout=1)) == 2100  # there after the flush
        report = handle.shutdown(timeout_s=10)
    assert report.completed and report.ended == report.exported == 2100 and report.lost == 0
    got = receiver.spans()
    assert len({s.span_id for s in got}) == 2100
    assert sorted(s.attributes["i"] for s in got if s.name == "t1") == list(range(700))
    assert got[0].resource_attributes["service.name"] == "handoff"
    assert got[0].scope_name == "threads"


def test_processor_counts_what_a_full_queue_drops(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="crucible.telemetry.dropcount")
    with OtlpHttpReceiver(delay_s=0.5) as receiver:
        handle = configure("handoff", "otlp", endpoint=receiver.endpoint, set_global=False,
                           max_queue_size=8, schedule_delay_ms=10)  # fmt: skip
        tracer = handle.tracer_provider.get_tracer("drops")
        for _ in range(200):
            tracer.start_span("s").end()
        report = handle.shutdown(timeout_s=10)
        received = len(receiver.spans())
    assert report.completed and report.ended == 200
    assert report.dropped > 0 and report.failed == 0 and report.unexported == 0
    assert report.exported == received == 200 - report.dropped
    drops_logged = [r for r in caplog.records if "dropping spans" in r.getMessage()]
    assert len(drops_logged) == 1  # the first drop is logged; the rest are only counted
    tracer.start_span("late").end()  # after shutdown: refused and counted
    assert handle.stats()["dropped"] == report.dropped + 1
    assert not handle.tracer_provider.force_flush(100)  # nothing can be sent any more
