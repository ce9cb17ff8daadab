"""Real OTLP trace receivers (HTTP and gRPC) and a rotel collector hop, for end-to-end span tests.

The receivers decode what the real OpenTelemetry OTLP exporters send, so a test can check the
spans that actually left the process (ids, parent links, attributes, status, events, resource).
"""

from __future__ import annotations

import base64
import gzip
import http.server
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple, Self, TypeVar

import grpc  # type: ignore[import-untyped, unused-ignore]
from google.protobuf import json_format  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.message import (  # type: ignore[import-untyped, unused-ignore]
    DecodeError,
    Message,
)
from google.rpc.error_details_pb2 import RetryInfo  # type: ignore[import-untyped, unused-ignore]
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = [
    "OtlpGrpcReceiver",
    "OtlpHttpReceiver",
    "ReceivedEvent",
    "ReceivedLink",
    "ReceivedSpan",
    "RotelHop",
    "decode_otlp_json",
    "rotel_available",
    "rotel_binary",
    "spans_from_request",
]

ExportTraceServiceRequest = trace_service_pb2.ExportTraceServiceRequest
_M = TypeVar("_M", bound=Message)

_HOST = "127.0.0.1"
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})
_HEX = frozenset("0123456789abcdefABCDEF")


# --------------------------------------------------------------------------- decoded spans


class ReceivedEvent(NamedTuple):
    """A span event as received: its name and attributes."""

    name: str
    attributes: dict[str, Any]


class ReceivedLink(NamedTuple):
    """A span link as received: hex trace id, hex span id, attributes."""

    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    """One span from an OTLP export request, flattened with its resource and scope."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    status_code: str = "UNSET"
    status_message: str = ""
    events: tuple[ReceivedEvent, ...] = ()
    links: tuple[ReceivedLink, ...] = ()
    resource_attributes: dict[str, Any] = field(default_factory=dict)
    scope_name: str = ""
    scope_version: str = ""
    trace_state: str = ""

    @property
    def duration_ns(self) -> int:
        """End minus start, in nanoseconds."""
        return self.end_ns - self.start_ns

    @property
    def service_name(self) -> str | None:
        """The resource's ``service.name``, if any."""
        value = self.resource_attributes.get("service.name")
        return value if isinstance(value, str) else None


