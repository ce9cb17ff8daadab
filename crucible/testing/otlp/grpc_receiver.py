"""OtlpGrpcReceiver: a real OTLP/gRPC server (traces, metrics, logs) on 127.0.0.1."""

from __future__ import annotations

from concurrent import futures
from typing import Any, Self

import grpc  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.message import Message  # type: ignore[import-untyped, unused-ignore]
from google.rpc.error_details_pb2 import RetryInfo  # type: ignore[import-untyped, unused-ignore]
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from crucible.testing.otlp.collector import Collector
from crucible.testing.otlp.service import HOST, url

__all__ = ["OtlpGrpcReceiver"]


class _Servicer:
    """Answers one signal's Export calls as the receiver is configured to."""

    def __init__(self, receiver: OtlpGrpcReceiver, response: type[Message], traces: bool) -> None:
        self._receiver, self._response, self._traces = receiver, response, traces

    def Export(self, request: Message, context: Any) -> Message:
        receiver = self._receiver
        if self._traces:
            receiver._arrived()
        receiver._pause()
        code = receiver.status_code
        if receiver._should_fail(code != grpc.StatusCode.OK):
            if receiver.retry_after_s is not None:  # the exporters honour google.rpc.RetryInfo
                info = RetryInfo()
                info.retry_delay.FromNanoseconds(int(receiver.retry_after_s * 1e9))
                metadata = [("google.rpc.retryinfo-bin", info.SerializeToString())]
                context.set_trailing_metadata(metadata)
            context.abort(code, receiver.status_message)
        receiver._accept(request)
        return self._response()


class OtlpGrpcReceiver(Collector):
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

    def start(self) -> Self:
        """Bind an ephemeral port on 127.0.0.1 and start the gRPC server."""
        if self._server is not None:
            return self
        self._closing.clear()
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="otlp-grpc-receiver"),
            options=[("grpc.so_reuseport", 0)],
        )
        registrations: list[tuple[Any, type[Message], bool]] = [  # the helpers are untyped
            (
                trace_service_pb2_grpc.add_TraceServiceServicer_to_server,
                trace_service_pb2.ExportTraceServiceResponse,
                True,
            ),
            (
                metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server,
                metrics_service_pb2.ExportMetricsServiceResponse,
                False,
            ),
            (
                logs_service_pb2_grpc.add_LogsServiceServicer_to_server,
                logs_service_pb2.ExportLogsServiceResponse,
                False,
            ),
        ]
        for add_to_server, response, traces in registrations:
            add_to_server(_Servicer(self, response, traces), server)
        port = int(server.add_insecure_port(f"{HOST}:0"))
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
    def address(self) -> str:
        """``127.0.0.1:PORT`` (pass ``insecure=True`` to the gRPC exporter with this)."""
        return f"{HOST}:{self.port}"

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: the http scheme makes the gRPC exporter use plaintext."""
        return url(self.port)
