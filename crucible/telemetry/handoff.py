"""A span processor that flattens each ended span at once and ships batches to the offload child.

The SDK's BatchSpanProcessor queues the span objects themselves until its worker exports them.
Under load those thousands of live objects survive several garbage collections and make every
full collection slower, which costs more than the spans' own work. This processor keeps only
the flat tuples of `offload.flatten`, and a writer thread pickles full batches to the child
process that encodes and sends them. Every span is counted: ended, exported, failed, or
dropped when more than `max_queued` wait.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from crucible.telemetry.dropcount import SpanCounter
from crucible.telemetry.offload import OffloadedOtlpExporter, flatten

__all__ = ["OffloadSpanProcessor"]

_log = logging.getLogger(__name__)
_SAMPLED = 0x01


class OffloadSpanProcessor(SpanProcessor):
    """Batch flattened spans to an `OffloadedOtlpExporter` from one writer thread."""

    def __init__(
        self,
        exporter: OffloadedOtlpExporter,
        counter: SpanCounter,
        *,
        max_queued: int,
        max_batch: int = 512,
        schedule_delay_s: float = 0.2,
    ) -> None:
        if max_queued <= 0 or max_batch <= 0 or schedule_delay_s <= 0:
            raise ValueError("max_queued, max_batch and schedule_delay_s must be positive")
        self.exporter = exporter
        self.counter = counter
        self._max_queued = max_queued
        self._max_batch = min(max_batch, max_queued)
        self._delay = schedule_delay_s
        self._start()
        ref = weakref.WeakMethod(self._after_fork)
        os.register_at_fork(after_in_child=lambda: (m := ref()) and m())

    def _start(self) -> None:
        self._lock = threading.Lock()  # the buffers (a plain lock: on_end runs per span)
        self._cond = threading.Condition()  # flush progress
        self._wake = threading.Event()
        self._buf: list[tuple[Any, ...]] = []
        self._full: deque[list[tuple[Any, ...]]] = deque()
        self._flush_asked = 0  # force_flush requests so far
        self._flush_done = 0  # requests whose spans have all been exported (or failed)
        self._stopping = False
        self._thread = threading.Thread(
            target=self._work, name="crucible-otlp-offload", daemon=True
        )
        self._thread.start()

    def _after_fork(self) -> None:
        # A forked child must not resend its parent's spans or write to the parent's child.
        self.exporter.forget_child()
        self._start()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        flat = flatten(span)
        if not flat[3] & _SAMPLED:
            return  # recorded but not sampled: the SDK's processors skip these too
        if not self.counter.admit(self._max_queued):
            return  # dropped, counted (and the first drop logged) by the counter
        with self._lock:
            buf = self._buf
            buf.append(flat)
            if len(buf) < self._max_batch:
                return
            self._full.append(buf)
            self._buf = []
        self._wake.set()

    def _take(self, timed_out: bool) -> tuple[list[list[tuple[Any, ...]]], int, bool]:
        with self._cond:
            asked, stopping = self._flush_asked, self._stopping
        with self._lock:
            batches = list(self._full)
            self._full.clear()
            if self._buf and (timed_out or asked > self._flush_done or stopping):
                batches.append(self._buf)
                self._buf = []
        return batches, asked, stopping

    def _work(self) -> None:
        while True:
            woken = self._wake.wait(self._delay)
            self._wake.clear()
            batches, asked, stopping = self._take(timed_out=not woken)
            for batch in batches:
                n = len(batch)
                if not self.counter.handed(n):
                    continue  # shutdown gave up: counted as dropped
                try:
                    ok = self.exporter.send(batch)
                except Exception:  # never let the writer die: count the batch as failed
                    _log.exception("offloaded span export raised")
                    ok = False
                self.counter.finished(n, ok)
            with self._lock:
                drained = not self._buf and not self._full
            with self._cond:
                self._flush_done = max(self._flush_done, asked)
                self._cond.notify_all()
            if stopping and drained:
                return

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Send everything ended so far; False if that took longer than the timeout."""
        with self._cond:
            self._flush_asked += 1
            asked = self._flush_asked
        self._wake.set()
        with self._cond:
            self._cond.wait_for(
                lambda: self._flush_done >= asked or not self._thread.is_alive(),
                timeout_millis / 1000,
            )
            return self._flush_done >= asked

    def shutdown(self) -> None:
        """Refuse new spans, send the queued ones, stop the writer and the child."""
        self.counter.close()
        with self._cond:
            self._stopping = True
        self._wake.set()
        self._thread.join()
        self.exporter.shutdown()
        self.counter.drained()