def _any_value(value: AnyValue) -> Any:
    """Turn an OTLP AnyValue into a Python value (arrays as tuples, kvlists as dicts)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return tuple(_any_value(v) for v in value.array_value.values)
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, which)


def _attributes(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in kvs}


def _enum_name(name_of: Callable[[Any], str], value: int, prefix: str) -> str:
    try:
        name = name_of(value)
    except ValueError:
        return str(value)
    return name.removeprefix(prefix)


def spans_from_request(request: trace_service_pb2.ExportTraceServiceRequest) -> list[ReceivedSpan]:
    """Flatten an ExportTraceServiceRequest into ReceivedSpans, in the order they were sent."""
    out: list[ReceivedSpan] = []
    for rs in request.resource_spans:
        resource = _attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for sp in ss.spans:
                out.append(
                    ReceivedSpan(
                        trace_id=sp.trace_id.hex(),
                        span_id=sp.span_id.hex(),
                        parent_span_id=sp.parent_span_id.hex() or None,
                        name=sp.name,
                        kind=_enum_name(trace_pb2.Span.SpanKind.Name, sp.kind, "SPAN_KIND_"),
                        start_ns=sp.start_time_unix_nano,
                        end_ns=sp.end_time_unix_nano,
                        attributes=_attributes(sp.attributes),
                        status_code=_enum_name(
                            trace_pb2.Status.StatusCode.Name, sp.status.code, "STATUS_CODE_"
                        ),
                        status_message=sp.status.message,
                        events=tuple(
                            ReceivedEvent(e.name, _attributes(e.attributes)) for e in sp.events
                        ),
                        links=tuple(
                            ReceivedLink(
                                lk.trace_id.hex(), lk.span_id.hex(), _attributes(lk.attributes)
                            )
                            for lk in sp.links
                        ),
                        resource_attributes=dict(resource),
                        scope_name=ss.scope.name,
                        scope_version=ss.scope.version,
                        trace_state=sp.trace_state,
                    )
                )
    return out


def _hex_ids_to_base64(node: Any) -> Any:
    """Rewrite OTLP JSON's hex trace/span ids as the base64 that protobuf's JSON parser expects."""
    if isinstance(node, list):
        return [_hex_ids_to_base64(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if (
            key in _ID_KEYS
            and isinstance(value, str)
            and value
            and len(value) % 2 == 0
            and set(value) <= _HEX
        ):
            out[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
        else:
            out[key] = _hex_ids_to_base64(value)
    return out


def decode_otlp_json(body: bytes | str, message: _M) -> _M:
    """Parse an OTLP/JSON body (hex ids, camelCase or snake_case keys) into ``message``."""
    data = json.loads(body)
    json_format.ParseDict(_hex_ids_to_base64(data), message, ignore_unknown_fields=True)
    return message


# --------------------------------------------------------------------------- shared store


class _Collector:
    """Thread-safe store of received requests and their spans, shared by both receivers."""

    def __init__(self, *, delay_s: float, fail_count: int | None) -> None:
        self.delay_s = delay_s
        self.fail_count = fail_count
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self._spans: list[ReceivedSpan] = []
        self._metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self._logs: list[logs_service_pb2.ExportLogsServiceRequest] = []
        self._request_count = 0
        self._failures_sent = 0

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def requests(self) -> list[trace_service_pb2.ExportTraceServiceRequest]:
        """Decoded trace export requests that were accepted (answered with success)."""
        with self._cond:
            return list(self._requests)

    @property
    def metrics_requests(self) -> list[metrics_service_pb2.ExportMetricsServiceRequest]:
        """Decoded metrics export requests that were accepted."""
        with self._cond:
            return list(self._metrics)

    @property
    def logs_requests(self) -> list[logs_service_pb2.ExportLogsServiceRequest]:
        """Decoded logs export requests that were accepted."""
        with self._cond:
            return list(self._logs)

    @property
    def request_count(self) -> int:
        """Trace export requests that arrived, including rejected or undecodable ones."""
        with self._cond:
            return self._request_count

    def spans(self, *, name: str | None = None) -> list[ReceivedSpan]:
        """All accepted spans in arrival order, optionally only those called ``name``."""
        with self._cond:
            spans = list(self._spans)
        return spans if name is None else [s for s in spans if s.name == name]

    def wait_for_spans(self, n: int, timeout: float = 5.0) -> list[ReceivedSpan]:
        """Block until at least ``n`` spans arrived; return them all, or raise AssertionError."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._spans) >= n, timeout=timeout):
                names = [s.name for s in self._spans]
                raise AssertionError(
                    f"expected at least {n} span(s) within {timeout}s, got {len(names)}: {names} "
                    f"({self._request_count} trace export request(s) arrived)"
                )
            return list(self._spans)

    def clear(self) -> None:
        """Forget every received request and span (counters too)."""
        with self._cond:
            self._requests.clear()
            self._spans.clear()
            self._metrics.clear()
            self._logs.clear()
            self._request_count = 0
            self._failures_sent = 0

    # -- used by the servers' threads

    def _arrived(self) -> None:
        with self._cond:
            self._request_count += 1

    def _should_fail(self, failing: bool) -> bool:
        """Decide (and count) whether this request gets the configured failure answer."""
        if not failing:
            return False
        with self._cond:
            if self.fail_count is not None and self._failures_sent >= self.fail_count:
                return False
            self._failures_sent += 1
            return True

    def _pause(self) -> None:
        if self.delay_s > 0:
            self._closing.wait(self.delay_s)

    def _accept(self, request: Message) -> None:
        with self._cond:
            if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
                self._requests.append(request)
                self._spans.extend(spans_from_request(request))
            elif isinstance(request, metrics_service_pb2.ExportMetricsServiceRequest):
                self._metrics.append(request)
            elif isinstance(request, logs_service_pb2.ExportLogsServiceRequest):
                self._logs.append(request)
            self._cond.notify_all()


# --------------------------------------------------------------------------- OTLP/HTTP


class _Signal(NamedTuple):
    request: type[Message]
    response: type[Message]
    is_traces: bool


