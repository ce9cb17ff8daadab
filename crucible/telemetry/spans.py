"""Engine-side OpenTelemetry: which tracer provider, span ids and times, metric instruments."""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    UpDownCounter,
    get_meter_provider,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.trace import Span

from crucible.telemetry import conventions as names
from crucible.telemetry.enginespans import ApiSpans
from crucible.telemetry.sdkprobe import spans_for


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
    """A tracer, its span maker and instruments, cached per (tracer provider, meter provider)."""

    tracer: trace.Tracer
    instruments: Instruments
    spans: ApiSpans  # how the engine starts and ends its spans on this tracer
    metrics_enabled: bool = True
    exporting: bool = True  # False on the private export-free provider (untraced runs)


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
        tracer = tp.get_tracer(names.INSTRUMENTATION_NAME, _version())
        meter = mp.get_meter(names.INSTRUMENTATION_NAME, _version())
        instruments = Instruments(
            run_duration=meter.create_histogram(
                names.METRIC_RUN_DURATION, unit="s", description="Duration of a pipeline run."
            ),
            run_active=meter.create_up_down_counter(
                names.METRIC_RUN_ACTIVE, unit="{run}", description="Runs in progress."
            ),
            run_errors=meter.create_counter(
                names.METRIC_RUN_ERRORS, unit="{error}", description="Runs that did not succeed."
            ),
            stage_duration=meter.create_histogram(
                names.METRIC_STAGE_DURATION, unit="s", description="Duration of one stage attempt."
            ),
        )
        # With no SDK meter provider installed, recording would be a no-op: skip it entirely.
        enabled = type(mp).__name__ not in ("_ProxyMeterProvider", "NoOpMeterProvider")
        spans = spans_for(tp, tracer, private=tp is _fallback)
        tel = Telemetry(tracer, instruments, spans, metrics_enabled=enabled,
                        exporting=tp is not _fallback)  # fmt: skip
        _cache.setdefault(tp, {})[id(mp)] = tel
        _remember(tp, mp, tel)
        return tel


def exporting(tel: Telemetry) -> bool:
    """Whether spans made with ``tel`` go anywhere: not the private provider, and (for an SDK
    provider) at least one span processor, looked up now (processors may be added later)."""
    if not tel.exporting:
        return False
    processors = getattr(getattr(tel.tracer, "span_processor", None), "_span_processors", None)
    return True if processors is None else bool(processors)


def _remember(tp: Any, mp: Any, tel: Telemetry) -> None:
    # One-entry fast path: most processes run everything on one pair of providers.
    global _last
    _last = (tp, mp, tel)


def hex_ids(span: Span) -> tuple[str, str]:
    sc = span.get_span_context()
    return f"{sc.trace_id:032x}", f"{sc.span_id:016x}"


def span_times(span: Span, start_fallback: int, end_fallback: int | None = None) -> tuple[int, int]:
    """Start/end ns from an SDK span, or the engine's own clock readings for other spans.

    ``end_fallback`` None: the clock now.
    """
    start = end = None
    if isinstance(span, ReadableSpan):
        start, end = span.start_time, span.end_time
    if not isinstance(end, int):
        end = end_fallback if end_fallback is not None else time.time_ns()
    return (start if isinstance(start, int) else start_fallback), end
