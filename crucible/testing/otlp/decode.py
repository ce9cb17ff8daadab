"""Decoding OTLP: JSON bodies into protobuf messages, trace requests into ReceivedSpans."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from google.protobuf import json_format  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.message import Message  # type: ignore[import-untyped, unused-ignore]
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2

from crucible.telemetry import anyvalue
from crucible.testing.otlp.records import ReceivedEvent, ReceivedLink, ReceivedSpan

__all__ = ["decode_otlp_json", "spans_from_request"]

_M = TypeVar("_M", bound=Message)

_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})
_HEX = frozenset("0123456789abcdefABCDEF")


def _attributes(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    """Protobuf KeyValues through their JSON form into the shared decoder (arrays as tuples)."""
    return anyvalue.attributes([json_format.MessageToDict(kv) for kv in kvs], tuple)


def _enum_name(name_of: Callable[[Any], str], value: int, prefix: str) -> str:
    try:
        name = name_of(value)
    except ValueError:
        return str(value)
    return name.removeprefix(prefix)


def spans_from_request(request: trace_service_pb2.ExportTraceServiceRequest) -> list[ReceivedSpan]:
    """Flatten an ExportTraceServiceRequest into ReceivedSpans, in the order they were sent."""
    out: list[ReceivedSpan] = []
    for rs in request.resource_spans:
        resource = _attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for sp in ss.spans:
                out.append(
                    ReceivedSpan(
                        trace_id=sp.trace_id.hex(),
                        span_id=sp.span_id.hex(),
                        parent_span_id=sp.parent_span_id.hex() or None,
                        name=sp.name,
                        kind=_enum_name(trace_pb2.Span.SpanKind.Name, sp.kind, "SPAN_KIND_"),
                        start_ns=sp.start_time_unix_nano,
                        end_ns=sp.end_time_unix_nano,
                        attributes=_attributes(sp.attributes),
                        status_code=_enum_name(
                            trace_pb2.Status.StatusCode.Name, sp.status.code, "STATUS_CODE_"
                        ),
                        status_message=sp.status.message,
                        events=tuple(
                            ReceivedEvent(e.name, _attributes(e.attributes)) for e in sp.events
                        ),
                        links=tuple(
                            ReceivedLink(
                                lk.trace_id.hex(), lk.span_id.hex(), _attributes(lk.attributes)
                            )
                            for lk in sp.links
                        ),
                        resource_attributes=dict(resource),
                        scope_name=ss.scope.name,
                        scope_version=ss.scope.version,
                        trace_state=sp.trace_state,
                    )
                )
    return out


def _hex_ids_to_base64(node: Any) -> Any:
    """Rewrite OTLP JSON's hex trace/span ids as the base64 that protobuf's JSON parser expects."""
    if isinstance(node, list):
        return [_hex_ids_to_base64(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if (
            key in _ID_KEYS
            and isinstance(value, str)
            and value
            and len(value) % 2 == 0
            and set(value) <= _HEX
        ):
            out[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
        else:
            out[key] = _hex_ids_to_base64(value)
    return out


def decode_otlp_json(body: bytes | str, message: _M) -> _M:
    """Parse an OTLP/JSON body (hex ids, camelCase or snake_case keys) into ``message``."""
    data = json.loads(body)
    json_format.ParseDict(_hex_ids_to_base64(data), message, ignore_unknown_fields=True)
    return message