_HTTP_SIGNALS = {
    "/v1/traces": _Signal(
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
        True,
    ),
    "/v1/metrics": _Signal(
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
        False,
    ),
    "/v1/logs": _Signal(
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
        False,
    ),
}


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    receiver: OtlpHttpReceiver

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that hung up (e.g. an exporter that timed out); report anything else."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _OtlpHandler(http.server.BaseHTTPRequestHandler):
    """Answers OTLP/HTTP export POSTs (protobuf or JSON, optionally gzip/deflate)."""

    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: test output is not the place for access logs."""

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _reply(
        self, status: int, body: bytes, content_type: str, retry_after: float | None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if retry_after is not None:
            self.send_header("Retry-After", str(max(0, round(retry_after))))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        """Decode one export request, then answer as the receiver is configured to."""
        receiver = self.server.receiver
        signal_ = _HTTP_SIGNALS.get(self.path.split("?", 1)[0].rstrip("/") or "/")
        body = self._read_body()
        if signal_ is None:
            self._reply(404, b"unknown OTLP path", "text/plain", None)
            return
        if signal_.is_traces:
            receiver._arrived()
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        is_json = content_type == "application/json"
        reply_type = "application/json" if is_json else "application/x-protobuf"
        try:
            request = self._decode(body, content_type, signal_.request())
        except _HttpError as err:
            self._reply(err.status, str(err).encode(), "text/plain", None)
            return
        receiver._pause()
        if receiver._should_fail(receiver.status_code >= 300):
            self._reply(receiver.status_code, b"", reply_type, receiver.retry_after_s)
            return
        receiver._accept(request)
        response = signal_.response()
        payload = json_format.MessageToJson(response).encode() if is_json else b""
        self._reply(
            receiver.status_code if receiver.status_code < 300 else 200, payload, reply_type, None
        )

    def _decode(self, body: bytes, content_type: str, message: Message) -> Message:
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            elif encoding not in ("", "identity"):
                raise _HttpError(415, f"unsupported Content-Encoding {encoding!r}")
        except (OSError, EOFError, zlib.error) as err:
            raise _HttpError(400, f"cannot decompress body: {err}") from err
        try:
            if content_type == "application/x-protobuf":
                message.ParseFromString(body)
                return message
            if content_type == "application/json":
                return decode_otlp_json(body, message)
        except (DecodeError, json_format.ParseError, ValueError) as err:
            raise _HttpError(400, f"cannot decode {content_type} body: {err}") from err
        raise _HttpError(415, f"unsupported Content-Type {content_type!r}")


class OtlpHttpReceiver(_Collector):
    """A real OTLP/HTTP server on 127.0.0.1 (ephemeral port) that keeps what exporters send.

    ``status_code`` (e.g. 503) answers requests with that status instead of accepting them;
    ``fail_count`` limits that to the first N requests; ``retry_after_s`` adds a Retry-After
    header to failures; ``delay_s`` sleeps before answering. All may be changed while running.
    """

    def __init__(
        self,
        *,
        status_code: int = 200,
        delay_s: float = 0.0,
        fail_count: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(delay_s=delay_s, fail_count=fail_count)
        self.status_code = status_code
        self.retry_after_s = retry_after_s
        self._server: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Bind an ephemeral port on 127.0.0.1 and serve in a daemon thread."""
        if self._server is not None:
            return self
        self._closing.clear()
        server = _HttpServer((_HOST, 0), _OtlpHandler)
        server.receiver = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"otlp-http-receiver-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (pending delays are cut short)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._closing.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._server is None:
            raise RuntimeError("OtlpHttpReceiver is not running; use start() or a with block")
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT`` (what OTEL_EXPORTER_OTLP_ENDPOINT takes)."""
        return f"http://{_HOST}:{self.port}"

    @property
    def traces_endpoint(self) -> str:
        """Full traces URL, what the HTTP OTLPSpanExporter's ``endpoint`` takes."""
        return f"{self.endpoint}/v1/traces"


# --------------------------------------------------------------------------- OTLP/gRPC


def _grpc_export(
    receiver: OtlpGrpcReceiver, request: Message, response: Message, context: Any, traces: bool
) -> Message:
    if traces:
        receiver._arrived()
    receiver._pause()
    code = receiver.status_code
    if receiver._should_fail(code != grpc.StatusCode.OK):
        if receiver.retry_after_s is not None:  # the exporters honour google.rpc.RetryInfo
            info = RetryInfo()
            info.retry_delay.FromNanoseconds(int(receiver.retry_after_s * 1e9))
            context.set_trailing_metadata([("google.rpc.retryinfo-bin", info.SerializeToString())])
        context.abort(code, receiver.status_message)
    receiver._accept(request)
    return response


class _TraceServicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpGrpcReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any) -> Message:
        response = trace_service_pb2.ExportTraceServiceResponse()
        return _grpc_export(self._receiver, request, response, context, True)


