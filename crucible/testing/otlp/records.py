"""Spans, events and links as the test receivers hand them to tests: plain, hex ids, flat."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["ReceivedEvent", "ReceivedLink", "ReceivedSpan"]


class ReceivedEvent(NamedTuple):
    """A span event as received: its name and attributes."""

    name: str
    attributes: dict[str, Any]


class ReceivedLink(NamedTuple):
    """A span link as received: hex trace id, hex span id, attributes."""

    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    """One span from an OTLP export request, flattened with its resource and scope."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    status_code: str = "UNSET"
    status_message: str = ""
    events: tuple[ReceivedEvent, ...] = ()
    links: tuple[ReceivedLink, ...] = ()
    resource_attributes: dict[str, Any] = field(default_factory=dict)
    scope_name: str = ""
    scope_version: str = ""
    trace_state: str = ""

    @property
    def duration_ns(self) -> int:
        """End minus start, in nanoseconds."""
        return self.end_ns - self.start_ns

    @property
    def service_name(self) -> str | None:
        """The resource's ``service.name``, if any."""
        value = self.resource_attributes.get("service.name")
        return value if isinstance(value, str) else None
