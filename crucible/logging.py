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
    scrubber = scrub.active().encoded()  # a value may hold JSON, HTML or CSV text
    for key in list(event_dict):
        value = event_dict[key]
        if key != "event" and is_secret_key(key):
            value = REDACTED
        elif isinstance(value, dict | list | tuple):
            value = _redacted(value)
        if scrubber:
            value = _scrubbed(scrubber, value, 0)
            if isinstance(key, str) and scrubber.finds(key):  # a keyword argument's name
                del event_dict[key]
                key = scrubber.text(key)
        event_dict[key] = value
    return event_dict


def _scrubbed(scrubber: scrub.Scrubber, value: Any, depth: int) -> Any:
    """``value`` with the secrets out of its strings and keys; anything but plain data (a model,
    a path, a set, an exception) as its scrubbed ``repr``, which is how the line shows it."""
    if isinstance(value, str):
        return scrubber.text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth < 32 and type(value) is dict:
        return {(scrubber.text(k) if isinstance(k, str) else k): _scrubbed(scrubber, v, depth + 1)
                for k, v in value.items()}  # fmt: skip
    if depth < 32 and type(value) in (list, tuple):
        return type(value)(_scrubbed(scrubber, v, depth + 1) for v in value)
    return scrubber.text(repr(value))


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
    chain = processors(json=json)
    structlog.configure(
        processors=chain,
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(stream if stream is not None else sys.stderr),
        cache_logger_on_first_use=False,
    )
    _route_stdlib(chain, lvl, stream)


class _ScrubRecords(logging.Filter):
    """The running run's secrets out of a stdlib record's message, traceback and stack, before
    any handler formats it (most libraries log through ``logging``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        scrubber = scrub.active().encoded()
        if scrubber:
            record.msg, record.args = scrubber.text(record.getMessage()), None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = scrubber.text(record.exc_text)
            if record.stack_info:
                record.stack_info = scrubber.text(record.stack_info)
        return True


def _route_stdlib(chain: list[Any], level: int, stream: TextIO | None) -> None:
    """Without a handler of the application's own, stdlib log lines go through the same chain
    (so the same format and the same redaction) to the same stream; every root handler scrubs."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "crucible", False)]:
        root.removeHandler(old)
    if not root.handlers:
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
        handler.setFormatter(structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=chain[:-1],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, chain[-1]],
        ))  # fmt: skip
        handler.crucible = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.setLevel(level)
    for each in root.handlers:
        if not any(isinstance(f, _ScrubRecords) for f in each.filters):
            each.addFilter(_ScrubRecords())
