"""Provider setup for applications and the CLI: exporters chosen by argument or OTEL_* variables.

Library code never calls `configure`; it uses whatever provider the application installed.
Every exported, failed and dropped span is counted (see `dropcount`), and shutdown is bounded in
time even when the OTLP endpoint is down or hangs.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.metadata
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from opentelemetry import metrics, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from crucible.telemetry.choices import DEFAULT_TRACES_FILE, EXPORTERS, PROTOCOLS
from crucible.telemetry.dropcount import (
    CountingSpanExporter,
    CountingSpanProcessor,
    SpanCounter,
    SpanCounts,
)

if TYPE_CHECKING:  # the metrics SDK loads only when something exports metrics
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader

__all__ = [
    "DEFAULT_SERVICE_NAME",
    "EXPORTERS",
    "PROTOCOLS",
    "ShutdownReport",
    "TelemetryHandle",
    "configure",
]

_log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "crucible"
_HTTP_DEFAULT_BASE = "http://localhost:4318"
_GRPC_DEFAULT_ENDPOINT = "http://localhost:4317"
_TRACES_PATH = "v1/traces"
_METRICS_PATH = "v1/metrics"
_MAX_EXPORT_BATCH = 512


@dataclass(frozen=True, slots=True)
class ShutdownReport:
    """What shutdown achieved: whether it finished in time and where every span went.

    `unexported` spans were still queued or being exported when shutdown gave up.
    """

    completed: bool
    elapsed_s: float
    ended: int
    exported: int
    failed: int
    dropped: int
    unexported: int

    @property
    def lost(self) -> int:
        """Spans that did not (or may not) reach their destination."""
        return self.failed + self.dropped + self.unexported


@dataclass(eq=False)
class TelemetryHandle:
    """The providers `configure` built, where their spans go, and span accounting.

    `meter_provider` is the SDK's when an exporter takes metrics (otlp, console), else the
    API's no-op one (the file exporter writes spans only).
    """

    tracer_provider: TracerProvider
    meter_provider: metrics.MeterProvider
    exporters: tuple[str, ...]
    destination: str
    service_name: str
    installed_global: bool = False
    span_exporters: tuple[SpanExporter, ...] = ()
    _counters: tuple[SpanCounter, ...] = field(default=(), repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _report: ShutdownReport | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        atexit.register(self._at_exit)

    def _counts(self) -> SpanCounts:
        total = SpanCounts()
        for counter in self._counters:
            total = total + counter.snapshot()
        return total

    def stats(self) -> dict[str, int]:
        """Spans ended, exported, failed and dropped, summed over exporters (one per delivery)."""
        return self._counts().as_dict()

    @property
    def dropped_spans(self) -> int:
        """Spans that will never reach their destination: export failed or dropped."""
        counts = self._counts()
        return counts.failed + counts.dropped

    def shutdown(self, timeout_s: float = 5.0) -> ShutdownReport:
        """Flush, then shut down both providers, waiting at most `timeout_s`; idempotent.

        The work runs in a daemon thread so a hung exporter cannot block the caller or process
        exit. If time runs out, batches not yet sent are dropped (and counted). Logs a warning
        when any span was lost.
        """
        with self._lock:
            if self._report is not None:
                return self._report
            atexit.unregister(self._at_exit)
            start = time.monotonic()
            deadline = start + max(timeout_s, 0.0)
            done = threading.Event()

            def remaining_ms() -> int:
                return max(1, int((deadline - time.monotonic()) * 1000))

            def work() -> None:
                try:
                    self.tracer_provider.force_flush(remaining_ms())
                    self.tracer_provider.shutdown()
                    shutdown = getattr(self.meter_provider, "shutdown", None)  # not the no-op's
                    if shutdown is not None:
                        shutdown(timeout_millis=remaining_ms())
                except Exception:
                    _log.exception("telemetry shutdown failed")
                finally:
                    done.set()

            worker = threading.Thread(target=work, name="crucible-telemetry-shutdown", daemon=True)
            try:
                worker.start()
            except RuntimeError:  # no new threads at interpreter exit (3.12+): bounded by exporters
                work()
            completed = done.wait(max(timeout_s, 0.0))
            if not completed:
                for counter in self._counters:
                    counter.abandon()
            counts = self._counts()
            report = ShutdownReport(
                completed=completed,
                elapsed_s=time.monotonic() - start,
                ended=counts.ended,
                exported=counts.exported,
                failed=counts.failed,
                dropped=counts.dropped,
                unexported=counts.pending,
            )
            self._report = report
        if not completed:
            _log.warning("telemetry shutdown did not finish within %.1f s", timeout_s)
        if report.lost:
            _log.warning(
                "%d of %d spans were not exported to %s (failed=%d dropped=%d unexported=%d)",
                report.lost,
                report.ended,
                self.destination,
                report.failed,
                report.dropped,
                report.unexported,
            )
        return report

    def _at_exit(self) -> None:
        self.shutdown()


# --- resolution of arguments and environment ----------------------------------------------------


def _env(name: str, env: Mapping[str, str]) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _resolve_exporters(exporter: str | None, env: Mapping[str, str]) -> tuple[str, ...]:
    if exporter is not None:
        raw, source = exporter, "exporter argument"
    else:
        raw, source = _env("OTEL_TRACES_EXPORTER", env) or "none", "OTEL_TRACES_EXPORTER"
    names: list[str] = []
    for part in raw.split(","):
        name = part.strip().lower()
        if name not in EXPORTERS:
            raise ValueError(
                f"{source}={raw!r}: unknown exporter {part.strip()!r}; "
                f"valid values: {', '.join(EXPORTERS)} (comma-separated)"
            )
        if name != "none" and name not in names:
            names.append(name)
    return tuple(names)


def _resolve_protocol(protocol: str | None, env: Mapping[str, str]) -> str:
    for source, raw in (
        ("protocol argument", protocol),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", _env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", env)),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", _env("OTEL_EXPORTER_OTLP_PROTOCOL", env)),
    ):
        if raw is None:
            continue
        value = raw.strip().lower()
        if value not in PROTOCOLS:
            raise ValueError(
                f"{source}={raw!r}: unsupported OTLP protocol; valid values: {', '.join(PROTOCOLS)}"
            )
        return value
    return PROTOCOLS[0]


def _join(base: str, path: str) -> str:
    return f"{base.rstrip('/')}/{path}"


def _resolve_endpoints(
    endpoint: str | None, protocol: str, env: Mapping[str, str]
) -> tuple[str, str]:
    """(traces, metrics) endpoints: argument, then signal-specific, then generic variables.

    For http/protobuf a base endpoint (the argument or OTEL_EXPORTER_OTLP_ENDPOINT) gets the
    signal path appended, as the OTLP exporter specification says; signal-specific variables
    are used as they are. An argument already ending in /v1/traces is taken as the traces URL.
    """
    traces_env = _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", env)
    metrics_env = _env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", env)
    base_env = _env("OTEL_EXPORTER_OTLP_ENDPOINT", env)
    if protocol == "grpc":
        if endpoint is not None:
            return endpoint, endpoint
        base = base_env or _GRPC_DEFAULT_ENDPOINT
        return traces_env or base, metrics_env or base
    if endpoint is not None:
        if not urlsplit(endpoint).scheme:
            raise ValueError(
                f"endpoint argument={endpoint!r}: expected a URL like http://host:4318"
            )
        base = endpoint.rstrip("/")
        if base.endswith("/" + _TRACES_PATH):
            base = base[: -len(_TRACES_PATH) - 1]
        return _join(base, _TRACES_PATH), _join(base, _METRICS_PATH)
    base = base_env or _HTTP_DEFAULT_BASE
    return traces_env or _join(base, _TRACES_PATH), metrics_env or _join(base, _METRICS_PATH)


def _resource(service_name: str | None) -> Resource:
    """Resource from OTEL_RESOURCE_ATTRIBUTES/OTEL_SERVICE_NAME, the argument winning."""
    detected = Resource.create({})
    name = service_name or str(detected.attributes.get("service.name", ""))
    if not name or name.startswith("unknown_service"):
        name = DEFAULT_SERVICE_NAME
    attrs: dict[str, str] = {"service.name": name}
    if "service.version" not in detected.attributes:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            attrs["service.version"] = importlib.metadata.version("crucible-pipelines")
    return detected.merge(Resource(attrs))


def _offload(offload: bool | None, env: Mapping[str, str]) -> bool:
    """Whether OTLP span export runs in a child process (argument, else env, else yes)."""
    if offload is not None:
        return offload
    raw = (_env("CRUCIBLE_OTLP_OFFLOAD", env) or "1").strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"CRUCIBLE_OTLP_OFFLOAD must be 1/0 (true/false), got {raw!r}")


def _otlp_exporters(
    protocol: str, traces_url: str, metrics_url: str, timeout_s: float, offload: bool = False
) -> tuple[SpanExporter, MetricExporter]:
    if offload:
        # Imported here: only offloading needs the module (and its child process).
        from crucible.telemetry.offload import OffloadedOtlpExporter

        span_exporter: SpanExporter = OffloadedOtlpExporter(protocol, traces_url, timeout_s)
        _, metric_exporter = _otlp_exporters(protocol, traces_url, metrics_url, timeout_s)
        return span_exporter, metric_exporter
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return (
            GrpcSpanExporter(endpoint=traces_url, timeout=timeout_s),
            GrpcMetricExporter(endpoint=metrics_url, timeout=timeout_s),
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return (
        HttpSpanExporter(endpoint=traces_url, timeout=timeout_s),
        HttpMetricExporter(endpoint=metrics_url, timeout=timeout_s),
    )


def _install_global(tracer_provider: TracerProvider, meter_provider: metrics.MeterProvider) -> bool:
    """Install both providers globally unless an application already installed one."""
    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider):
        _log.warning(
            "a global tracer provider (%s) is already installed; leaving it in place",
            type(current).__name__,
        )
        return False
    trace.set_tracer_provider(tracer_provider)
    if trace.get_tracer_provider() is not tracer_provider:
        _log.warning("could not install the global tracer provider; leaving the existing one")
        return False
    if isinstance(meter_provider, metrics.NoOpMeterProvider):
        pass  # nothing to install: an application may still install its own later
    elif type(metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider":
        metrics.set_meter_provider(meter_provider)
    else:
        _log.warning("a global meter provider is already installed; leaving it in place")
    return True


def configure(
    service_name: str | None = None,
    exporter: str | None = None,
    *,
    endpoint: str | None = None,
    protocol: str | None = None,
    file_path: str | os.PathLike[str] | None = None,
    set_global: bool = True,
    max_queue_size: int = 65536,
    export_timeout_s: float = 5.0,
    schedule_delay_ms: int = 200,
    offload: bool | None = None,
) -> TelemetryHandle:
    """Build SDK tracer and meter providers exporting to `exporter` (for applications and CLI).

    `exporter` is a comma list of otlp, console, file, none; default OTEL_TRACES_EXPORTER, else
    none. otlp honours OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT and _PROTOCOL (http/protobuf or
    grpc), the arguments winning; file writes OTLP/JSON lines to `file_path`, else
    CRUCIBLE_TRACES_FILE, else traces.jsonl. Bad names raise ValueError naming their source.
    With `set_global` the providers become the global ones if none is installed yet.
    `offload` (default: CRUCIBLE_OTLP_OFFLOAD, else on) encodes OTLP spans in a child process.
    """
    if max_queue_size <= 0:
        raise ValueError(f"max_queue_size must be positive, got {max_queue_size}")
    if export_timeout_s <= 0:
        raise ValueError(f"export_timeout_s must be positive, got {export_timeout_s}")
    if schedule_delay_ms <= 0:
        raise ValueError(f"schedule_delay_ms must be positive, got {schedule_delay_ms}")
    env = os.environ
    names = _resolve_exporters(exporter, env)
    if protocol is not None:
        _resolve_protocol(protocol, {})
    resource = _resource(service_name)

    span_exporters: list[tuple[str, SpanExporter]] = []
    readers: list[MetricReader] = []
    destinations: list[str] = []
    timeout_ms = export_timeout_s * 1000
    offloaded = "otlp" in names and _offload(offload, env)
    for name in names:
        if name == "otlp":
            proto = _resolve_protocol(protocol, env)
            traces_url, metrics_url = _resolve_endpoints(endpoint, proto, env)
            span_exp, metric_exp = _otlp_exporters(
                proto, traces_url, metrics_url, export_timeout_s, offloaded
            )
            span_exporters.append((name, span_exp))
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            readers.append(
                PeriodicExportingMetricReader(metric_exp, export_timeout_millis=timeout_ms)
            )
            destinations.append(traces_url if proto != "grpc" else f"{traces_url} (grpc)")
        elif name == "console":
            from opentelemetry.sdk.metrics.export import (
                ConsoleMetricExporter,
                PeriodicExportingMetricReader,
            )

            span_exporters.append((name, ConsoleSpanExporter(out=sys.stderr)))
            readers.append(
                PeriodicExportingMetricReader(
                    ConsoleMetricExporter(out=sys.stderr), export_timeout_millis=timeout_ms
                )
            )
            destinations.append("console")
        else:  # file
            path = file_path or _env("CRUCIBLE_TRACES_FILE", env) or DEFAULT_TRACES_FILE
            from crucible.telemetry.jsonl import OtlpJsonLinesExporter  # protobuf: file only

            file_exp = OtlpJsonLinesExporter(path)
            span_exporters.append((name, file_exp))
            destinations.append(str(file_exp.path))

    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    counters: list[SpanCounter] = []
    for name, span_exp in span_exporters:
        counter = SpanCounter()
        counters.append(counter)
        if name == "otlp" and offloaded:
            # Imported here, as in _otlp_exporters: only offloading needs these modules.
            from crucible.telemetry.handoff import OffloadSpanProcessor
            from crucible.telemetry.offload import OffloadedOtlpExporter

            assert isinstance(span_exp, OffloadedOtlpExporter)
            tracer_provider.add_span_processor(
                OffloadSpanProcessor(
                    span_exp,
                    counter,
                    max_queued=max_queue_size,
                    max_batch=_MAX_EXPORT_BATCH,
                    schedule_delay_s=schedule_delay_ms / 1000,
                )
            )
            continue
        batch = BatchSpanProcessor(
            CountingSpanExporter(span_exp, counter),
            max_queue_size=max_queue_size,
            schedule_delay_millis=schedule_delay_ms,
            max_export_batch_size=min(_MAX_EXPORT_BATCH, max_queue_size),
            export_timeout_millis=timeout_ms,
        )
        tracer_provider.add_span_processor(CountingSpanProcessor(batch, counter, max_queue_size))
    meter_provider: metrics.MeterProvider = metrics.NoOpMeterProvider()
    if readers:
        from opentelemetry.sdk.metrics import MeterProvider

        meter_provider = MeterProvider(
            resource=resource, metric_readers=readers, shutdown_on_exit=False
        )

    handle = TelemetryHandle(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        exporters=names,
        destination=", ".join(destinations) or "none",
        service_name=str(resource.attributes["service.name"]),
        span_exporters=tuple(exp for _, exp in span_exporters),
        _counters=tuple(counters),
    )
    if set_global:
        handle.installed_global = _install_global(tracer_provider, meter_provider)
    return handle
