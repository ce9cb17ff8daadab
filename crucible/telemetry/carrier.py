"""W3C carriers: where a run's parent comes from, and the carrier of each run and stage span."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.trace import Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from crucible.frozen import FrozenMap

_TRACECONTEXT = TraceContextTextMapPropagator()
_BAGGAGE = W3CBaggagePropagator()


def parent_context(parent: Any) -> otel_context.Context | None:
    """Resolve ``parent=``: an OTel Context, a traceparent string, or a carrier mapping.

    With None: the ambient current span if there is one, else the ``TRACEPARENT`` (and
    ``TRACESTATE``/``BAGGAGE``) environment variables, else None (a new trace).
    """
    if isinstance(parent, otel_context.Context):
        return parent
    if isinstance(parent, str):
        return _extract({"traceparent": parent}, parent_is_explicit=True)
    if isinstance(parent, Mapping):
        carrier = {str(k).lower(): str(v) for k, v in parent.items()}
        return _extract(carrier, parent_is_explicit=True)
    if parent is not None:
        raise TypeError(
            "parent must be an OpenTelemetry Context, a traceparent string or a carrier mapping; "
            f"got {type(parent).__name__}"
        )
    if trace.get_current_span().get_span_context().is_valid:
        return None  # the current context already carries the ambient span
    env = os.environ.get("TRACEPARENT")
    if env:
        carrier = {"traceparent": env}
        if os.environ.get("TRACESTATE"):
            carrier["tracestate"] = os.environ["TRACESTATE"]
        if os.environ.get("BAGGAGE"):
            carrier["baggage"] = os.environ["BAGGAGE"]
        return _extract(carrier, parent_is_explicit=False)
    return None


def _extract(carrier: dict[str, str], *, parent_is_explicit: bool) -> otel_context.Context:
    ctx = _TRACECONTEXT.extract(carrier, context=otel_context.Context())
    if parent_is_explicit and not trace.get_current_span(ctx).get_span_context().is_valid:
        raise ValueError(f"parent traceparent is not a valid W3C traceparent: {carrier!r}")
    return _BAGGAGE.extract(carrier, context=ctx)


def carrier_for(span: Span, ctx: otel_context.Context | None = None) -> dict[str, str]:
    """The W3C carrier (traceparent, and tracestate/baggage when present) of ``span``."""
    sc = span.get_span_context()
    carrier = {
        "traceparent": f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags) & 1:02x}"
    }
    if sc.trace_state:
        carrier["tracestate"] = sc.trace_state.to_header()
    if ctx is not None and baggage.get_all(ctx):
        _BAGGAGE.inject(carrier, context=ctx)
    return carrier


class StageCarriers:
    """Builds each stage span's carrier from its run's: same trace id, flags, state and baggage.

    Only the span id in ``traceparent`` differs between a run's stage carriers, so the run's
    carrier is split once around it. When the run carries a ``tracestate`` (a sampler may
    change it per span), each carrier is read from its own span instead.
    """

    __slots__ = ("_base", "_head", "_per_span", "_tail", "run")

    def __init__(self, run_span: Span, run_context: otel_context.Context) -> None:
        sc = run_span.get_span_context()
        self._head = f"00-{sc.trace_id:032x}-"
        self._tail = f"-{int(sc.trace_flags) & 1:02x}"
        if sc.trace_state or baggage.get_all(run_context):
            carrier = carrier_for(run_span, run_context)
        else:  # what carrier_for makes, from the pieces kept for the stages
            carrier = {"traceparent": f"{self._head}{sc.span_id:016x}{self._tail}"}
        self.run: FrozenMap[str, str] = FrozenMap(carrier)
        self._per_span = "tracestate" in carrier
        self._base = self.run

    def for_stage(self, span: Span, span_id: str) -> FrozenMap[str, str]:
        """The carrier of a stage span whose hex id is ``span_id``."""
        if self._per_span:
            fresh = carrier_for(span)
            return self._base.update(fresh)
        return self._base.set("traceparent", f"{self._head}{span_id}{self._tail}")
