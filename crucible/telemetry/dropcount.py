"""Span accounting: count every span ended, exported, failed or dropped, so no loss is silent.

The SDK's BatchSpanProcessor drops spans without counting them when its queue is full, so
`CountingSpanProcessor` sits in front of it as an admission gate: it tracks how many admitted
spans have not yet reached the exporter and drops (and counts) a span itself before the inner
queue could overflow. `CountingSpanExporter` wraps the real exporter to count what it was handed
and what succeeded or failed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = ["CountingSpanExporter", "CountingSpanProcessor", "SpanCounter", "SpanCounts"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SpanCounts:
    """A snapshot of one export pipeline's span counts.

    `ended` = `exported` + `failed` + `dropped` + `pending`; `pending` spans are queued or being
    exported right now.
    """

    ended: int = 0
    exported: int = 0
    failed: int = 0
    dropped: int = 0
    pending: int = 0

    def __add__(self, other: SpanCounts) -> SpanCounts:
        return SpanCounts(
            self.ended + other.ended,
            self.exported + other.exported,
            self.failed + other.failed,
            self.dropped + other.dropped,
            self.pending + other.pending,
        )

    def as_dict(self) -> dict[str, int]:
        """The four headline counts: ended, exported, failed, dropped."""
        return {
            "ended": self.ended,
            "exported": self.exported,
            "failed": self.failed,
            "dropped": self.dropped,
        }


class SpanCounter:
    """Thread-safe counters shared by one gate processor and its exporter wrapper."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ended = 0  # sampled spans that reached on_end
        self._refused = 0  # dropped by the gate: queue full or already shut down
        self._handed = 0  # passed to the exporter wrapper
        self._exported = 0
        self._failed = 0
        self._abandoned = 0  # handed after shutdown gave up; never sent
        self._closed = False  # no more spans admitted
        self._drained = False  # the pipeline finished shutting down: nothing queued remains
        self._abandoning = False

    def admit(self, max_queued: int) -> bool:
        """Count an ended span; True if it may be queued, False if it is dropped (and counted).

        The first drop is logged once; the rest are only counted.
        """
        with self._lock:
            self._ended += 1
            queued = self._ended - 1 - self._refused - self._handed
            if self._closed or queued >= max_queued:
                self._refused += 1
                first = self._refused == 1
            else:
                return True
        if first:
            _log.warning("span export queue full or shut down; dropping spans (counted)")
        return False

    def handed(self, n: int) -> bool:
        """Count a batch reaching the exporter; False if shutdown gave up and it must be dropped."""
        with self._lock:
            self._handed += n
            if self._abandoning:
                self._abandoned += n
                return False
            return True

    def finished(self, n: int, ok: bool) -> None:
        """Count the outcome of one export call."""
        with self._lock:
            if ok:
                self._exported += n
            else:
                self._failed += n

    def close(self) -> None:
        """Refuse (and count) every span ended from now on."""
        with self._lock:
            self._closed = True

    def abandon(self) -> None:
        """Shutdown ran out of time: batches reaching the exporter from now on are dropped."""
        with self._lock:
            self._closed = True
            self._abandoning = True

    def drained(self) -> None:
        """The pipeline is fully shut down: spans never handed to the exporter are lost."""
        with self._lock:
            self._drained = True

    def snapshot(self) -> SpanCounts:
        """Consistent counts at this instant."""
        with self._lock:
            never_handed = max(0, self._ended - self._refused - self._handed)
            dropped = self._refused + self._abandoned + (never_handed if self._drained else 0)
            pending = self._ended - self._exported - self._failed - dropped
            return SpanCounts(self._ended, self._exported, self._failed, dropped, max(0, pending))


class CountingSpanExporter(SpanExporter):
    """Wrap an exporter to count spans handed to it, exported and failed (exceptions = failure)."""

    def __init__(self, inner: SpanExporter, counter: SpanCounter) -> None:
        self.inner = inner
        self._counter = counter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        n = len(spans)
        if not self._counter.handed(n):
            return SpanExportResult.FAILURE
        try:
            result = self.inner.export(spans)
        except Exception:
            _log.exception("span exporter %s raised", type(self.inner).__name__)
            result = SpanExportResult.FAILURE
        self._counter.finished(n, result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class CountingSpanProcessor(SpanProcessor):
    """Admission gate in front of a (batch) span processor; never lets its queue overflow.

    At most `max_queued` spans are admitted and not yet handed to the exporter, so the inner
    processor's queue (of the same capacity) cannot drop; spans over the limit, or ended after
    shutdown, are dropped here and counted.
    """

    def __init__(self, inner: SpanProcessor, counter: SpanCounter, max_queued: int) -> None:
        self.inner = inner
        self.counter = counter
        self._max_queued = max_queued

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is None or not ctx.trace_flags.sampled:
            return  # the batch processor ignores unsampled spans too
        if self.counter.admit(self._max_queued):
            self.inner.on_end(span)

    def shutdown(self) -> None:
        self.counter.close()
        self.inner.shutdown()
        self.counter.drained()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)
