"""How the engine starts and ends its spans: one span maker per tracer (``sdkprobe`` picks it).

- ``ApiSpans``: the public OpenTelemetry API; works with any provider, and is the fallback.
- ``SdkSpans``: for an SDK provider whose shape ``sdkprobe`` recognised. It does what
  ``Tracer.start_span`` does (the tracer's id generator, sampler, span limits, resource, scope,
  self-metrics and span processors, read from the tracer on every call) but fills the SDK's
  ``Span`` directly, so attribute values the engine made (plain strings, numbers, tuples of
  strings) are copied instead of re-validated one ABC check at a time; any other value goes
  through the SDK's own validation. The spans are the SDK's own class: stage code can use them
  as the current span, set attributes, add events and nest spans under them.
- ``UntracedSpans``: for the private export-free provider while it has no span processors:
  the ids and flags that provider would give, as ``NonRecordingSpan``s (nothing would read
  more); ``ctx.trace`` takes its timings from the engine's clock.

A child of a local parent under the SDK's parent-based sampler with its default local
delegates gets that sampler's decision without the call; every other span asks the sampler.
"""

from __future__ import annotations

import inspect
import random
import threading
from collections.abc import Mapping, Sequence
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk import trace as sdk
from opentelemetry.sdk.trace import sampling
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from crucible.telemetry.attributes import Checked, clean_copy


class ApiSpans:
    """The engine's spans through the public OpenTelemetry API (works with any provider)."""

    kind = "api"

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    def start(
        self,
        name: str,
        context: otel_context.Context | None,
        kind: SpanKind,
        attributes: Mapping[str, Any],
        links: Sequence[Link] = (),
    ) -> Span:
        """Start a span under the span in ``context`` (a new trace when it has none)."""
        return self.tracer.start_span(
            name, context=context, kind=kind, attributes=attributes, links=links or None
        )

    def start_child(
        self,
        name: str,
        parent: Span,
        context: otel_context.Context,
        attributes: Mapping[str, Any],
    ) -> Span:
        """Start an INTERNAL span under ``parent``, the current span of ``context``."""
        return self.start(name, context, SpanKind.INTERNAL, attributes)

    def finish(self, span: Span, attributes: Mapping[str, Any]) -> None:
        """Set the span's final ``attributes`` and end it."""
        span.set_attributes(attributes)
        span.end()


_new = object.__new__
_tuple_new = tuple.__new__
_INTERNAL = SpanKind.INTERNAL
_random_bits = random.getrandbits
_MAX_TRACE_ID, _MAX_SPAN_ID = 2**128 - 1, 2**64 - 1
_Lock = threading.Lock
_get_current_span = trace.get_current_span
_SpanClass: Any = sdk._Span
_UNSET_STATUS = inspect.signature(sdk.ReadableSpan.__init__).parameters["status"].default
_SAMPLE, _DROP = sampling.Decision.RECORD_AND_SAMPLE, sampling.Decision.DROP
_RECORD = sampling.Decision.RECORD_ONLY
_FLAGS = {  # (sampled, random trace id) -> flags
    (False, False): TraceFlags(TraceFlags.DEFAULT),
    (True, False): TraceFlags(TraceFlags.SAMPLED),
    (False, True): TraceFlags(TraceFlags.RANDOM_TRACE_ID),
    (True, True): TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID),
}

_SAMPLED_BIT = TraceFlags.SAMPLED
# a child's flags from its parent's (when those hold no other bits): sampled and random id
_CHILD_FLAGS = {int(f): f for f in _FLAGS.values()}


def inherits_local_parent(sampler: Any) -> bool:
    """True when ``sampler`` gives a child of a local parent exactly the parent's decision."""
    return (
        isinstance(sampler, sampling.ParentBased)
        and type(sampler).should_sample is sampling.ParentBased.should_sample
        and getattr(sampler, "_local_parent_sampled", None) is sampling.ALWAYS_ON
        and getattr(sampler, "_local_parent_not_sampled", None) is sampling.ALWAYS_OFF
    )


