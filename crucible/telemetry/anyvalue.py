"""OTLP/JSON AnyValue and attribute lists as plain Python values.

One decoder for both readers of OTLP data: the JSON-lines reader and the test receivers (which
turn protobuf values into this JSON form first).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["any_value", "attributes"]

_Array = Callable[[Iterable[Any]], Any]  # what an arrayValue becomes: list (default) or tuple


def any_value(value: Mapping[str, Any], array: _Array = list) -> Any:
    """Decode one OTLP/JSON AnyValue (int64s as strings, bytes as base64); empty means None."""
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        return array(any_value(v, array) for v in value["arrayValue"].get("values", []))
    if "kvlistValue" in value:
        return attributes(value["kvlistValue"].get("values"), array)
    if "bytesValue" in value:
        return base64.b64decode(value["bytesValue"])
    return None


def attributes(items: Iterable[Mapping[str, Any]] | None, array: _Array = list) -> dict[str, Any]:
    """Decode a list of OTLP/JSON KeyValues into a dict (proto3 JSON omits an empty key)."""
    return {item.get("key", ""): any_value(item.get("value", {}), array) for item in items or ()}
