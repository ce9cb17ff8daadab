"""Export spans over OTLP from a child process, so encoding and sending do not hold our GIL.

``flatten`` turns a finished span into plain values; batches of them are pickled to a child
started with ``python -m crucible.telemetry.offload_child``. For http/protobuf the child writes the
request bytes itself (``otlp_wire``) and posts them through the OpenTelemetry exporter's own
transport (endpoint, headers, compression, TLS, retries); for grpc, or an exporter without
that transport, it rebuilds the spans for the OpenTelemetry exporter. Every
batch is answered with success or failure, so failures are counted. The child is our own
program, started by us; nothing else writes to its pipe. It ignores SIGINT and SIGTERM (a
Ctrl-C or SIGTERM to the process group is for the parent, which still needs it to flush) and
ends when its stdin closes or its parent is gone.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, Status, TraceFlags
from opentelemetry.trace.span import TraceState

from crucible import pickled
from crucible.pickled import dispatch_table
from crucible.telemetry.otlp_wire import encode_request

_log = logging.getLogger(__name__)
_HEADER = struct.Struct("!I")


_SpanCtx = tuple[int, int, int, str, bool]

# ReadableSpan keeps its fields in these attributes; reading them in one C call is about ten
# times cheaper than the public properties (which copy events, links and attributes). If a
# future SDK renames them, the probe below falls back to the properties.
_PRIVATE = operator.attrgetter(
    "_name", "_context", "_parent", "_kind", "_start_time", "_end_time", "_attributes",
    "_events", "_links", "_status", "_resource", "_instrumentation_scope",
)  # fmt: skip


def _public(span: ReadableSpan) -> tuple[Any, ...]:
    return (
        span.name, span.context, span.parent, span.kind, span.start_time, span.end_time,
        span.attributes, span.events, span.links, span.status, span.resource,
        span.instrumentation_scope,
    )  # fmt: skip


def _pick_reader() -> Any:
    probe = ReadableSpan(name="probe", attributes=BoundedAttributes(attributes={"k": 1}))
    try:
        fields = _PRIVATE(probe)
    except AttributeError:
        return _public
    if fields[0] != "probe" or getattr(fields[6], "_dict", None) != {"k": 1}:
        return _public
    return _PRIVATE


_fields_of = _pick_reader()


def _plain(attrs: Any) -> dict[str, Any] | None:
    """Attributes as a plain dict (a finished span's own dict: it is immutable by then)."""
    if type(attrs) is BoundedAttributes and _fields_of is _PRIVATE:
        return attrs._dict or None
    return dict(attrs) if attrs else None


def _ctx(sc: SpanContext) -> _SpanCtx:
    state = sc.trace_state
    return sc.trace_id, sc.span_id, int(sc.trace_flags), state.to_header() if state else "", \
        sc.is_remote  # fmt: skip


def flatten(span: ReadableSpan) -> tuple[Any, ...]:
    """A finished span as plain values that pickle in C (resource and scope by reference).

    Runs for every span on the thread that ends it, so it reads fields directly and builds
    no objects the garbage collector has to keep scanning.
    """
    name, sc, parent, kind, start, end, attrs, events, links, status, res, scope = _fields_of(span)
    state = sc.trace_state
    return (
        name, sc.trace_id, sc.span_id, int(sc.trace_flags), state.to_header() if state else "",
        None if parent is None else _ctx(parent), kind, start, end, _plain(attrs),
        tuple((e.name, e.timestamp, _plain(e.attributes)) for e in events) if events else (),
        tuple((_ctx(lk.context), _plain(lk.attributes)) for lk in links) if links else (),
        status.status_code, status.description, res, scope,
    )  # fmt: skip


def _span_context(raw: _SpanCtx) -> SpanContext:
    trace_id, span_id, flags, state, remote = raw
    return SpanContext(
        trace_id, span_id, is_remote=remote, trace_flags=TraceFlags(flags),
        trace_state=TraceState.from_header([state]) if state else None,
    )  # fmt: skip


def rebuild(flat: tuple[Any, ...]) -> ReadableSpan:
    """The ReadableSpan that ``flatten`` described."""
    (name, trace_id, span_id, flags, state, parent, kind, start, end, attrs, events, links,
     code, desc, resource, scope) = flat  # fmt: skip
    return ReadableSpan(
        name=name,
        context=_span_context((trace_id, span_id, flags, state, False)),
        parent=None if parent is None else _span_context(parent),
        resource=resource,
        attributes=attrs,
        events=[Event(n, a, timestamp=t) for n, t, a in events],
        links=[Link(_span_context(c), a) for c, a in links],
        kind=kind,
        status=Status(code, desc),
        start_time=start,
        end_time=end,
        instrumentation_scope=scope,
    )


def _reduce_resource(resource: Resource) -> tuple[Any, ...]:
    return Resource, (dict(resource.attributes), resource.schema_url)


def _reduce_scope(scope: InstrumentationScope) -> tuple[Any, ...]:
    attrs = dict(scope.attributes or {})
    return InstrumentationScope, (scope.name, scope.version, scope.schema_url, attrs)


# Resource and scope hold locks; send their public values instead. Pickle's memo sends each
# one once per batch.
_DISPATCH = dispatch_table({Resource: _reduce_resource, InstrumentationScope: _reduce_scope})


def dumps(obj: Any) -> bytes:
    """Pickle as the pipe to the child does (resources and scopes by their public values)."""
    return pickled.dumps(obj, _DISPATCH)


def _write(stream: IO[bytes], obj: Any) -> None:
    data = dumps(obj)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read(stream: IO[bytes]) -> Any:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EOFError("offload pipe closed")
    (size,) = _HEADER.unpack(head)
    return pickle.loads(stream.read(size))


STOP_SIGNALS = frozenset(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name)
)


