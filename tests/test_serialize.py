"""to_jsonable: every value becomes JSON data of the same meaning, secrets redacted."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
from typing import NamedTuple

import pydantic

from crucible.frozen import FrozenMap, StageList
from crucible.redact import REDACTED
from crucible.serialize import to_jsonable


class Colour(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@dataclasses.dataclass
class Point:
    x: int
    api_key: str


class Pair(NamedTuple):
    a: int
    b: str


class Model(pydantic.BaseModel):
    name: str
    password: str


def test_enums_inside_lists_and_maps_become_their_values() -> None:
    # str and int enums are str and int subclasses: they must not pass through as they are.
    out = to_jsonable([Colour.RED, Level.HIGH, {"c": Colour.RED, "l": Level.HIGH}])
    assert out == ["red", 3, {"c": "red", "l": 3}]
    assert [type(v) for v in out[:2]] == [str, int]
    assert json.loads(json.dumps(out)) == out


def test_plain_values_floats_and_containers() -> None:
    value = {
        "s": "x", "i": 2**70, "b": True, "n": None, "f": 0.5,
        "nan": math.nan, "inf": [math.inf, -math.inf],
        "tuple": (1, "a"), "set": {3, 1, 2},
        "stages": StageList(["load", "bench"]), "frozen": FrozenMap({"k": (1, 2)}),
    }  # fmt: skip
    assert to_jsonable(value) == {
        "s": "x", "i": 2**70, "b": True, "n": None, "f": 0.5,
        "nan": "NaN", "inf": ["Infinity", "-Infinity"],
        "tuple": [1, "a"], "set": [1, 2, 3],
        "stages": ["load", "bench"], "frozen": {"k": [1, 2]},
    }  # fmt: skip


def test_secret_keys_are_redacted_at_every_depth_unless_asked_not_to() -> None:
    value = FrozenMap({"outer": [{"api_key": "sk-1", "n": 1}], "token": "t", "empty": None})
    assert to_jsonable(value) == {
        "outer": [{"api_key": REDACTED, "n": 1}], "token": REDACTED, "empty": None,
    }  # fmt: skip
    assert to_jsonable(value, redact_secrets=False)["token"] == "t"
    assert to_jsonable(Point(1, "k")) == {"x": 1, "api_key": REDACTED}
    assert to_jsonable(Model(name="m", password="p")) == {"name": "m", "password": REDACTED}


def test_other_types_keep_their_meaning() -> None:
    when = dt.datetime(2026, 12, 3, 11, 0, tzinfo=dt.UTC)
    assert to_jsonable(when) == "2026-12-03T11:00:00+00:00"
    assert to_jsonable(dt.timedelta(seconds=1.5)) == 1.5
    assert to_jsonable(b"\x00\x01") == {"base64": "AAE="}
    assert to_jsonable(Pair(1, "b")) == {"a": 1, "b": "b"}
    assert to_jsonable({1: "int key"}) == {"1": "int key"}

    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    assert to_jsonable([Opaque()]) == ["<opaque>"]
