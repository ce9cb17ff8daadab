"""Whether the engine may build its spans beneath the SDK's API, and which span maker it gets.

``probe`` runs once per tracer: it checks the provider, tracer and span processor classes,
then (once per process) builds a span through the public API and one through ``SdkSpans`` on a
scratch provider and compares them field by field. Anything unexpected and the engine uses the
public API (``ApiSpans``) for that tracer.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk import trace as sdk
from opentelemetry.sdk.trace import sampling
from opentelemetry.trace import Link, SpanKind

from crucible.telemetry.enginespans import ApiSpans, SdkSpans, UntracedSpans

_log = logging.getLogger(__name__)
_PROCESSORS = (sdk.SynchronousMultiSpanProcessor, sdk.ConcurrentMultiSpanProcessor)
_SPAN_FIELDS = frozenset({
    "_name", "_context", "_kind", "_instrumentation_info", "_instrumentation_scope", "_parent",
    "_start_time", "_end_time", "_attributes", "_events", "_links", "_resource", "_status",
    "_sampler", "_trace_config", "_record_exception", "_set_status_on_exception",
    "_span_processor", "_limits", "_lock", "_record_end_metrics",
})  # fmt: skip
_ATTRIBUTE_FIELDS = frozenset(
    {"_dict", "maxlen", "dropped", "max_value_len", "_lock", "_immutable"}
)


def spans_for(provider: Any, tracer: trace.Tracer, *, private: bool = False) -> ApiSpans:
    """The span maker for ``tracer`` of ``provider``; ``private``: the export-free provider.

    ``CRUCIBLE_ENGINE_SPANS=api`` in the environment (read when a provider is first used)
    keeps the engine on the public API.
    """
    if os.environ.get("CRUCIBLE_ENGINE_SPANS", "").strip().lower() == "api":
        return ApiSpans(tracer)
    problem = probe(provider, tracer)
    if problem is not None:
        if problem != NOT_SDK:
            _log.info("crucible: engine spans through the public API (%s)", problem)
        return ApiSpans(tracer)
    if private:
        return UntracedSpans(tracer, provider)
    return SdkSpans(tracer)


NOT_SDK = "not an SDK provider"


def probe(provider: Any, tracer: Any) -> str | None:
    """None when ``SdkSpans`` may serve ``tracer``; otherwise why it may not."""
    if type(provider) is not sdk.TracerProvider or type(tracer) is not sdk.Tracer:
        return NOT_SDK
    start_span = type(tracer).start_span
    if getattr(start_span, "__module__", None) != sdk.__name__:
        return "Tracer.start_span is wrapped"
    try:
        processor = tracer.span_processor
        if type(processor) not in _PROCESSORS or processor is not provider._active_span_processor:
            return f"unexpected span processor {type(processor).__name__}"
        for needed in ("_tracer_config", "_tracer_metrics", "_span_limits", "id_generator"):
            getattr(tracer, needed)
    except AttributeError as err:
        return f"unexpected tracer shape: {err}"
    return _shape_problem()


@functools.cache
def _shape_problem() -> str | None:
    """Build one span through the public API and one here, on a scratch provider; compare."""
    try:
        return _compare_on_scratch_provider()
    except Exception as err:  # any surprise in the SDK's shape means: do not go beneath it
        return f"probe failed: {type(err).__name__}: {err}"


class _Capture(sdk.SpanProcessor):
    def __init__(self) -> None:
        self.started: list[tuple[Any, Any]] = []
        self.ended: list[Any] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started.append((span, parent_context))

    def on_end(self, span: Any) -> None:
        self.ended.append(span)


def _compare_on_scratch_provider() -> str | None:
    capture = _Capture()
    provider = sdk.TracerProvider(sampler=sampling.ParentBased(sampling.ALWAYS_ON),
                                  shutdown_on_exit=False)  # fmt: skip
    provider.add_span_processor(capture)
    tracer: Any = provider.get_tracer("crucible.probe", "1")
    root = tracer.start_span("root", kind=SpanKind.SERVER)
    parent = trace.set_span_in_context(root)
    link = Link(root.get_span_context(), {"l": 1})
    attrs = {"s": "v", "i": 1, "f": 1.5, "b": True, "t": ("a", "b")}
    made: list[Any] = []
    for spans in (ApiSpans(tracer), SdkSpans(tracer)):
        span = spans.start("probe", parent, SpanKind.CLIENT, attrs, [link])
        span.add_event("e", {"k": "v"}, 1)
        spans.finish(span, {"r": "ok", "s": "w"})
        made.append(span)
    root.end()
    public, fast = made
    if type(public) is not type(fast) or set(vars(public)) != _SPAN_FIELDS:
        return "SDK Span fields changed"
    if set(vars(fast)) != _SPAN_FIELDS or set(vars(public._attributes)) != _ATTRIBUTE_FIELDS:
        return "SDK Span fields changed"
    for field in sorted(_SPAN_FIELDS - {"_context", "_lock", "_start_time", "_end_time"}):
        a, b = getattr(public, field), getattr(fast, field)
        if type(a) is not type(b):
            return f"span field {field} differs in type"
    ended = {id(s.context): s for s in capture.ended}
    a, b = ended.get(id(public.get_span_context())), ended.get(id(fast.get_span_context()))
    if a is None or b is None or type(a) is not type(b):
        return "span processors did not see both spans end"
    same = (
        a.name == b.name and a.kind == b.kind and a.parent == b.parent
        and dict(a.attributes) == dict(b.attributes)
        and list(a.attributes) == list(b.attributes)
        and [(e.name, dict(e.attributes), e.timestamp) for e in a.events]
        == [(e.name, dict(e.attributes), e.timestamp) for e in b.events]
        and [(x.context, dict(x.attributes)) for x in a.links]
        == [(x.context, dict(x.attributes)) for x in b.links]
        and a.status.status_code == b.status.status_code
        and a.resource is b.resource
        and a.instrumentation_scope == b.instrumentation_scope
        and a.context.trace_id == b.context.trace_id
        and a.context.trace_flags == b.context.trace_flags
        and a.context.trace_state == b.context.trace_state
        and a.start_time is not None and b.start_time is not None
        and a.end_time is not None and b.end_time is not None
        and b.start_time <= b.end_time
    )  # fmt: skip
    if not same:
        return "spans built beneath the API differ from the API's"
    started = [s for s, _ in capture.started if s is public or s is fast]
    if len(started) != 2 or any(c is not parent for s, c in capture.started if s in made):
        return "span processors did not see both spans start"
    return None
