"""Every built-in stage, found through its ``crucible.stages`` entry point, honours the contract.

Each stage can run and describe itself; its schema has the right shape, validates, has no
required/optional overlap, types every required key with a valid type spec, keeps defaults
within optional keys and uses snake_case names.
"""

from __future__ import annotations

import inspect
import re
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pytest

from crucible.registry import ENTRY_POINT_GROUP, default_registry
from crucible.stage import OptionsError, StageSpec, as_stage_spec
from tests.support.schema import valid_type_spec, validate_schema

BUILTINS = ("bench", "data_checks", "guardrails", "report", "validate")
ALL_STAGES = (*BUILTINS, "load_examples")  # the quickstart's loader lives in stages.dataset
SNAKE = r"^[a-z][a-z0-9_]*$"


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load(name: str) -> Any:
    """The object behind the stage's entry point."""
    return _entry_points()[name].load()


def spec_of(name: str) -> StageSpec:
    return as_stage_spec(load(name))


def test_all_five_builtins_are_declared_as_entry_points() -> None:
    eps = _entry_points()
    assert set(BUILTINS) <= set(eps)
    for name in BUILTINS:
        assert eps[name].value == f"stages.{name}:{name}"


@pytest.mark.parametrize("name", ALL_STAGES)
def test_exports_run_and_describe(name: str) -> None:  # item 30
    obj = load(name)
    spec = as_stage_spec(obj)
    assert getattr(obj, "__crucible_stage__", None) is spec, "entry point must be the @stage fn"
    assert spec.name == name
    assert callable(spec.call) and inspect.iscoroutinefunction(spec.call)
    assert spec.takes_options and spec.options_model is not None
    assert callable(spec.describe)


@pytest.mark.parametrize("name", ALL_STAGES)
def test_describe_shape(name: str) -> None:  # item 31
    schema = spec_of(name).describe()
    assert isinstance(schema, dict)
    assert isinstance(schema["name"], str) and schema["name"] == name
    assert isinstance(schema["description"], str) and schema["description"].strip()
    assert isinstance(schema["required"], list)
    assert isinstance(schema["optional"], list)
    assert isinstance(schema["types"], dict)


@pytest.mark.parametrize("name", ALL_STAGES)
def test_schema_validates(name: str) -> None:  # item 32
    assert validate_schema(spec_of(name).describe()) == []


@pytest.mark.parametrize("name", ALL_STAGES)
def test_schema_consistency(name: str) -> None:  # item 33
    schema = spec_of(name).describe()
    required, optional, types = schema["required"], schema["optional"], schema["types"]
    assert not set(required) & set(optional)
    assert all(key in types for key in required)
    for key, spec in types.items():
        assert valid_type_spec(spec), f"{key}: {spec!r}"
    assert set(schema.get("defaults", {})) <= set(optional)


@pytest.mark.parametrize("name", ALL_STAGES)
def test_keys_are_strings_and_name_is_snake_case(name: str) -> None:  # item 34
    schema = spec_of(name).describe()
    assert all(isinstance(k, str) for k in schema["required"] + schema["optional"])
    assert all(isinstance(k, str) for k in schema["types"])
    assert re.match(SNAKE, schema["name"])


@pytest.mark.parametrize("name", ALL_STAGES)
def test_resolves_through_the_default_registry(name: str) -> None:
    obj = load(name)
    spec = default_registry().get(name)
    assert spec.name == name
    assert spec.call is as_stage_spec(obj).call


@pytest.mark.parametrize("name", ALL_STAGES)
def test_unknown_options_are_rejected(name: str) -> None:
    with pytest.raises(OptionsError, match="unknown option"):
        spec_of(name).validate_options({"no_such_option_zz": 1})
