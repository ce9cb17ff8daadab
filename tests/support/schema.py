"""A checker for ``describe()`` schemas: the shape the conformance tests hold every stage to."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")
PRIMITIVES = frozenset(
    {"string", "integer", "float", "boolean", "atom", "map", "list", "module", "any"}
)


def valid_type_spec(spec: Any) -> bool:
    """True for a type spec: a primitive, or a struct/enum/list/map/function/union/tuple."""
    if isinstance(spec, str):
        return spec in PRIMITIVES
    if not isinstance(spec, tuple) or not spec:
        return False
    tag, *rest = spec
    if tag == "struct":
        return len(rest) == 1 and isinstance(rest[0], str | type)
    if tag == "enum":
        return len(rest) == 1 and isinstance(rest[0], list)
    if tag == "list":
        return len(rest) == 1 and valid_type_spec(rest[0])
    if tag == "map":
        return len(rest) == 2 and valid_type_spec(rest[0]) and valid_type_spec(rest[1])
    if tag == "function":
        return (
            len(rest) == 1 and isinstance(rest[0], int) and not isinstance(rest[0], bool)
            and rest[0] >= 0
        )  # fmt: skip
    if tag in ("union", "tuple"):
        return len(rest) == 1 and isinstance(rest[0], list) and all(map(valid_type_spec, rest[0]))
    return False


def validate_schema(schema: Any) -> list[str]:
    """Every problem with a describe() schema, one message each; [] means valid."""
    if not isinstance(schema, Mapping):
        return ["schema must be a map"]
    errors: list[str] = []
    name = schema.get("name")
    if not isinstance(name, str) or not name:
        errors.append("name must be a non-empty string")
    elif not _SNAKE.match(name):
        errors.append(f"name {name!r} must be snake_case")
    desc = schema.get("description")
    if not isinstance(desc, str) or not desc.strip():
        errors.append("description must be a non-empty string")
    for key in ("required", "optional"):
        val = schema.get(key)
        if not isinstance(val, list):
            errors.append(f"{key} must be a list")
        elif any(not isinstance(v, str) for v in val):
            errors.append(f"{key} must contain only strings")
    types_ = schema.get("types")
    if not isinstance(types_, Mapping):
        errors.append("types must be a map")
    else:
        bad = [k for k, v in types_.items() if not valid_type_spec(v)]
        if bad:
            errors.append(f"types has invalid type specs for: {', '.join(map(str, bad))}")
    req, opt = schema.get("required"), schema.get("optional")
    if isinstance(req, list) and isinstance(opt, list):
        overlap = sorted(set(req) & set(opt))
        if overlap:
            errors.append(f"required and optional overlap: {', '.join(overlap)}")
    if isinstance(req, list) and isinstance(types_, Mapping):
        missing = [k for k in req if k not in types_]
        if missing:
            errors.append(f"required keys without a type: {', '.join(map(str, missing))}")
    defaults = schema.get("defaults")
    if defaults is not None:
        if not isinstance(defaults, Mapping):
            errors.append("defaults must be a map")
        elif isinstance(opt, list):
            stray = [k for k in defaults if k not in opt]
            if stray:
                errors.append(f"defaults for keys not in optional: {', '.join(map(str, stray))}")
    if "__schema_version__" in schema and not isinstance(schema["__schema_version__"], str):
        errors.append("__schema_version__ must be a string")
    return errors