class SdkSpans(ApiSpans):
    """The engine's spans on one SDK tracer, without re-validating the engine's attributes."""

    kind = "sdk"

    def __init__(self, tracer: Any) -> None:
        super().__init__(tracer)
        self._sdk = tracer
        self._key: tuple[Any, ...] = ()
        self._fields: dict[str, Any] = {}
        self._sampler: Any = None
        self._inherit = False

    def _refresh(self, tracer: Any) -> None:
        """Re-read what the tracer's spans share (the tracer may have changed it since)."""
        self._key = (tracer.resource, tracer.sampler, tracer.span_processor, tracer._span_limits)
        self._fields = {
            "_kind": SpanKind.INTERNAL,
            "_instrumentation_info": tracer.instrumentation_info,
            "_instrumentation_scope": tracer._instrumentation_scope,
            "_end_time": None,
            "_resource": tracer.resource,
            "_status": _UNSET_STATUS,
            "_sampler": tracer.sampler,
            "_trace_config": None,
            "_record_exception": True,
            "_set_status_on_exception": True,
            "_span_processor": tracer.span_processor,
            "_limits": tracer._span_limits,
        }
        self._sampler = tracer.sampler
        self._inherit = inherits_local_parent(tracer.sampler)

    def _current(self, tracer: Any) -> None:
        key = self._key
        if (
            not key
            or tracer.resource is not key[0]
            or tracer.sampler is not key[1]
            or tracer.span_processor is not key[2]
            or tracer._span_limits is not key[3]
        ):
            self._refresh(tracer)

    def _decide(
        self,
        tracer: Any,
        parent: SpanContext | None,
        name: str,
        context: otel_context.Context | None,
        kind: SpanKind,
        attributes: Mapping[str, Any],
        links: Sequence[Link],
    ) -> tuple[SpanContext, SpanContext | None, sampling.Decision, Mapping[str, Any] | None]:
        """The new span's context, its parent's, the sampler's decision and kept attributes."""
        ids = tracer.id_generator
        fast_ids = type(ids) is RandomIdGenerator
        if fast_ids and self._inherit and parent is not None and parent.is_valid:
            flags = parent.trace_flags
            if not parent.is_remote and flags in _CHILD_FLAGS:  # the common case, in short
                span_id = _random_bits(64)
                while not span_id:
                    span_id = _random_bits(64)
                sampled = flags & _SAMPLED_BIT
                return (
                    _tuple_new(
                        SpanContext,
                        (parent.trace_id, span_id, False, _CHILD_FLAGS[flags],
                         parent.trace_state, True),
                    ),
                    parent,
                    _SAMPLE if sampled else _DROP,
                    attributes if sampled else None,
                )  # fmt: skip
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = ids.generate_trace_id()
        else:
            trace_id = parent.trace_id
        kept: Mapping[str, Any] | None
        if parent is not None and not parent.is_remote and self._inherit:
            sampled = parent.trace_flags.sampled
            decision = _SAMPLE if sampled else _DROP
            state = parent.trace_state
            kept = attributes if sampled else None
        else:
            result = self._sampler.should_sample(
                context, trace_id, name, kind, attributes, links or ()
            )
            decision, state, kept = result.decision, result.trace_state, result.attributes
        if parent is None:
            randomized = True if fast_ids else ids.is_trace_id_random()
        else:
            randomized = parent.trace_flags.random_trace_id
        span_id = _random_bits(64) if fast_ids else ids.generate_span_id()
        while fast_ids and not span_id:
            span_id = _random_bits(64)
        flags = _FLAGS[decision is _SAMPLE, bool(randomized)]  # Decision.is_sampled()
        # SpanContext(trace_id, span_id, False, flags, state), without its Python-level __new__
        valid = 0 < trace_id <= _MAX_TRACE_ID and 0 < span_id <= _MAX_SPAN_ID
        span_context = _tuple_new(
            SpanContext,
            (
                trace_id,
                span_id,
                False,
                flags,
                DEFAULT_TRACE_STATE if state is None else state,
                valid,
            ),
        )
        return span_context, parent, decision, kept

    def start(
        self,
        name: str,
        context: otel_context.Context | None,
        kind: SpanKind,
        attributes: Mapping[str, Any],
        links: Sequence[Link] = (),
    ) -> Span:
        parent = _get_current_span(context).get_span_context()
        return self._start(parent, name, context, kind, attributes, links)

    def start_child(
        self,
        name: str,
        parent: Span,
        context: otel_context.Context,
        attributes: Mapping[str, Any],
    ) -> Span:
        return self._start(parent.get_span_context(), name, context, _INTERNAL, attributes, ())

    def _start(
        self,
        parent: SpanContext | None,
        name: str,
        context: otel_context.Context | None,
        kind: SpanKind,
        attributes: Mapping[str, Any],
        links: Sequence[Link],
    ) -> Span:
        tracer = self._sdk
        if not tracer._tracer_config.is_enabled:
            return ApiSpans.start(self, name, context, kind, attributes, links)
        self._current(tracer)
        span_context, parent, decision, kept = self._decide(
            tracer, parent, name, context, kind, attributes, links
        )
        end_metrics = tracer._tracer_metrics.start_span(parent, decision)
        if decision is not _SAMPLE and decision is not _RECORD:  # not Decision.is_recording()
            return _unrecorded(span_context)
        fields = self._fields
        limits = fields["_limits"]
        span = _new(_SpanClass)
        values = span.__dict__
        values.update(fields)
        values["_name"] = name
        values["_context"] = span_context
        values["_parent"] = parent
        if kind is not _INTERNAL:
            values["_kind"] = kind
        values["_lock"] = _Lock()
        values["_attributes"] = _attributes(limits, kept)
        values["_events"] = BoundedList(limits.max_events)
        values["_links"] = span._new_links(links) if links else BoundedList(limits.max_links)
        values["_record_end_metrics"] = end_metrics
        values["_start_time"] = time_ns()
        fields["_span_processor"].on_start(span, parent_context=context)
        return span  # type: ignore[no-any-return]

    def finish(self, span: Span, attributes: Mapping[str, Any]) -> None:
        if type(span) is _SpanClass:
            with span._lock:  # type: ignore[attr-defined]
                if span._end_time is None:  # type: ignore[attr-defined]
                    _merge(span._attributes, attributes)  # type: ignore[attr-defined]
        else:
            span.set_attributes(attributes)
        span.end()


