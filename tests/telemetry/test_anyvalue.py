"""The one OTLP/JSON AnyValue decoder, used by the JSON-lines reader and the test receivers."""

from __future__ import annotations

import base64

from crucible.telemetry.anyvalue import any_value, attributes

EVERY_KIND = [
    {"key": "s", "value": {"stringValue": ""}},
    {"key": "b", "value": {"boolValue": False}},
    {"key": "i", "value": {"intValue": "-9007199254740993"}},  # beyond a double's precision
    {"key": "d", "value": {"doubleValue": 0.25}},
    {"key": "nan", "value": {"doubleValue": "NaN"}},
    {"key": "raw", "value": {"bytesValue": base64.b64encode(b"\x00\xff").decode()}},
    {"key": "none", "value": {}},
    {"value": {"intValue": "1"}},  # proto3 JSON leaves out an empty key
    {
        "key": "xs",
        "value": {"arrayValue": {"values": [{"intValue": "1"}, {"arrayValue": {}}]}},
    },
    {"key": "kv", "value": {"kvlistValue": {"values": [{"key": "k", "value": {}}]}}},
    {"key": "empty_kv", "value": {"kvlistValue": {}}},
]


def test_every_value_kind_decodes_to_plain_python() -> None:
    decoded = attributes(EVERY_KIND)
    nan = decoded.pop("nan")
    assert nan != nan  # float NaN
    assert decoded == {
        "s": "",
        "b": False,
        "i": -9007199254740993,
        "d": 0.25,
        "raw": b"\x00\xff",
        "none": None,
        "": 1,
        "xs": [1, []],
        "kv": {"k": None},
        "empty_kv": {},
    }
    assert type(decoded["b"]) is bool and type(decoded["i"]) is int


def test_arrays_take_the_requested_type_at_every_depth() -> None:
    nested = {"arrayValue": {"values": [{"arrayValue": {"values": [{"stringValue": "a"}]}}]}}
    assert any_value(nested) == [["a"]]
    assert any_value(nested, tuple) == (("a",),)
    in_kvlist = {"kvlistValue": {"values": [{"key": "k", "value": nested}]}}
    assert any_value(in_kvlist, tuple) == {"k": (("a",),)}


def test_no_attributes_is_an_empty_dict() -> None:
    assert attributes(None) == {} == attributes([])
