"""Telemetry: engine-side spans and metrics, and provider setup for applications and the CLI.

Names load on first use, so importing a submodule (``crucible.telemetry.conventions``) does not
load the OpenTelemetry SDK and its exporters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crucible.lazy import lazy_getattr

if TYPE_CHECKING:
    from crucible.telemetry.carrier import parent_context
    from crucible.telemetry.setup import ShutdownReport, TelemetryHandle, configure
    from crucible.telemetry.spans import fallback_tracer_provider, resolve_tracer_provider

_WHERE = {
    "parent_context": "crucible.telemetry.carrier",
    "ShutdownReport": "crucible.telemetry.setup",
    "TelemetryHandle": "crucible.telemetry.setup",
    "configure": "crucible.telemetry.setup",
    "fallback_tracer_provider": "crucible.telemetry.spans",
    "resolve_tracer_provider": "crucible.telemetry.spans",
}

__all__ = [
    "ShutdownReport",
    "TelemetryHandle",
    "configure",
    "fallback_tracer_provider",
    "parent_context",
    "resolve_tracer_provider",
]


__getattr__ = lazy_getattr(__name__, _WHERE)
