"""Export spans over OTLP from a child process, so protobuf encoding does not hold our GIL.

The OpenTelemetry Python OTLP exporters encode every span in Python (about 35 µs each here),
inside the process that runs the stages. ``OffloadedOtlpExporter`` flattens each batch into
plain tuples (about 4 µs a span), pickles it to a child process started with
``python -m crucible.telemetry.offload``, and the child rebuilds the spans and hands them to
the real OTLP exporter. Results come back per batch, so failures are still counted.
The child is our own program, started by us; nothing else writes to its pipe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import IO, Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

_log = logging.getLogger(__name__)
_HEADER = struct.Struct("!I")
_START_TIMEOUT_S = 30.0


def _ctx(sc: SpanContext | None) -> tuple[int, int, int, str] | None:
    if sc is None:
        return None
    return sc.trace_id, sc.span_id, int(sc.trace_flags), sc.trace_state.to_header()


def flatten(span: ReadableSpan) -> tuple[Any, ...]:
    """A span as plain, picklable values (ids, times, attributes, events, links, status)."""
    scope = span.instrumentation_scope
    return (
        span.name,
        _ctx(span.context),
        _ctx(span.parent),
        span.kind.value,
        span.start_time,
        span.end_time,
        dict(span.attributes or {}),
        [(e.name, e.timestamp, dict(e.attributes or {})) for e in span.events],
        [(_ctx(link.context), dict(link.attributes or {})) for link in span.links],
        span.status.status_code.value,
        span.status.description,
        (scope.name, scope.version) if scope is not None else None,
        id(span.resource),
    )


def _span_context(raw: tuple[int, int, int, str] | None, *, remote: bool) -> SpanContext | None:
    if raw is None:
        return None
    trace_id, span_id, flags, state = raw
    return SpanContext(
        trace_id, span_id, is_remote=remote, trace_flags=TraceFlags(flags),
        trace_state=TraceState.from_header([state]) if state else TraceState(),
    )  # fmt: skip


def rebuild(flat: tuple[Any, ...], resources: dict[int, Resource]) -> ReadableSpan:
    """The ReadableSpan that ``flatten`` described."""
    (name, ctx, parent, kind, start, end, attrs, events, links, code, desc, scope, rid) = flat
    return ReadableSpan(
        name=name,
        context=_span_context(ctx, remote=False),
        parent=_span_context(parent, remote=True),
        resource=resources[rid],
        attributes=attrs,
        events=[Event(n, a, timestamp=t) for n, t, a in events],
        links=[Link(_span_context(c, remote=True), a) for c, a in links],  # type: ignore[arg-type]
        kind=SpanKind(kind),
        status=Status(StatusCode(code), desc),
        start_time=start,
        end_time=end,
        instrumentation_scope=InstrumentationScope(*scope) if scope else None,
    )


def _write(stream: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read(stream: IO[bytes]) -> Any:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EOFError("offload pipe closed")
    (size,) = _HEADER.unpack(head)
    return pickle.loads(stream.read(size))


class OffloadedOtlpExporter(SpanExporter):
    """An OTLP span exporter (``http/protobuf`` or ``grpc``) running in a child process."""

    def __init__(self, protocol: str, endpoint: str, timeout_s: float) -> None:
        if protocol not in ("http/protobuf", "grpc"):
            raise ValueError(f"offloaded OTLP protocol must be http/protobuf or grpc: {protocol}")
        self.protocol, self.endpoint, self.timeout_s = protocol, endpoint, timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._sent_resources: set[int] = set()
        self._closed = False

    def _child(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            if self._proc is not None:
                code = self._proc.returncode
                _log.warning("OTLP export child exited (%s); starting a new one", code)
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "crucible.telemetry.offload"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            self._sent_resources = set()
            assert self._proc.stdin is not None
            _write(self._proc.stdin, ("config", self.protocol, self.endpoint, self.timeout_s))
        return self._proc

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:
            return SpanExportResult.FAILURE
        with self._lock:
            try:
                proc = self._child()
                assert proc.stdin is not None and proc.stdout is not None
                new = {id(s.resource): s.resource for s in spans}
                new = {k: v for k, v in new.items() if k not in self._sent_resources}
                resources = {k: dict(v.attributes) for k, v in new.items()}
                _write(proc.stdin, ("spans", resources, [flatten(s) for s in spans]))
                self._sent_resources.update(new)
                # The child's exporter gives up after its own timeout (with retries inside);
                # if it never answers, stop waiting and replace it.
                ready, _, _ = select.select([proc.stdout], [], [], self.timeout_s * 3 + 5.0)
                if not ready:
                    proc.kill()
                    raise OSError("OTLP export child did not answer in time; restarted")
                ok = _read(proc.stdout)
            except (OSError, EOFError, pickle.PickleError) as err:
                _log.warning("offloaded OTLP export failed: %s", err)
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self._closed = True
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is None:
                return
            with contextlib.suppress(OSError, ValueError):
                assert proc.stdin is not None
                _write(proc.stdin, ("stop",))
                proc.stdin.close()
            try:
                proc.wait(timeout=self.timeout_s + 2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5.0)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # every export waits for the child's answer: nothing is buffered here


def _make_exporter(protocol: str, endpoint: str, timeout_s: float) -> SpanExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter(endpoint=endpoint, timeout=timeout_s)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter(endpoint=endpoint, timeout=timeout_s)


def child_main(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """The child: read batches, rebuild the spans, export them, answer with success or not."""
    first = _read(stdin)
    _, protocol, endpoint, timeout_s = first
    exporter = _make_exporter(protocol, endpoint, timeout_s)
    resources: dict[int, Resource] = {}
    try:
        while True:
            try:
                msg = _read(stdin)
            except EOFError:
                return
            if msg[0] == "stop":
                return
            _, new_resources, flat_spans = msg
            for rid, attrs in new_resources.items():
                resources[rid] = Resource(attrs)
            try:
                result = exporter.export([rebuild(f, resources) for f in flat_spans])
                ok = result is SpanExportResult.SUCCESS
            except Exception as err:  # report, never die: the parent counts the failure
                print(f"crucible offload: export failed: {err!r}", file=sys.stderr)
                ok = False
            _write(stdout, ok)
    finally:
        exporter.shutdown()


if __name__ == "__main__":
    # Answers go to the original stdout; anything a library prints lands on stderr instead.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    child_main(sys.stdin.buffer, answers)
