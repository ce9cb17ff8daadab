"""Telemetry for ``run`` and ``batch``: providers for ``--exporter``, where spans went, shutdown."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from crucible.cli.app import CliError
from crucible.cli.output import jaeger_link, warn

if TYPE_CHECKING:
    from crucible.telemetry.setup import TelemetryHandle

DEFAULT_EXPORTER = "file"
SHUTDOWN_TIMEOUT_S = 5.0


def setup_telemetry(exporter: str | None) -> TelemetryHandle:
    """Configure (and install globally) the providers for ``--exporter`` or the environment."""
    from crucible.telemetry.setup import configure  # the SDK loads only when a run needs it

    chosen = exporter or os.environ.get("OTEL_TRACES_EXPORTER", "").strip() or DEFAULT_EXPORTER
    try:
        handle = configure(exporter=chosen, set_global=True)
    except ValueError as err:
        raise CliError(f"--exporter: {err}") from None
    # The CLI reports lost spans itself; keep the library's duplicate warning quiet.
    logging.getLogger("crucible.telemetry.setup").setLevel(logging.ERROR)
    return handle


def trace_destination(handle: TelemetryHandle) -> str:
    """Where the spans went, with file paths made absolute."""
    if not handle.exporters:
        return "not exported (exporter none)"
    parts = handle.destination.split(", ")
    return ", ".join(p if "://" in p or p == "console" else str(Path(p).resolve()) for p in parts)


def _reaches_jaeger(handle: TelemetryHandle) -> bool:
    """Spans go where Jaeger can show them: OTLP, or a file its upload tab opens (not the
    terminal alone)."""
    return any(name != "console" for name in handle.exporters)


def trace_link(handle: TelemetryHandle, base: str, trace_id: str | None) -> str | None:
    """The Jaeger link of ``trace_id``; None when no span went where Jaeger can show it."""
    return jaeger_link(base, trace_id) if _reaches_jaeger(handle) else None


def run_url(handle: TelemetryHandle, base: str) -> str | None:
    """The ``run(url=...)`` template of a stage span's Jaeger page; None if nothing is exported."""
    if not _reaches_jaeger(handle):
        return None
    return f"{base.rstrip('/')}/trace/{{trace_id}}?uiFind={{span_id}}"


def shutdown_telemetry(handle: TelemetryHandle) -> None:
    """Flush and stop the providers, warning on stderr about spans that were not exported."""
    report = handle.shutdown(SHUTDOWN_TIMEOUT_S)
    if not report.completed:
        warn(f"warning: telemetry shutdown did not finish within {SHUTDOWN_TIMEOUT_S:g} s")
    if report.lost:
        warn(
            f"warning: {report.lost} of {report.ended} spans were not exported to "
            f"{handle.destination} (failed {report.failed}, dropped {report.dropped}, "
            f"unexported {report.unexported})"
        )
        if report.exported == 0 and _reaches_jaeger(handle):
            warn("warning: no span was exported, so the trace's Jaeger link shows nothing")
