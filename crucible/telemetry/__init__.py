"""Telemetry: engine-side spans and metrics, and provider setup for applications and the CLI."""

from crucible.telemetry.carrier import parent_context
from crucible.telemetry.setup import ShutdownReport, TelemetryHandle, configure
from crucible.telemetry.spans import fallback_tracer_provider, resolve_tracer_provider

__all__ = [
    "ShutdownReport",
    "TelemetryHandle",
    "configure",
    "fallback_tracer_provider",
    "parent_context",
    "resolve_tracer_provider",
]
