"""Loading experiments from YAML (safe loader), JSON or TOML files, or from parsed mappings."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from crucible.errors import ExperimentFileError, format_location
from crucible.experiment.models import Experiment


def validation_messages(err: ValidationError) -> list[str]:
    """One ``path: message`` line per pydantic error."""
    return [f"{format_location(e['loc'])}: {e['msg']}" for e in err.errors()]


def experiment_from_mapping(data: Any, *, source: str = "<experiment>") -> Experiment:
    """Build an Experiment from already-parsed data, raising ExperimentFileError on problems."""
    if not isinstance(data, Mapping):
        got = type(data).__name__
        raise ExperimentFileError(source, [f"(top level): expected a mapping, got {got}"])
    try:
        return Experiment.model_validate(dict(data))
    except ValidationError as err:
        raise ExperimentFileError(source, validation_messages(err)) from None


def _parse(path: Path, text: str) -> Any:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            problem = getattr(err, "problem", None) or str(err)
            raise ExperimentFileError(path.name, [f"{where}invalid YAML: {problem}"]) from None
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ExperimentFileError(
                path.name, [f"line {err.lineno}, column {err.colno}: invalid JSON: {err.msg}"]
            ) from None
    if suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ExperimentFileError(path.name, [f"invalid TOML: {err}"]) from None
    raise ExperimentFileError(
        path.name,
        [f"unsupported file type {suffix or '(none)'!r}; use .yaml, .yml, .json or .toml"],
    )


def load_experiment(path: str | Path) -> Experiment:
    """Read an experiment from a YAML (safe loader), JSON or TOML file.

    Every problem raises ExperimentFileError naming the file and the field path, e.g.
    ``quickstart.yaml: pipeline[2].timeout: Input should be a valid number``.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExperimentFileError(p.name, ["file not found"]) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ExperimentFileError(p.name, [f"cannot read file: {err}"]) from None
    return experiment_from_mapping(_parse(p, text), source=p.name).with_source(p)
