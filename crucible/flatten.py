"""Nested run data as flat ``a.b.c`` keys: metrics and experiment configurations.

The run browser, ``crucible runs diff`` and CSV exports all show one row per leaf value, so they
share these rules: mappings nest with ``.``, lists stay whole values (``bench.tests``), and a
pipeline is keyed by stage name the way ``--set`` and ``matrix:`` name options (``bench.alpha``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, TypeGuard

__all__ = ["flatten", "flatten_configuration", "is_number"]

# StageDef fields other than name/options; shown as ``stage:field`` so they never collide
# with an option of the same name (``bench:timeout`` vs ``bench.timeout``).
_STAGE_FIELDS = ("module", "enabled", "timeout", "retries", "retry_backoff")


def is_number(value: Any) -> TypeGuard[int | float]:
    """An int or float that is not a bool (JSON numbers, as metrics store them)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1]}`` -> ``{"a.b": 1, "c": [1]}``; an empty mapping is a value."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def flatten_configuration(definition: Mapping[str, Any]) -> dict[str, Any]:
    """An experiment definition as flat option paths, leaving out unset (None) values.

    Pipeline stages are keyed by name (``bench.alpha``, ``bench:retries``); a name used twice
    gets its occurrence (``bench#2.alpha``). ``pipeline`` itself lists the stage names in order,
    so a reordered or extra stage shows as a difference too. Lists of mappings get indexes
    (``outputs[0].formats``).
    """
    out: dict[str, Any] = {}
    for key, value in definition.items():
        if key == "pipeline" and isinstance(value, list):
            out.update(_pipeline_paths(value))
        else:
            out.update(_paths(str(key), value))
    return out


def _pipeline_paths(pipeline: list[Any]) -> dict[str, Any]:
    names = [str(sd.get("name")) if isinstance(sd, Mapping) else str(sd) for sd in pipeline]
    out: dict[str, Any] = {"pipeline": names}
    totals, seen = Counter(names), Counter[str]()
    for name, sd in zip(names, pipeline, strict=True):
        seen[name] += 1
        label = name if totals[name] == 1 else f"{name}#{seen[name]}"
        if not isinstance(sd, Mapping):
            continue
        for option, value in (sd.get("options") or {}).items():
            out.update(_paths(f"{label}.{option}", value))
        for fld in _STAGE_FIELDS:
            if sd.get(fld) is not None:
                out[f"{label}:{fld}"] = sd[fld]
    return out


def _paths(path: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        if not value:
            return {path: {}}
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_paths(f"{path}.{key}", inner))
        return out
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        out = {}
        for i, inner in enumerate(value):
            out.update(_paths(f"{path}[{i}]", inner))
        return out
    return {path: value}
