"""The checkpoint codec: JSON-native values exactly, tagged values restored, the rest refused."""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import pathlib
import uuid
import zoneinfo
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr
from pyrsistent import pvector

from crucible import Context, Experiment
from crucible.checkpoint import TAG, decode, decode_context, decode_fields, encode, encode_context
from crucible.errors import Unrestorable
from crucible.frozen import FrozenMap, StageList


class Color(enum.Enum):
    RED = "red"


class Model(BaseModel):
    x: int = 1


class Thing:
    """Stands in for any object the codec does not know (a numpy array, a client, ...)."""


def through_json(value: Any) -> Any:
    """What a database hands back: the encoded form after a JSON round trip."""
    return json.loads(json.dumps(encode(value), allow_nan=False))


NATIVE = [
    None, True, False, 0, -7, 2**70, 1.5, -0.25, "", "text ✓",
    [], [1, [2, [3]]], {}, {"a": {"b": [1, "x", None]}}, {"completed_stages": ["a"]},
]  # fmt: skip


@pytest.mark.parametrize("value", NATIVE, ids=repr)
def test_json_native_values_are_stored_as_they_are(value: Any) -> None:
    assert encode(value) == value
    restored = decode(through_json(value))
    assert restored == value and type(restored) is type(value)


TAGGED = [
    (1, 2, (3,)), {1, 2}, frozenset({"a"}), {1: "one", (2, 3): "pair"}, {TAG: "not a tag"},
    math.inf, -math.inf, 1 + 2j,
    dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC), dt.datetime(2024, 5, 6, 7, 8),
    dt.date(2024, 5, 6), dt.time(7, 8, 9, 10), dt.timedelta(days=2, seconds=3, microseconds=4),
    Decimal("1.10"), uuid.UUID(int=42), b"\x00\xffbytes", bytearray(b"ab"),
    pathlib.Path("/tmp/model.bin"), pathlib.PurePosixPath("data/x.csv"),
    FrozenMap({"a": 1, "b": (2,)}), StageList(["load", "score"]), pvector([1, (2,)]),
    [(1, 2), {"nested": {3, 4}}],
]  # fmt: skip


@pytest.mark.parametrize("value", TAGGED, ids=repr)
def test_common_other_values_are_tagged_and_restore_exactly(value: Any) -> None:
    stored = through_json(value)
    assert stored != value or isinstance(value, list)
    restored = decode(stored)
    assert restored == value and type(restored) is type(value)
    if isinstance(value, list):
        assert [type(v) for v in restored] == [type(v) for v in value]


def test_nan_zones_and_numeric_subclasses() -> None:
    assert math.isnan(decode(through_json(math.nan)))
    paris = dt.datetime(2024, 1, 2, 3, 4, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    restored = decode(through_json(paris))
    assert restored == paris and restored.tzinfo == zoneinfo.ZoneInfo("Europe/Paris")

    class Float(float):
        pass

    value = decode(through_json({"f": Float(0.5)}))
    assert value == {"f": 0.5} and type(value["f"]) is float


def test_unknown_values_and_secrets_are_refused_by_key_path() -> None:
    stored = through_json(
        {
            "model": Thing(),
            "nested": {"list": [1, Color.RED]},
            "cfg": Model(),
            "api_key": "sk-live-123",
            "password": SecretStr("hunter2"),
            "token_count": 3,
        }
    )
    assert "sk-live-123" not in json.dumps(stored) and "hunter2" not in json.dumps(stored)
    with pytest.raises(Unrestorable) as caught:
        decode(stored, "assigns")
    assert caught.value.problems == (
        ("assigns.model", "<tests.test_checkpoint.Thing>"),
        ("assigns.nested.list[1]", "<tests.test_checkpoint.Color>"),
        ("assigns.cfg", "<tests.test_checkpoint.Model>"),
        ("assigns.api_key", "<str> (redacted as a secret)"),
        ("assigns.password", "<pydantic.types.SecretStr> (redacted as a secret)"),
    )
    assert "assigns.model: <tests.test_checkpoint.Thing> cannot be restored" in str(caught.value)


def test_supplied_values_replace_what_cannot_be_restored() -> None:
    stored = {"model": encode(Thing()), "n": 3, "when": encode(dt.date(2024, 1, 1))}
    with pytest.raises(Unrestorable, match=r"^assigns\.model: <tests\.test_checkpoint\.Thing>"):
        decode_fields(stored)
    model = Thing()
    restored = decode_fields(stored, supplied={"model": model})
    assert restored == {"n": 3, "when": dt.date(2024, 1, 1), "model": model}


def test_a_context_state_round_trips_through_json() -> None:
    ctx = (
        Context("e", "r", Experiment(id="e"))
        .put_metric("acc", 0.9)
        .put_metric("per_class", {"a": (1, 2)})
        .add_outputs([{"row": 1}, ("tuple", 2)])
        .put_artifact("report", pathlib.Path("out/report.md"))
        .assign(seen={1, 2}, when=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
        .mark_stage_complete("load")
        .mark_stage_complete("score")
    )
    data = json.loads(json.dumps(encode_context(ctx), allow_nan=False))
    state = decode_context(data)
    assert state.metrics == {"acc": 0.9, "per_class": {"a": (1, 2)}}
    assert state.outputs == [{"row": 1}, ("tuple", 2)]
    assert state.artifacts == {"report": pathlib.Path("out/report.md")}
    assert state.assigns["seen"] == {1, 2}
    assert isinstance(state.assigns["completed_stages"], StageList)
    restored = Context(
        "e",
        "r2",
        Experiment(id="e"),
        metrics=state.metrics,
        outputs=state.outputs,
        artifacts=state.artifacts,
        assigns=state.assigns,
    )
    assert restored.completed_stages() == ["load", "score"]
    assert restored.stage_completed("score")


def test_a_context_state_names_every_key_it_cannot_restore() -> None:
    ctx = (
        Context("e", "r", Experiment(id="e"))
        .put_metric("curve", Thing())
        .add_output(Thing())
        .assign(model=Thing(), client_secret="s3cr3t", ok=1)
    )
    data = json.loads(json.dumps(encode_context(ctx)))
    with pytest.raises(Unrestorable) as caught:
        decode_context(data, supplied={"model": "given"}, hint="pass them as assigns={...}")
    paths = [p for p, _ in caught.value.problems]
    assert paths == ["metrics.curve", "outputs[0]", "assigns.client_secret"]
    assert str(caught.value).endswith("(pass them as assigns={...})")
    state = decode_context(
        {**data, "metrics": {}, "outputs": []}, supplied={"model": "m", "client_secret": "s"}
    )
    assert state.assigns == {"ok": 1, "model": "m", "client_secret": "s"}


def test_deep_nesting_is_refused_not_crashed() -> None:
    deep: list[Any] = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(Unrestorable, match="nested too deep"):
        decode(through_json(deep))