@contextlib.contextmanager
def _stop_signals_blocked() -> Iterator[None]:
    """Block SIGINT and SIGTERM in this thread; a child started meanwhile inherits the mask.

    The child then cannot die of a Ctrl-C that arrives while it starts, before it ignores
    these signals; signals that arrive here meanwhile are delivered when the block ends.
    """
    if not hasattr(signal, "pthread_sigmask"):  # Windows
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class OffloadedOtlpExporter(SpanExporter):
    """An OTLP span exporter (``http/protobuf`` or ``grpc``) running in a child process."""

    def __init__(self, protocol: str, endpoint: str, timeout_s: float) -> None:
        if protocol not in ("http/protobuf", "grpc"):
            raise ValueError(f"offloaded OTLP protocol must be http/protobuf or grpc: {protocol}")
        self.protocol, self.endpoint, self.timeout_s = protocol, endpoint, timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _child(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            if self._proc is not None:
                code = self._proc.returncode
                _log.warning("OTLP export child exited (%s); starting a new one", code)
            with _stop_signals_blocked():  # until the child ignores them itself
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "crucible.telemetry.offload_child"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
            assert self._proc.stdin is not None
            _write(self._proc.stdin, ("config", self.protocol, self.endpoint, self.timeout_s))
        return self._proc

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        ok = self.send([flatten(s) for s in spans])
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def send(self, flat_spans: list[tuple[Any, ...]]) -> bool:
        """Export spans already flattened; True once the child's exporter reports success."""
        if self._closed:
            return False
        with self._lock:
            try:
                proc = self._child()
                assert proc.stdin is not None and proc.stdout is not None
                _write(proc.stdin, ("spans", flat_spans))
                # The child's exporter gives up after its own timeout (with retries inside);
                # if it never answers, stop waiting and replace it.
                ready, _, _ = select.select([proc.stdout], [], [], self.timeout_s * 3 + 5.0)
                if not ready:
                    proc.kill()
                    raise OSError("OTLP export child did not answer in time; restarted")
                return bool(_read(proc.stdout))
            except (OSError, EOFError, pickle.PickleError) as err:
                _log.warning("offloaded OTLP export failed: %s", err)
                return False

    def forget_child(self) -> None:
        """Drop the child without stopping it (after fork: it belongs to the parent)."""
        self._lock = threading.Lock()
        self._proc = None

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


def bytes_sender(exporter: SpanExporter) -> Callable[[bytes], bool] | None:
    """The OTLP/HTTP exporter's own transport for ready-made request bytes, if it has one.

    That transport (opentelemetry-exporter-otlp-proto-http 1.40 and later) applies the
    exporter's endpoint, headers, compression, TLS settings and retries. Older exporters lack
    it; their spans go through ``exporter.export`` instead.
    """
    post = getattr(getattr(exporter, "_client", None), "export", None)
    if not callable(post):
        return None

    def send(data: bytes) -> bool:
        return getattr(post(data), "success", None) is True

    return send


class _ParentPipe:
    """The child's stdin, read in length-prefixed messages; EOF once the parent is gone.

    A process forked from the parent may still hold the pipe open after the parent died, so
    the child also checks every second that its parent is the one that started it.
    """

    def __init__(self, fd: int) -> None:
        self._fd, self._parent, self._buf = fd, os.getppid(), bytearray()

    def _fill(self, n: int) -> None:
        while len(self._buf) < n:
            if not select.select([self._fd], [], [], 1.0)[0]:
                if os.getppid() != self._parent:
                    raise EOFError("the parent process is gone")
                continue
            chunk = os.read(self._fd, 1 << 16)
            if not chunk:
                raise EOFError("offload pipe closed")
            self._buf += chunk

    def read(self) -> Any:
        """The next message."""
        self._fill(_HEADER.size)
        (size,) = _HEADER.unpack_from(self._buf)
        self._fill(_HEADER.size + size)
        data = bytes(self._buf[_HEADER.size : _HEADER.size + size])
        del self._buf[: _HEADER.size + size]
        return pickle.loads(data)


def child_main(stdin_fd: int, stdout: IO[bytes]) -> None:
    """The child: read batches, encode and export them, answer with success or not.

    Returns when the parent stops it, closes the pipe, stops reading answers, or dies.
    """
    pipe = _ParentPipe(stdin_fd)
    try:
        _, protocol, endpoint, timeout_s = pipe.read()
    except EOFError:
        return
    exporter = _make_exporter(protocol, endpoint, timeout_s)
    send_bytes = bytes_sender(exporter) if protocol == "http/protobuf" else None
    try:
        while True:
            try:
                msg = pipe.read()
            except EOFError:
                return
            if msg[0] == "stop":
                return
            try:
                if send_bytes is not None:
                    ok = send_bytes(encode_request(msg[1]))
                else:
                    ok = exporter.export([rebuild(f) for f in msg[1]]) is SpanExportResult.SUCCESS
            except Exception as err:  # report, never die: the parent counts the failure
                print(f"crucible offload: export failed: {err!r}", file=sys.stderr)
                ok = False
            try:
                _write(stdout, ok)
            except OSError:  # the parent stopped listening (it exited): nothing to answer
                return
    finally:
        exporter.shutdown()
