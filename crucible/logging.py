"""structlog setup: processors adding trace ids and run context, and one redacting secrets."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any, TextIO

import structlog
from opentelemetry import trace

from crucible import scrub
from crucible.redact import REDACTED, is_secret_key

# (experiment_id, run_id, stage or None) of the run executing in this context; set by the engine.
run_context: ContextVar[tuple[str, str, str | None] | None] = ContextVar(
    "crucible_run_context", default=None
)


def add_run_context(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Add ``experiment_id``, ``run_id`` and ``stage`` of the run (and stage) running now."""
    current = run_context.get()
    if current is not None:
        event_dict.setdefault("experiment_id", current[0])
        event_dict.setdefault("run_id", current[1])
        if current[2] is not None:
            event_dict.setdefault("stage", current[2])
    return event_dict


def add_trace_ids(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Add hex ``trace_id``/``span_id`` of the current OpenTelemetry span, if there is one."""
    sc = trace.get_current_span().get_span_context()
    if sc.is_valid:
        event_dict.setdefault("trace_id", f"{sc.trace_id:032x}")
        event_dict.setdefault("span_id", f"{sc.span_id:016x}")
    return event_dict


def _redacted(value: Any, depth: int = 0) -> Any:
    if depth > 16:
        return value
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and is_secret_key(k) else _redacted(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_redacted(v, depth + 1) for v in value)
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace values under secret-looking keys (any case or style), nested ones too, and the
    secret values of the running run and the environment wherever they appear in the line."""
    scrubber = scrub.active()
    for key in list(event_dict):
        value = event_dict[key]
        if key != "event" and is_secret_key(key):
            event_dict[key] = REDACTED
            continue
        if isinstance(value, dict | list | tuple):
            value = event_dict[key] = _redacted(value)
        if scrubber:
            if isinstance(value, BaseException):
                value = event_dict[key] = repr(value)
            event_dict[key] = scrubber.value(value)
    return event_dict


def processors(*, json: bool) -> list[Any]:
    """The processor chain: context vars, run/stage, secrets redacted, level, time, trace ids.

    To keep your own chain, add ``add_run_context``, ``redact_secrets`` and ``add_trace_ids``.
    """
    chain: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_run_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        redact_secrets,  # after the traceback is text, so secrets in it are scrubbed too
    ]
    chain.append(
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    return chain


def configure(
    *, json: bool = False, level: int | str = "info", stream: TextIO | None = None
) -> None:
    """Configure structlog for an application or the CLI (library code never calls this).

    Lines logged while a stage runs carry experiment_id, run_id, stage, trace_id and span_id.
    """
    lvl = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    structlog.configure(
        processors=processors(json=json),
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(stream if stream is not None else sys.stderr),
        cache_logger_on_first_use=False,
    )
