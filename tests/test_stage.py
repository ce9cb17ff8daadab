"""Stage declaration, option schemas (describe) and schema validation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from crucible import Context
from crucible.stage import OptionsError, as_stage_spec, stage, type_spec
from tests.support.schema import valid_type_spec, validate_schema


class Opts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alpha: float = 0.05
    tests: list[str] = Field(default_factory=lambda: ["ttest"])
    name: str
    mode: Literal["fast", "slow"] = "fast"
    limit: int | None = None
    weights: dict[str, float] = Field(default_factory=dict)
    pair: tuple[int, str] = (1, "a")
    hook: Callable[[Any], Any] | None = None


@stage("typed", description="A stage with typed options", version="1.2.0", register=False)
async def typed(ctx: Context, opts: Opts) -> Context:
    return ctx


def test_describe_lists_required_optional_types_and_defaults() -> None:
    schema = as_stage_spec(typed).describe()
    assert schema["name"] == "typed" and schema["description"] == "A stage with typed options"
    assert schema["required"] == ["name"]
    assert set(schema["optional"]) == {"alpha", "tests", "mode", "limit", "weights", "pair", "hook"}
    assert schema["types"]["alpha"] == "float"
    assert schema["types"]["tests"] == ("list", "string")
    assert schema["types"]["mode"] == ("enum", ["fast", "slow"])
    assert schema["types"]["limit"] == "integer"
    assert schema["types"]["weights"] == ("map", "string", "float")
    assert schema["types"]["pair"] == ("tuple", ["integer", "string"])
    assert schema["types"]["hook"] == ("function", 1)
    assert schema["defaults"]["alpha"] == 0.05 and schema["defaults"]["tests"] == ["ttest"]
    assert schema["version"] == "1.2.0" and schema["__schema_version__"] == "1.0"
    assert schema["json_schema"]["properties"]["alpha"]["type"] == "number"
    assert validate_schema(schema) == []


def test_validate_options_reports_every_problem_with_paths() -> None:
    spec = as_stage_spec(typed)
    with pytest.raises(OptionsError) as info:
        spec.validate_options({"alpha": "x", "tests": ["a", 3], "nme": "typo"})
    paths = {p for p, _ in info.value.problems}
    assert paths == {"alpha", "tests[1]", "name", "nme"}
    ok = spec.validate_options({"name": "n", "alpha": 1})
    assert isinstance(ok, Opts) and ok.alpha == 1.0  # int widened to float (a fix)


def test_mapping_and_no_option_stages() -> None:
    @stage("free", description="any options", register=False)
    async def free(ctx: Context, opts: Mapping[str, Any]) -> Context:
        return ctx

    @stage("bare", description="no options", register=False)
    def bare(ctx: Context) -> Context:
        return ctx

    f, b = as_stage_spec(free), as_stage_spec(bare)
    assert f.options_model is None and f.takes_options and f.is_async
    assert f.validate_options({"anything": 1}) == {"anything": 1}
    assert not b.takes_options and not b.is_async
    assert b.validate_options(None) == {} and b.validate_options({}) == {}
    with pytest.raises(OptionsError) as info:  # it would never see them: a typo, not ignored
        b.validate_options({"typo": 1})
    assert info.value.problems == [("typo", "unknown option (stage 'bare' takes no options)")]
    for s in (f, b):
        schema = s.describe()
        assert schema["required"] == [] and schema["optional"] == [] and schema["types"] == {}
        assert validate_schema(schema) == []


def test_class_stage() -> None:
    class Scale:
        name = "scale_cls"
        description = "Scales"

        class Options(BaseModel):
            factor: float = 2

        async def run(self, ctx: Context, opts: Options) -> Context:
            return ctx

    spec = as_stage_spec(Scale)
    assert spec.name == "scale_cls" and spec.options_model is Scale.Options and spec.is_async
    assert spec.describe()["types"] == {"factor": "float"}


@pytest.mark.parametrize(
    ("name", "description", "message"),
    [("Bad-Name", "d", "snake_case"), ("ok", "  ", "description")],
)
def test_decorator_rejects_bad_names(name: str, description: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stage(name, description=description)


def test_non_stage_objects_are_rejected() -> None:
    with pytest.raises(TypeError, match="is not a stage"):
        as_stage_spec(42)


def test_type_specs_of_plain_annotations() -> None:
    assert type_spec(bool) == "boolean" and type_spec(str) == "string"
    assert type_spec(Any) == "any" and type_spec(list) == "list" and type_spec(dict) == "map"
    assert type_spec(int | str) == ("union", ["integer", "string"])


# The schema checker the conformance tests use: every rule, and every type spec shape.
GOOD = {"name": "s", "description": "d", "required": ["a"], "optional": ["b"],
        "types": {"a": "string", "b": ("list", "integer")}, "defaults": {"b": [1]}}  # fmt: skip


def test_valid_schema() -> None:
    assert validate_schema(GOOD) == []
    minimal = {"name": "s", "description": "d", "required": [], "optional": [], "types": {}}
    assert validate_schema(minimal) == []


@pytest.mark.parametrize(
    ("change", "mentions"),
    [
        ({"name": None}, "name"),
        ({"name": 5}, "name"),
        ({"description": ""}, "description"),
        ({"required": "a"}, "required"),
        ({"optional": {"b"}}, "optional"),
        ({"required": [1]}, "required"),
        ({"types": []}, "types"),
        ({"optional": ["a", "b"]}, "overlap"),
        ({"types": {"b": "string"}}, "a"),
        ({"defaults": {"zzz": 1}}, "zzz"),
        ({"__schema_version__": 1}, "__schema_version__"),
        ({"types": {"a": "str"}}, "types"),
    ],
)
def test_schema_errors_mention_the_field(change: dict[str, Any], mentions: str) -> None:
    errors = validate_schema({**GOOD, **change})
    assert errors and any(mentions in e for e in errors), errors


def test_non_map_schema() -> None:
    assert validate_schema([1]) == ["schema must be a map"]


@pytest.mark.parametrize(
    ("spec", "ok"),
    [
        *[(p, True) for p in ("string", "integer", "float", "boolean", "atom", "map", "list",
                               "module", "any")],
        (("struct", "Range"), True), (("struct", 1), False),
        (("enum", [1, 2]), True), (("enum", 1), False),
        (("list", "string"), True), (("list", "nope"), False),
        (("map", "string", ("list", "float")), True), (("map", "string"), False),
        (("function", 0), True), (("function", -1), False), (("function", True), False),
        (("union", ["string", "integer"]), True), (("union", ["string", "x"]), False),
        (("tuple", []), True), (("tuple", ["x"]), False),
        ("unknown", False), (("weird", 1), False), (3, False), ((), False),
    ],
)  # fmt: skip
def test_valid_type_spec(spec: Any, ok: bool) -> None:
    assert valid_type_spec(spec) is ok
