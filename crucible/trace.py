"""Plain, immutable records of finished spans that the engine keeps in ``ctx.trace``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from pyrsistent import PVector, pvector

from crucible.frozen import slot_setters

NO_EVENTS: PVector[Any] = pvector()
StageResult = Literal["success", "failure", "error", "timeout", "cancellation", "skip"]


@dataclass(frozen=True, slots=True)
class SpanEvent:
    """An event a stage recorded with ``ctx.record_event``; becomes an event on its span."""

    name: str
    timestamp_ns: int
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "timestamp_ns": self.timestamp_ns,
            "attributes": dict(self.attributes),
        }


class SpanRecord(NamedTuple):
    """One finished stage attempt: ids, timings, outcome and events (an immutable record)."""

    name: str
    stage: str
    span_id: str
    parent_span_id: str | None
    start_ns: int
    end_ns: int
    result: StageResult
    attempt: int = 1
    error_type: str | None = None
    error_message: str | None = None
    events: tuple[SpanEvent, ...] = ()
    stage_index: int | None = None

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "stage": self.stage,
            "stage_index": self.stage_index,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "result": self.result,
            "attempt": self.attempt,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "events": [e.to_dict() for e in self.events],
        }


@dataclass(frozen=True, slots=True)
class Trace:
    """The run's trace: trace id, run span id, finished stage spans, events not yet on a span."""

    trace_id: str | None = None
    span_id: str | None = None
    spans: Sequence[SpanRecord] = field(default_factory=pvector)
    pending_events: Sequence[SpanEvent] = field(default_factory=pvector)

    def __post_init__(self) -> None:
        if not isinstance(self.spans, PVector):
            _S_SPANS(self, pvector(self.spans))
        if not isinstance(self.pending_events, PVector):
            _S_PENDING(self, pvector(self.pending_events))

    def _with(self, spans: Sequence[SpanRecord], pending: Sequence[SpanEvent]) -> Trace:
        new = _new(Trace)
        _S_TRACE_ID(new, self.trace_id)
        _S_SPAN_ID(new, self.span_id)
        _S_SPANS(new, spans)
        _S_PENDING(new, pending)
        return new

    def with_span(self, record: SpanRecord) -> Trace:
        """Return a Trace with ``record`` appended (persistent append, no copy of history)."""
        spans: PVector[SpanRecord] = self.spans  # type: ignore[assignment]
        return self._with(spans.append(record), self.pending_events)

    def with_event(self, event: SpanEvent) -> Trace:
        pending: PVector[SpanEvent] = self.pending_events  # type: ignore[assignment]
        return self._with(self.spans, pending.append(event))

    def take_events(self) -> tuple[Trace, tuple[SpanEvent, ...]]:
        """Return (trace without pending events, the pending events)."""
        if not self.pending_events:
            return self, ()
        return self._with(self.spans, NO_EVENTS), tuple(self.pending_events)

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "spans": [s.to_dict() for s in self.spans],
            "pending_events": [e.to_dict() for e in self.pending_events],
        }


TRACE_FIELDS = ("trace_id", "span_id", "spans", "pending_events")
_new = object.__new__
_S_TRACE_ID, _S_SPAN_ID, _S_SPANS, _S_PENDING = slot_setters(Trace, TRACE_FIELDS)