class UntracedSpans(SdkSpans):
    """Spans of the private export-free provider: its ids, flags and trace state, unrecorded.

    Nothing reads the SDK's span objects when the provider has no span processors, so each span
    is a ``NonRecordingSpan`` with the context the provider's tracer would have given it. If a
    processor is ever added to the provider, its spans are recorded again (``SdkSpans``).
    """

    kind = "untraced"

    def __init__(self, tracer: Any, provider: Any) -> None:
        super().__init__(tracer)
        self._processor = provider._active_span_processor

    def _start(
        self,
        parent: SpanContext | None,
        name: str,
        context: otel_context.Context | None,
        kind: SpanKind,
        attributes: Mapping[str, Any],
        links: Sequence[Link],
    ) -> Span:
        tracer = self._sdk
        if self._processor._span_processors or not tracer._tracer_config.is_enabled:
            return super()._start(parent, name, context, kind, attributes, links)
        self._current(tracer)
        return _unrecorded(self._decide(tracer, parent, name, context, kind, attributes, links)[0])

    def finish(self, span: Span, attributes: Mapping[str, Any]) -> None:
        if type(span) is not NonRecordingSpan:
            super().finish(span, attributes)


def _unrecorded(span_context: SpanContext) -> Span:
    """``NonRecordingSpan(span_context)`` without the Python-level ``__init__`` call."""
    span = _new(NonRecordingSpan)
    span._context = span_context
    return span


def _attributes(limits: Any, values: Mapping[str, Any] | None) -> BoundedAttributes:
    """A span's attributes as the SDK would hold them, copied when already valid."""
    maxlen, max_len = limits.max_span_attributes, limits.max_span_attribute_length
    if type(values) is Checked and (max_len is None or values.longest <= max_len):
        clean: dict[str, Any] | None = dict(values)  # checked when the plan was made
    else:
        clean = clean_copy(values, max_len) if values else {}
    if clean is None or (maxlen is not None and len(clean) > maxlen):
        return BoundedAttributes(maxlen, values, immutable=False, max_value_len=max_len)
    held = BoundedAttributes(maxlen, None, immutable=False, max_value_len=max_len)
    held._dict = clean
    return held


def _merge(held: BoundedAttributes, values: Mapping[str, Any]) -> None:
    """``held.update(values)`` as the SDK does it (caller holds the span's lock)."""
    clean = clean_copy(values, held.max_value_len)
    stored = held._dict
    if clean is None or (held.maxlen is not None and len(stored) + len(clean) > held.maxlen):
        held._set_items(values)
        return
    for key, value in clean.items():
        if key in stored:
            del stored[key]  # the SDK moves a re-set key to the end
        stored[key] = value