class _MetricsServicer(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OtlpGrpcReceiver) -> None:
        self._receiver = receiver

    def Export(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: Any
    ) -> Message:
        response = metrics_service_pb2.ExportMetricsServiceResponse()
        return _grpc_export(self._receiver, request, response, context, False)


class _LogsServicer(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, receiver: OtlpGrpcReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: logs_service_pb2.ExportLogsServiceRequest, context: Any) -> Message:
        response = logs_service_pb2.ExportLogsServiceResponse()
        return _grpc_export(self._receiver, request, response, context, False)


class OtlpGrpcReceiver(_Collector):
    """A real OTLP/gRPC server on 127.0.0.1 (ephemeral port) that keeps what exporters send.

    ``status_code`` (a ``grpc.StatusCode``, e.g. UNAVAILABLE) aborts requests with that code;
    ``fail_count`` limits that to the first N requests; ``retry_after_s`` sends a RetryInfo
    delay with failures; ``delay_s`` sleeps before answering. All may be changed while running.
    """

    def __init__(
        self,
        *,
        status_code: Any = None,
        status_message: str = "rejected by test receiver",
        delay_s: float = 0.0,
        fail_count: int | None = None,
        retry_after_s: float | None = None,
        grace_s: float = 1.0,
    ) -> None:
        super().__init__(delay_s=delay_s, fail_count=fail_count)
        self.status_code: Any = grpc.StatusCode.OK if status_code is None else status_code
        self.status_message = status_message
        self.retry_after_s = retry_after_s
        self.grace_s = grace_s
        self._server: Any = None
        self._port: int | None = None

    def start(self) -> Self:
        """Bind an ephemeral port on 127.0.0.1 and start the gRPC server."""
        if self._server is not None:
            return self
        self._closing.clear()
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="otlp-grpc-receiver"),
            options=[("grpc.so_reuseport", 0)],
        )
        registrations: list[tuple[Any, Any]] = [  # the generated helpers are untyped
            (trace_service_pb2_grpc.add_TraceServiceServicer_to_server, _TraceServicer(self)),
            (metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server, _MetricsServicer(self)),
            (logs_service_pb2_grpc.add_LogsServiceServicer_to_server, _LogsServicer(self)),
        ]
        for add_to_server, servicer in registrations:
            add_to_server(servicer, server)
        port = int(server.add_insecure_port(f"{_HOST}:0"))
        if port == 0:
            raise RuntimeError("OtlpGrpcReceiver could not bind a port on 127.0.0.1")
        server.start()
        self._server, self._port = server, port
        return self

    def stop(self) -> None:
        """Stop the server, letting in-flight calls finish for at most ``grace_s``."""
        server, self._server = self._server, None
        if server is None:
            return
        self._closing.set()
        server.stop(self.grace_s).wait(self.grace_s + 1.0)
        self._port = None

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._port is None:
            raise RuntimeError("OtlpGrpcReceiver is not running; use start() or a with block")
        return self._port

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` (pass ``insecure=True`` to the gRPC exporter with this)."""
        return f"{_HOST}:{self.port}"

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: the http scheme makes the gRPC exporter use plaintext."""
        return f"http://{self.address}"


# --------------------------------------------------------------------------- rotel hop


def rotel_binary() -> Path | None:
    """Locate the rotel collector executable: $CRUCIBLE_ROTEL_BIN, the ``rotel`` package, PATH."""
    override = os.environ.get("CRUCIBLE_ROTEL_BIN")
    if override:
        path = Path(override)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    try:
        spec = importlib.util.find_spec("rotel")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "rotel-agent"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("rotel-agent") or shutil.which("rotel")
    return Path(found) if found else None


def rotel_available() -> bool:
    """True when a rotel executable is installed (``pip install rotel``); tests skip otherwise."""
    return rotel_binary() is not None


def _free_ports(count: int) -> list[int]:
    """Distinct ports that were free a moment ago (the OS picks them; held together, then freed)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((_HOST, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


class RotelHop:
    """A rotel collector subprocess: OTLP in on 127.0.0.1 (gRPC and HTTP), OTLP out downstream.

    ``downstream`` is a receiver (its protocol is used) or an endpoint string with ``protocol``
    ("grpc" by default). Batches flush after ``batch_timeout`` (rotel duration syntax) so
    tests stay fast.
    """

    def __init__(
        self,
        downstream: str | OtlpHttpReceiver | OtlpGrpcReceiver,
        protocol: Literal["grpc", "http"] | None = None,
        *,
        batch_timeout: str = "10ms",
        startup_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        extra_args: Sequence[str] = (),
        binary: str | os.PathLike[str] | None = None,
    ) -> None:
        if isinstance(downstream, OtlpHttpReceiver):
            endpoint, proto = downstream.endpoint, protocol or "http"
        elif isinstance(downstream, OtlpGrpcReceiver):
            endpoint, proto = downstream.endpoint, protocol or "grpc"
        else:
            endpoint, proto = downstream, protocol or "grpc"
        if proto == "http":
            endpoint = endpoint.rstrip("/").removesuffix("/v1/traces")  # rotel appends the path
        elif "://" not in endpoint:
            endpoint = f"http://{endpoint}"
        self.downstream_endpoint = endpoint
        self.protocol: Literal["grpc", "http"] = proto
        self.batch_timeout = batch_timeout
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = tuple(extra_args)
        self._binary = Path(binary) if binary is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._grpc_port: int | None = None
        self._http_port: int | None = None

    def _command(self, binary: Path, grpc_port: int, http_port: int, tmp: str) -> list[str]:
        return [
            str(binary),
            "start",
            "--pid-file",
            os.path.join(tmp, "rotel.pid"),
            "--log-file",
            os.path.join(tmp, "rotel.log"),
            "--otlp-grpc-endpoint",
            f"{_HOST}:{grpc_port}",
            "--otlp-http-endpoint",
            f"{_HOST}:{http_port}",
            "--batch-timeout",
            self.batch_timeout,
            "--exporter",
            "otlp",
            "--otlp-exporter-endpoint",
            self.downstream_endpoint,
            "--otlp-exporter-protocol",
            self.protocol,
            "--otlp-exporter-request-timeout",
            "2s",
            "--otlp-exporter-retry-initial-backoff",
            "50ms",
            "--otlp-exporter-retry-max-backoff",
            "500ms",
            "--otlp-exporter-retry-max-elapsed-time",
            "10s",
            *self.extra_args,
        ]

    def start(self) -> Self:
        """Start rotel on free ports and wait (bounded) until both its receivers accept."""
        if self._proc is not None:
            return self
        binary = self._binary or rotel_binary()
        if binary is None:
            raise RuntimeError("rotel is not installed: `pip install rotel`")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROTEL_")}
        output = ""
        for _ in range(3):  # a port picked as free can be taken before rotel binds it
            proc = self._launch(binary, env)
            deadline = time.monotonic() + self.startup_timeout
            while time.monotonic() < deadline and proc.poll() is None:
                if all(_accepts(p) for p in (self._grpc_port, self._http_port) if p is not None):
                    return self
                time.sleep(0.02)
            output, exited = self.output(), proc.poll() is not None
            self.stop()
            if not exited:
                raise RuntimeError(
                    f"rotel did not listen within {self.startup_timeout}s:\n{output}"
                )
        raise RuntimeError(f"rotel failed to start:\n{output}")

    def _launch(self, binary: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        self._tmpdir = tempfile.TemporaryDirectory(prefix="crucible-rotel-")
        self._grpc_port, self._http_port = _free_ports(2)
        self._log = tempfile.TemporaryFile(dir=self._tmpdir.name)  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            self._command(binary, self._grpc_port, self._http_port, self._tmpdir.name),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        return self._proc

    def stop(self) -> None:
        """SIGTERM, wait at most ``stop_timeout``, then SIGKILL; remove temp files."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5.0)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None
        self._grpc_port = self._http_port = None

    def output(self) -> str:
        """What rotel printed so far (its log), for diagnosing a failed test."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return bytes(self._log.read()).decode("utf-8", "replace")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        """The rotel process id while running."""
        return self._proc.pid if self._proc is not None else None

    def _port(self, port: int | None) -> int:
        if port is None or self._proc is None:
            raise RuntimeError("RotelHop is not running; use start() or a with block")
        return port

    @property
    def grpc_endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` of rotel's OTLP/gRPC receiver."""
        return f"http://{_HOST}:{self._port(self._grpc_port)}"

    @property
    def http_endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` of rotel's OTLP/HTTP receiver (base URL)."""
        return f"http://{_HOST}:{self._port(self._http_port)}"

    @property
    def http_traces_endpoint(self) -> str:
        """Full traces URL of rotel's OTLP/HTTP receiver."""
        return f"{self.http_endpoint}/v1/traces"
