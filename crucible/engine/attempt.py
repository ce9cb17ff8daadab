"""One stage attempt's edges: calling the stage, and closing its span with what it left.

The runner drives attempts (retries, deadlines, observers); this module holds the pieces each
attempt uses: how a stage is called (async on the loop, sync in a worker thread), how its
outcome is classified, the delay before a retry, what the engine writes on the stage span
before ending it (stage code's own changes scrubbed, the events the stage recorded, the
exception and status, the end attributes), the Context a failed attempt leaves, and the span
and record of a stage that does not run.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Awaitable
from typing import Any, Final

import anyio
from opentelemetry import context as otel_context
from opentelemetry.trace import Span, Status, StatusCode

from crucible.context import Context
from crucible.engine import _fast
from crucible.engine.plan import PlannedStage
from crucible.experiment.models import MAX_RETRY_DELAY_S
from crucible.frozen import FrozenMap
from crucible.scrub import Scrubber
from crucible.stage import StageSpec
from crucible.telemetry import attributes as span_attrs
from crucible.telemetry import spans as tel
from crucible.telemetry.enginespans import ApiSpans
from crucible.telemetry.scrubspan import scrub_span
from crucible.trace import SpanEvent, SpanRecord, StageResult, Trace

__all__ = [
    "CANCELLED",
    "NotAContext",
    "backoff",
    "call",
    "close_span",
    "failed_context",
    "result_for",
    "skip_span",
]


class NotAContext(TypeError):
    """A stage returned something other than a Context (an engine-level ``error``)."""


# Stored, logged and shown as what it is to the user, a TypeError (not a private name).
NotAContext.__name__ = NotAContext.__qualname__ = "TypeError"
CANCELLED: Final = "cancelled while the stage ran"


def backoff(base: float, attempt: int) -> float:
    """Exponential backoff with jitter around the nominal delay (±50%), at most
    ``MAX_RETRY_DELAY_S``. Float arithmetic throughout: a late attempt or a huge base
    saturates at the cap instead of overflowing."""
    nominal = base * 2.0 ** min(attempt - 1, 64)  # 2**64 times any base > 0 is past the cap
    delay = nominal * random.uniform(0.5, 1.5)
    return delay if delay < MAX_RETRY_DELAY_S else MAX_RETRY_DELAY_S  # also for inf and nan


def result_for(exc: BaseException) -> StageResult:
    """The result of an attempt that raised ``exc`` (an Exception, not a cancellation)."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, NotAContext):
        return "error"
    return "failure"


def call(spec: StageSpec, ctx: Context, options: Any) -> Awaitable[Any]:
    """The one way a stage is called: async on the loop, sync in a worker thread."""
    if not spec.is_async:
        args = (ctx, options) if spec.takes_options else (ctx,)
        return anyio.to_thread.run_sync(functools.partial(spec.call, *args))
    result: Awaitable[Any] = spec.call(ctx, options) if spec.takes_options else spec.call(ctx)
    return result


def close_span(
    span: Span,
    spans: ApiSpans,
    scrubber: Scrubber,
    step: PlannedStage,
    started: Any,
    left: Context | None,
    error: BaseException | None,
    result: StageResult,
    ends: tuple[str, str | None],
) -> tuple[tuple[SpanEvent, ...], Trace | None]:
    """End the stage span: what stage code set on it scrubbed (``started`` are the attributes
    the engine began it with), the events the stage ``left`` behind, the ``error`` and status,
    and the end attributes (``ends``: the span id and the run link). Returns those events and
    ``left``'s trace without them (None when it left no trace)."""
    if scrubber.pattern is not None:  # what stage code set on the span itself
        scrub_span(span, scrubber, step.span_name, started)
    events: tuple[SpanEvent, ...] = ()
    trace_after = None
    if left is not None and left.trace is not None:
        trace_after = left.trace
        if trace_after.pending_events:
            trace_after, events = trace_after.take_events()
            hide = scrubber.encoded()  # an attribute may hold JSON text
            for ev in events:
                attributes = span_attrs.event_attributes(ev.attributes)
                if hide:
                    attributes = hide.value(attributes)
                span.add_event(hide.text(ev.name), attributes, ev.timestamp_ns)
    if error is not None:
        if scrubber:
            scrubber.exception(error)  # every later str(error) is clean
        if result != "cancellation":
            span.record_exception(error, attributes=scrubber.exception_event(error))
        described = f"{type(error).__name__}: {error}"
        span.set_status(Status(StatusCode.ERROR, scrubber.text(described)))
    span_id, url = ends
    spans.finish(span, span_attrs.stage_end_attributes(span_id, result, error, url))
    return events, trace_after


def failed_context(
    ctx: Context,
    left: Context | None,
    left_trace: Trace,
    record: SpanRecord,
    carrier: FrozenMap[str, str],
) -> Context:
    """The Context a failed attempt leaves: what the stage left (a StageError's, with
    ``left_trace``), else the one it was given, with the attempt's ``record`` and the run's
    carrier again."""
    if isinstance(left, Context):
        return _fast.with_run_state(left, left_trace.with_span(record), carrier, left.assigns)
    assert ctx.trace is not None
    return _fast.with_run_state(ctx, ctx.trace.with_span(record), carrier, ctx.assigns)


def skip_span(
    spans: ApiSpans,
    step: PlannedStage,
    run_span: Span,
    run_otel_ctx: otel_context.Context,
    parent: str,
    restored: bool,
) -> SpanRecord:
    """The span and the ``skip`` record of a stage that does not run: disabled, or
    ``restored`` from the run a resume continues."""
    attrs = span_attrs.skip_attributes(
        step.span_attributes, restored=restored and step.spec is not None
    )
    span = spans.start_child(step.span_name, run_span, run_otel_ctx, attrs)
    t = time.time_ns()
    spans.finish(span, span_attrs.NO_ATTRIBUTES)
    _, span_id = tel.hex_ids(span)
    start, end = tel.span_times(span, t, t)
    return SpanRecord(
        name=step.span_name, stage=step.name, span_id=span_id, parent_span_id=parent,
        start_ns=start, end_ns=end, result="skip", attempt=0, stage_index=step.index,
    )  # fmt: skip
