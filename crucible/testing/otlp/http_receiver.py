"""OtlpHttpReceiver: a real OTLP/HTTP server (protobuf or JSON, gzip/deflate) on 127.0.0.1."""

from __future__ import annotations

import gzip
import http.server
import sys
import threading
import zlib
from typing import Any, NamedTuple, Self

from google.protobuf import json_format  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.message import (  # type: ignore[import-untyped, unused-ignore]
    DecodeError,
    Message,
)
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from crucible.testing.otlp.collector import Collector
from crucible.testing.otlp.decode import decode_otlp_json
from crucible.testing.otlp.service import HOST, url

__all__ = ["OtlpHttpReceiver"]


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


class OtlpHttpReceiver(Collector):
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
        server = _HttpServer((HOST, 0), _OtlpHandler)
        server.receiver = self
        self._server, self._port = server, int(server.server_address[1])
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
        server, self._server, self._port = self._server, None, None
        if server is None:
            return
        self._closing.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    @property
    def endpoint(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT`` (what OTEL_EXPORTER_OTLP_ENDPOINT takes)."""
        return url(self.port)

    @property
    def traces_endpoint(self) -> str:
        """Full traces URL, what the HTTP OTLPSpanExporter's ``endpoint`` takes."""
        return f"{self.endpoint}/v1/traces"
