"""The store both test receivers share: accepted requests, their spans, failure bookkeeping."""

from __future__ import annotations

import threading

from google.protobuf.message import Message  # type: ignore[import-untyped, unused-ignore]
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from crucible.testing.otlp.decode import spans_from_request
from crucible.testing.otlp.records import ReceivedSpan
from crucible.testing.otlp.service import LocalService

__all__ = ["Collector"]


class Collector(LocalService):
    """Thread-safe store of received requests and their spans; a receiver adds start/stop."""

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
        self._port: int | None = None  # set by the receiver while it serves

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return self._running(self._port)

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
