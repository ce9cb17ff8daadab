"""Engine-side OpenTelemetry: tracer choice, span records for ctx.trace, W3C carriers, metrics."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    UpDownCounter,
    get_meter_provider,
)
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.trace import Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

INSTRUMENTATION_NAME = "crucible"
_TRACECONTEXT = TraceContextTextMapPropagator()
_BAGGAGE = W3CBaggagePropagator()

# Attribute names (OpenTelemetry CI/CD semantic conventions + our crucible.* namespace).
PIPELINE_NAME = "cicd.pipeline.name"
PIPELINE_RUN_ID = "cicd.pipeline.run.id"
PIPELINE_RESULT = "cicd.pipeline.result"
TASK_NAME = "cicd.pipeline.task.name"
TASK_RUN_ID = "cicd.pipeline.task.run.id"
TASK_RUN_RESULT = "cicd.pipeline.task.run.result"
ERROR_TYPE = "error.type"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("crucible-pipelines")
    except Exception:
        return "0"


_fallback_lock = threading.Lock()
_fallback: SdkTracerProvider | None = None


def fallback_tracer_provider() -> SdkTracerProvider:
    """A private SDK provider with no processors: real ids and timings, nothing exported."""
    global _fallback
    if _fallback is None:
        with _fallback_lock:
            if _fallback is None:
                _fallback = SdkTracerProvider()
    return _fallback


def resolve_tracer_provider(provider: trace.TracerProvider | None) -> trace.TracerProvider:
    """The given provider, else the global one if an SDK is installed, else the private one."""
    if provider is not None:
        return provider
    current = trace.get_tracer_provider()
    if isinstance(current, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return fallback_tracer_provider()
    return current


@dataclass(frozen=True, slots=True)
class Instruments:
    """The engine's metric instruments for one meter provider."""

    run_duration: Histogram
    run_active: UpDownCounter
    run_errors: Counter
    stage_duration: Histogram


@dataclass(frozen=True, slots=True)
class Telemetry:
    """A tracer and instruments, cached per (tracer provider, meter provider)."""

    tracer: trace.Tracer
    instruments: Instruments
    metrics_enabled: bool = True


_cache: weakref.WeakKeyDictionary[Any, dict[int, Telemetry]] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()
_last: tuple[Any, Any, Telemetry] | None = None


def telemetry_for(
    tracer_provider: trace.TracerProvider | None, meter_provider: MeterProvider | None
) -> Telemetry:
    """Tracer and instruments for these providers (created once, then reused)."""
    tp = resolve_tracer_provider(tracer_provider)
    mp = meter_provider if meter_provider is not None else get_meter_provider()
    last = _last
    if last is not None and last[0] is tp and last[1] is mp:
        return last[2]
    per_tp = _cache.get(tp)
    hit = per_tp.get(id(mp)) if per_tp is not None else None
    if hit is not None:
        _remember(tp, mp, hit)
        return hit
    with _cache_lock:
        tracer = tp.get_tracer(INSTRUMENTATION_NAME, _version())
        meter = mp.get_meter(INSTRUMENTATION_NAME, _version())
        instruments = Instruments(
            run_duration=meter.create_histogram(
                "cicd.pipeline.run.duration", unit="s", description="Duration of a pipeline run."
            ),
            run_active=meter.create_up_down_counter(
                "cicd.pipeline.run.active", unit="{run}", description="Runs in progress."
            ),
            run_errors=meter.create_counter(
                "cicd.pipeline.run.errors", unit="{error}", description="Runs that did not succeed."
            ),
            stage_duration=meter.create_histogram(
                "crucible.stage.duration", unit="s", description="Duration of one stage attempt."
            ),
        )
        # With no SDK meter provider installed, recording would be a no-op: skip it entirely.
        enabled = type(mp).__name__ not in ("_ProxyMeterProvider", "NoOpMeterProvider")
        tel = Telemetry(tracer=tracer, instruments=instruments, metrics_enabled=enabled)
        _cache.setdefault(tp, {})[id(mp)] = tel
        _remember(tp, mp, tel)
        return tel


def _remember(tp: Any, mp: Any, tel: Telemetry) -> None:
    # One-entry fast path: most processes run everything on one pair of providers.
    global _last
    _last = (tp, mp, tel)


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


def hex_ids(span: Span) -> tuple[str, str]:
    sc = span.get_span_context()
    return f"{sc.trace_id:032x}", f"{sc.span_id:016x}"


def span_times(span: Span, start_fallback: int, end_fallback: int) -> tuple[int, int]:
    """Start/end ns from an SDK span, or the engine's own clock readings for other APIs."""
    start = getattr(span, "start_time", None)
    end = getattr(span, "end_time", None)
    return (start if isinstance(start, int) else start_fallback), (
        end if isinstance(end, int) else end_fallback
    )


_SCALARS = (bool, int, float, str)


def event_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Coerce event attributes to OpenTelemetry attribute types (others become strings)."""
    out: dict[str, Any] = {}
    for k, v in attributes.items():
        if isinstance(v, bool | int | float | str):
            out[k] = v
        elif isinstance(v, list | tuple) and all(isinstance(i, _SCALARS) for i in v):
            out[k] = list(v)
        else:
            out[k] = repr(v)
    return out
