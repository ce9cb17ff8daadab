"""Scrub what stage code set on an engine span through the OpenTelemetry API, before it ends.

The engine scrubs its own attributes, events and status as it sets them. Stage code can also
reach the stage span (``trace.get_current_span()``) and set attributes, events, links, a status
or a new name on it directly; this pass replaces the run's secret values in those too, on the
SDK's span (another API implementation's spans carry what stage code gave them). It runs as
the stage returns, before the engine adds its own events and end attributes, and looks only at
what differs from what the engine started the span with: a run with secrets whose stages leave
the span alone pays a few identity checks a stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.trace import Event
from opentelemetry.sdk.trace import _Span as SdkSpan
from opentelemetry.trace import Link, Span, Status

from crucible.redact import REDACTED
from crucible.scrub import MIN_SECRET_LEN, Scrubber

__all__ = ["scrub_span"]


def scrub_span(span: Span, scrubber: Scrubber, name: str, started: Mapping[str, Any]) -> None:
    """Replace ``scrubber``'s secrets in what stage code changed on an unended SDK span (its
    name, attributes beyond ``started``, events, links and status description), in place."""
    if scrubber.pattern is None or not isinstance(span, SdkSpan):
        return
    held: Any = span
    with held._lock:
        if held._end_time is not None:
            return
        hide = scrubber.encoded()  # an attribute may hold JSON or HTML text
        if held._name is not name:
            held._name = hide.text(held._name)
        stored = held._attributes._dict
        changed = len(stored) != len(started) or any(
            stored.get(k) is not v for k, v in started.items()
        )
        if changed:
            clean = hide.value(dict(stored)) if _holds(hide, stored) else None
            limit = held._attributes.max_value_len  # the SDK cut long values as they were set
            if limit is not None:
                whole = clean if clean is not None else dict(stored)
                cut = {k: _cut(hide, v, limit) for k, v in whole.items()}
                clean = cut if cut != whole else clean
            if clean is not None:
                stored.clear()
                stored.update(clean)
        events = held._events  # the engine adds its own after this pass: these are stage code's
        if len(events):
            kept = [_event(hide, e) for e in events]
            if any(new is not old for new, old in zip(kept, events, strict=True)):
                events._dq.clear()
                events._dq.extend(kept)
        links = held._links  # the engine starts stage spans with none: stage code added these
        if len(links) and any(_holds(hide, dict(k.attributes or {})) for k in links):
            linked = list(links)
            links._dq.clear()
            for k in linked:
                links._dq.append(Link(k.context, hide.value(dict(k.attributes or {}))))
        status = held._status
        if status.description and hide.finds(status.description):
            held._status = Status(status.status_code, hide.text(status.description))


def _event(hide: Scrubber, event: Event) -> Event:
    """``event``, or a copy with the secrets (and secrets the SDK cut short) out of it."""
    attributes = dict(event.attributes or {})
    limit = getattr(event.attributes, "max_value_len", None)
    clean = hide.value(attributes)
    if limit is not None:
        clean = {k: _cut(hide, v, limit) for k, v in clean.items()}
    name = hide.text(event.name)
    if clean == attributes and name == event.name:
        return event
    return Event(name, clean, event.timestamp)


def _cut(hide: Scrubber, value: Any, limit: int) -> Any:
    """A value the SDK cut at ``limit`` characters with the start of a secret at its end
    (the part the limit left, when it is at least 4 characters) replaced."""
    if not isinstance(value, str) or len(value) < limit:
        return value
    for secret in hide.values:
        for kept in range(min(len(secret) - 1, len(value)), MIN_SECRET_LEN - 1, -1):
            if value.endswith(secret[:kept]):
                return value[: len(value) - kept] + REDACTED
    return value


def _holds(hide: Scrubber, value: Any) -> bool:
    """Whether a string in ``value`` (a string, or mappings and sequences of them, keys
    included) holds one of the secrets."""
    if isinstance(value, str):
        return hide.finds(value)
    if isinstance(value, bytes | bytearray):  # OpenTelemetry keeps bytes values as they are
        return hide.binary(value) != value
    if isinstance(value, Mapping):
        return any(_holds(hide, k) or _holds(hide, v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_holds(hide, v) for v in value)
    return False
