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
            clean = _scrubbed(hide, stored, held._attributes.max_value_len)
            if clean != stored:
                stored.clear()
                stored.update(clean)
        events = held._events  # the engine adds its own after this pass: these are stage code's
        if len(events):
            kept = [_event(hide, e) for e in events]
            if any(new is not old for new, old in zip(kept, events, strict=True)):
                events._dq.clear()
                events._dq.extend(kept)
        links = held._links  # the engine starts stage spans with none: stage code added these
        if len(links):
            kept_links = [_link(hide, k) for k in links]
            if any(new is not old for new, old in zip(kept_links, links, strict=True)):
                links._dq.clear()
                links._dq.extend(kept_links)
        status = held._status
        if status.description and hide.finds(status.description):
            held._status = Status(status.status_code, hide.text(status.description))


def _scrubbed(hide: Scrubber, attributes: Any, limit: int | None) -> dict[str, Any]:
    """``attributes`` (a mapping) with the secrets out, also those the SDK cut at ``limit``."""
    clean: dict[str, Any] = hide.value(dict(attributes or {}))
    return clean if limit is None else {k: _cut(hide, v, limit) for k, v in clean.items()}


def _event(hide: Scrubber, event: Event) -> Event:
    """``event``, or a copy with the secrets out of its name and attributes."""
    attributes = event.attributes
    clean = _scrubbed(hide, attributes, getattr(attributes, "max_value_len", None))
    name = hide.text(event.name)
    if clean == dict(attributes or {}) and name == event.name:
        return event
    return Event(name, clean, event.timestamp)


def _link(hide: Scrubber, link: Link) -> Link:
    """``link``, or a copy with the secrets out of its attributes."""
    attributes = link.attributes
    clean = _scrubbed(hide, attributes, getattr(attributes, "max_value_len", None))
    return link if clean == dict(attributes or {}) else Link(link.context, clean)


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
