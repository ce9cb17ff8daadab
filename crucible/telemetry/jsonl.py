"""OTLP/JSON lines: a span exporter writing one ExportTraceServiceRequest per line, and a reader.

The format is the OTLP/JSON protobuf mapping (lowerCamelCase names, hex trace/span ids, enums as
integers, 64-bit integers as strings): what the Collector's file exporter writes and what Jaeger
UI's JSON upload accepts.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format  # type: ignore[import-untyped,unused-ignore]
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from crucible.telemetry.anyvalue import attributes
from crucible.telemetry.choices import DEFAULT_TRACES_FILE

__all__ = ["DEFAULT_TRACES_FILE", "OtlpJsonLinesExporter", "read_otlp_jsonl", "spans_to_otlp_json"]


_log = logging.getLogger(__name__)

_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def _b64_to_hex(value: str) -> str:
    """Turn a proto3-JSON base64 id into the lowercase hex OTLP/JSON requires."""
    return base64.b64decode(value).hex()


def _hexify_ids(span_or_link: dict[str, Any]) -> None:
    for field in _ID_FIELDS:
        value = span_or_link.get(field)
        if isinstance(value, str) and value:
            span_or_link[field] = _b64_to_hex(value)


def spans_to_otlp_json(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """Encode finished spans as one OTLP/JSON ExportTraceServiceRequest object."""
    request = encode_spans(spans)
    doc: dict[str, Any] = json_format.MessageToDict(request, use_integers_for_enums=True)
    for resource_spans in doc.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                _hexify_ids(span)
                for link in span.get("links", []):
                    _hexify_ids(link)
    return doc


class OtlpJsonLinesExporter(SpanExporter):
    """Append each export batch to a file as one OTLP/JSON line; thread-safe, flushed per batch."""

    def __init__(self, path: str | os.PathLike[str] = DEFAULT_TRACES_FILE) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._shutdown = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write the batch as one line; FAILURE if shut down or the file cannot be written."""
        if self._shutdown:
            _log.warning("OTLP JSON lines exporter is shut down; %d spans not written", len(spans))
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            line = json.dumps(spans_to_otlp_json(spans), separators=(",", ":")) + "\n"
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as fh:
                    fh.write(line)
                    fh.flush()
        except Exception:
            _log.exception("writing %d spans to %s failed", len(spans), self.path)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Refuse further batches (every batch is already on disk)."""
        self._shutdown = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered: every export is written and flushed before it returns."""
        return True


# --- reading back -------------------------------------------------------------------------------


def _id_to_hex(value: object) -> str | None:
    """Accept hex (the OTLP/JSON form) or base64 (plain proto3 JSON) ids; empty means absent."""
    if not isinstance(value, str) or not value:
        return None
    try:
        bytes.fromhex(value)
    except ValueError:
        try:
            return base64.b64decode(value, validate=True).hex()
        except (binascii.Error, ValueError):
            return value
    return value.lower()


def _flatten(doc: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for resource_spans in doc.get("resourceSpans", []):
        resource = attributes(resource_spans.get("resource", {}).get("attributes"))
        for scope_spans in resource_spans.get("scopeSpans", []):
            scope = scope_spans.get("scope", {}).get("name", "")
            for span in scope_spans.get("spans", []):
                status = span.get("status", {})
                yield {
                    "trace_id": _id_to_hex(span.get("traceId")),
                    "span_id": _id_to_hex(span.get("spanId")),
                    "parent_span_id": _id_to_hex(span.get("parentSpanId")),
                    "name": span.get("name", ""),
                    "kind": int(span.get("kind", 0)),
                    "start_time_unix_nano": int(span.get("startTimeUnixNano", 0)),
                    "end_time_unix_nano": int(span.get("endTimeUnixNano", 0)),
                    "attributes": attributes(span.get("attributes")),
                    "status_code": int(status.get("code", 0)),
                    "status_message": status.get("message", ""),
                    "events": [
                        {
                            "name": event.get("name", ""),
                            "time_unix_nano": int(event.get("timeUnixNano", 0)),
                            "attributes": attributes(event.get("attributes")),
                        }
                        for event in span.get("events", [])
                    ],
                    "links": [
                        {
                            "trace_id": _id_to_hex(link.get("traceId")),
                            "span_id": _id_to_hex(link.get("spanId")),
                            "attributes": attributes(link.get("attributes")),
                        }
                        for link in span.get("links", [])
                    ],
                    "scope": scope,
                    "resource": resource,
                }


def read_otlp_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Parse an OTLP/JSON lines file into flat span dicts, in file order.

    Each dict has trace_id, span_id, parent_span_id (hex, None for a root), name, kind,
    start/end_time_unix_nano, attributes, status_code (0 unset, 1 ok, 2 error), status_message,
    events, links, scope and resource (the resource attributes). Blank lines are skipped; a
    malformed line raises ValueError naming the file and line number.
    """
    spans: list[dict[str, Any]] = []
    with Path(path).open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not a JSON line: {exc.msg}") from exc
            if not isinstance(doc, dict):
                raise ValueError(f"{path}:{lineno}: expected an OTLP/JSON object")
            spans.extend(_flatten(doc))
    return spans
