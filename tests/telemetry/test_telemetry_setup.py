"""Provider setup: env handling, exporters, OTLP/JSON lines files, bounded shutdown, span counts.

No test installs global providers (they can be set once per process): always set_global=False.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status, StatusCode

from crucible.telemetry.dropcount import CountingSpanExporter, CountingSpanProcessor, SpanCounter
from crucible.telemetry.jsonl import OtlpJsonLinesExporter, read_otlp_jsonl
from crucible.telemetry.setup import TelemetryHandle, configure

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No OTEL_* or CRUCIBLE_* variable leaks in; default files land in tmp_path."""
    for name in list(os.environ):
        if name.startswith(("OTEL_", "CRUCIBLE_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def make() -> Iterator[Callable[..., TelemetryHandle]]:
    """configure(..., set_global=False), shutting every handle down afterwards."""
    handles: list[TelemetryHandle] = []

    def _make(*args: Any, **kwargs: Any) -> TelemetryHandle:
        handle = configure(*args, set_global=False, **kwargs)
        handles.append(handle)
        return handle

    yield _make
    for handle in handles:
        handle.shutdown(timeout_s=2.0)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def make_parent_child(provider: TracerProvider) -> tuple[trace.SpanContext, trace.SpanContext]:
    tracer = provider.get_tracer("tests")
    with tracer.start_as_current_span("parent", attributes={"n": 3, "ok": True}) as parent:
        parent.add_event("started", {"k": "v"})
        with tracer.start_as_current_span("child", attributes={"ratio": 0.5}) as child:
            child.set_status(Status(StatusCode.ERROR, "boom"))
    return parent.get_span_context(), child.get_span_context()


# --- service name --------------------------------------------------------------------------------


def test_service_name_defaults_to_crucible(make: Callable[..., TelemetryHandle]) -> None:
    handle = make()
    assert handle.service_name == "crucible"
    assert handle.tracer_provider.resource.attributes["service.name"] == "crucible"
    assert "service.version" in handle.tracer_provider.resource.attributes


def test_service_name_from_env_then_argument(
    make: Callable[..., TelemetryHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs,team=ml")
    assert make().service_name == "from-attrs"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    handle = make()
    assert handle.service_name == "from-env"
    assert handle.tracer_provider.resource.attributes["team"] == "ml"
    assert make("from-arg").service_name == "from-arg"


# --- exporter and protocol selection --------------------------------------------------------------


def test_default_exporter_is_none(make: Callable[..., TelemetryHandle]) -> None:
    handle = make()
    assert handle.exporters == ()
    assert handle.destination == "none"
    make_parent_child(handle.tracer_provider)
    assert handle.stats() == {"ended": 0, "exported": 0, "failed": 0, "dropped": 0}
    assert not Path("traces.jsonl").exists()


def test_a_meter_provider_only_where_an_exporter_takes_metrics(
    make: Callable[..., TelemetryHandle],
) -> None:
    for exporter in ("none", "file"):  # the file holds spans only
        handle = make(exporter=exporter)
        assert isinstance(handle.meter_provider, metrics.NoOpMeterProvider), exporter
        handle.meter_provider.get_meter("t").create_counter("c").add(1)
        assert handle.shutdown().completed
    for exporter in ("console", "otlp"):
        handle = make(exporter=exporter, endpoint="http://127.0.0.1:9")
        assert isinstance(handle.meter_provider, MeterProvider), exporter


def test_exporter_list_from_env_and_argument_wins(
    make: Callable[..., TelemetryHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console, FILE,none")
    handle = make()
    assert handle.exporters == ("console", "file")
    assert handle.destination == "console, traces.jsonl"
    assert make(exporter="none").exporters == ()


@pytest.mark.parametrize(
    ("kwargs", "env", "named"),
    [
        ({"exporter": "jaeger"}, {}, "exporter argument"),
        ({}, {"OTEL_TRACES_EXPORTER": "otlp,zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"exporter": "otlp", "protocol": "http/json"}, {}, "protocol argument"),
        (
            {"exporter": "otlp"},
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "udp"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            {"exporter": "otlp"},
            {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "thrift"},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ),
    ],
)
def test_bad_values_name_their_source_and_valid_values(
    monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any], env: dict[str, str], named: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=named) as info:
        configure(set_global=False, **kwargs)
    message = str(info.value)
    assert ("otlp, console, file, none" in message) or ("http/protobuf, grpc" in message)


def test_bad_numbers_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_queue_size"):
        configure(set_global=False, max_queue_size=0)
    with pytest.raises(ValueError, match="export_timeout_s"):
        configure(set_global=False, export_timeout_s=0)


# --- OTLP endpoints ------------------------------------------------------------------------------


def test_http_default_endpoint(make: Callable[..., TelemetryHandle]) -> None:
    assert make(exporter="otlp").destination == "http://localhost:4318/v1/traces"


def test_http_base_endpoint_from_env_gets_signal_path(
    make: Callable[..., TelemetryHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    assert make(exporter="otlp").destination == "http://collector:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:9999/custom")
    assert make(exporter="otlp").destination == "http://traces:9999/custom"


def test_endpoint_and_protocol_arguments_win(
    make: Callable[..., TelemetryHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:9999/custom")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    handle = make(exporter="otlp", endpoint="http://127.0.0.1:4318", protocol="http/protobuf")
    assert handle.destination == "http://127.0.0.1:4318/v1/traces"
    handle = make(exporter="otlp", endpoint="http://h:1/v1/traces", protocol="http/protobuf")
    assert handle.destination == "http://h:1/v1/traces"


def test_grpc_protocol_from_env(
    make: Callable[..., TelemetryHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert make().destination == "http://localhost:4317 (grpc)"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    assert make().destination == "http://collector:4317 (grpc)"


# --- file exporter -------------------------------------------------------------------------------


def test_file_exporter_writes_otlp_json_lines_with_hex_ids(
    make: Callable[..., TelemetryHandle], tmp_path: Path
) -> None:
    path = tmp_path / "nested" / "dir" / "spans.jsonl"
    handle = make("svc", "file", file_path=path)
    assert handle.destination == str(path)
    parent, child = make_parent_child(handle.tracer_provider)
    report = handle.shutdown()
    assert report.completed and report.lost == 0
    assert handle.stats() == {"ended": 2, "exported": 2, "failed": 0, "dropped": 0}

    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1  # one batch, one line
    doc = json.loads(lines[0])
    raw_spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    for raw in raw_spans:
        assert HEX32.match(raw["traceId"]) and HEX16.match(raw["spanId"])
        assert isinstance(raw["startTimeUnixNano"], str)  # int64 as string
        assert isinstance(raw["kind"], int)  # enums as integers

    spans = {s["name"]: s for s in read_otlp_jsonl(path)}
    assert spans["parent"]["trace_id"] == format(parent.trace_id, "032x")
    assert spans["parent"]["span_id"] == format(parent.span_id, "016x")
    assert spans["parent"]["parent_span_id"] is None
    assert spans["child"]["trace_id"] == spans["parent"]["trace_id"]
    assert spans["child"]["span_id"] == format(child.span_id, "016x")
    assert spans["child"]["parent_span_id"] == spans["parent"]["span_id"]
    assert spans["parent"]["attributes"] == {"n": 3, "ok": True}
    assert spans["child"]["attributes"] == {"ratio": 0.5}
    assert spans["child"]["status_code"] == 2
    assert spans["child"]["status_message"] == "boom"
    assert spans["parent"]["events"][0]["name"] == "started"
    assert spans["parent"]["events"][0]["attributes"] == {"k": "v"}
    assert spans["parent"]["resource"]["service.name"] == "svc"


def test_file_path_from_env_and_appending(
    make: Callable[..., TelemetryHandle], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CRUCIBLE_TRACES_FILE", str(tmp_path / "env.jsonl"))
    for _ in range(2):
        handle = make(exporter="file")
        make_parent_child(handle.tracer_provider)
        handle.shutdown()
    assert len((tmp_path / "env.jsonl").read_text().splitlines()) == 2
    assert len(read_otlp_jsonl(tmp_path / "env.jsonl")) == 4


def test_default_file_is_traces_jsonl(make: Callable[..., TelemetryHandle]) -> None:
    handle = make(exporter="file")
    make_parent_child(handle.tracer_provider)
    handle.shutdown()
    assert len(read_otlp_jsonl("traces.jsonl")) == 2


def test_jsonl_exporter_is_thread_safe(tmp_path: Path) -> None:
    spans = collect_spans(3)
    exporter = OtlpJsonLinesExporter(tmp_path / "t.jsonl")

    def hammer() -> None:
        for _ in range(25):
            assert exporter.export(spans) is SpanExportResult.SUCCESS

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    lines = (tmp_path / "t.jsonl").read_text().splitlines()
    assert len(lines) == 200
    assert all(
        len(json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"]) == 3 for line in lines
    )
    exporter.shutdown()
    assert exporter.export(spans) is SpanExportResult.FAILURE


def test_read_rejects_malformed_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"resourceSpans": []}\n\nnot json\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:3"):
        read_otlp_jsonl(path)


def test_ten_thousand_spans_are_not_dropped(
    make: Callable[..., TelemetryHandle], tmp_path: Path
) -> None:
    handle = make(exporter="file", file_path=tmp_path / "many.jsonl")
    tracer = handle.tracer_provider.get_tracer("tests")
    for i in range(10_000):
        with tracer.start_as_current_span("s", attributes={"i": i}):
            pass
    report = handle.shutdown(timeout_s=30)
    assert report.completed
    assert handle.stats() == {"ended": 10_000, "exported": 10_000, "failed": 0, "dropped": 0}
    assert len(read_otlp_jsonl(tmp_path / "many.jsonl")) == 10_000


# --- console -------------------------------------------------------------------------------------


def test_console_exporter_prints_spans(
    make: Callable[..., TelemetryHandle], capsys: pytest.CaptureFixture[str]
) -> None:
    handle = make("console-svc", "console")
    assert handle.destination == "console"
    make_parent_child(handle.tracer_provider)
    report = handle.shutdown()
    assert report.exported == 2
    captured = capsys.readouterr()
    err = captured.err
    assert '"name": "parent"' in err and '"name": "child"' in err
    assert "console-svc" in err
    assert '"name"' not in captured.out  # stdout stays the application's own


# --- OTLP failures: counted, and shutdown is bounded ----------------------------------------------


def test_otlp_to_closed_port_fails_fast_and_is_counted(
    make: Callable[..., TelemetryHandle], caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there
    handle = make(exporter="otlp", endpoint=f"http://127.0.0.1:{port}", export_timeout_s=0.5)
    make_parent_child(handle.tracer_provider)
    make_parent_child(handle.tracer_provider)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="crucible.telemetry.setup"):
        report = handle.shutdown(timeout_s=2.0)
    assert time.monotonic() - started < 3.0
    assert report.ended == 4
    assert report.exported == 0
    assert report.failed + report.dropped + report.unexported == 4
    assert handle.stats()["exported"] == 0
    assert handle.dropped_spans + report.unexported == 4
    assert any("not exported" in r.getMessage() for r in caplog.records)


def test_shutdown_is_bounded_when_endpoint_hangs(make: Callable[..., TelemetryHandle]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)  # accepts connections in the backlog, never answers
        port = server.getsockname()[1]
        handle = make(exporter="otlp", endpoint=f"http://127.0.0.1:{port}", export_timeout_s=4.0)
        make_parent_child(handle.tracer_provider)
        started = time.monotonic()
        report = handle.shutdown(timeout_s=0.5)
        elapsed = time.monotonic() - started
    assert elapsed < 1.5
    assert not report.completed
    assert report.exported == 0
    assert report.ended == 2 == report.failed + report.dropped + report.unexported
    assert handle.shutdown() is report  # idempotent


# --- span accounting -----------------------------------------------------------------------------


class BlockingExporter(SpanExporter):
    """Blocks every export until released; records what it received."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.received = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(10)
        self.received += len(spans)
        return SpanExportResult.SUCCESS


def test_full_queue_drops_are_counted_never_silent() -> None:
    counter = SpanCounter()
    inner = BlockingExporter()
    batch = BatchSpanProcessor(
        CountingSpanExporter(inner, counter),
        max_queue_size=4,
        schedule_delay_millis=10_000,
        max_export_batch_size=2,
    )
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(CountingSpanProcessor(batch, counter, max_queued=4))
    tracer = provider.get_tracer("tests")
    for _ in range(20):
        tracer.start_span("s").end()
    inner.release.set()
    provider.shutdown()
    counts = counter.snapshot()
    assert counts.ended == 20
    assert counts.dropped >= 14  # at most 4 queued + one in-flight batch of 2
    assert counts.exported == inner.received == 20 - counts.dropped
    assert counts.failed == counts.pending == 0


def test_spans_after_shutdown_and_failing_exports_are_counted(
    make: Callable[..., TelemetryHandle], tmp_path: Path
) -> None:
    handle = make(exporter="file", file_path=tmp_path / "x.jsonl")
    make_parent_child(handle.tracer_provider)
    handle.shutdown()
    make_parent_child(handle.tracer_provider)
    assert handle.stats() == {"ended": 4, "exported": 2, "failed": 0, "dropped": 2}
    assert handle.dropped_spans == 2

    class Raising(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            raise OSError("disk gone")

    counter = SpanCounter()
    wrapped = CountingSpanExporter(Raising(), counter)
    assert wrapped.export(collect_spans(3)) is SpanExportResult.FAILURE
    assert counter.snapshot().failed == 3


def test_existing_global_provider_is_left_alone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    existing = TracerProvider(shutdown_on_exit=False)
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: existing)
    with caplog.at_level(logging.WARNING, logger="crucible.telemetry.setup"):
        handle = configure(exporter="none", set_global=True)
    try:
        assert not handle.installed_global
        assert isinstance(handle.tracer_provider, TracerProvider)
        assert any("already installed" in r.getMessage() for r in caplog.records)
    finally:
        handle.shutdown()


def collect_spans(n: int) -> list[ReadableSpan]:
    """Finished spans from a private provider, for exporter-level tests."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests")
    for i in range(n):
        tracer.start_span(f"s{i}").end()
    return list(memory.get_finished_spans())


def test_console_exporter_uses_current_stderr(make: Callable[..., TelemetryHandle]) -> None:
    buffer = io.StringIO()
    original = sys.stderr
    sys.stderr = buffer
    try:
        handle = make(exporter="console")
    finally:
        sys.stderr = original
    make_parent_child(handle.tracer_provider)
    handle.shutdown()
    assert '"name": "child"' in buffer.getvalue()
