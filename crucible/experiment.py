"""Experiment definitions (pydantic models) and loading them from YAML, JSON or TOML files."""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from crucible.errors import ExperimentFileError

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class _Model(BaseModel):
    model_config = _FROZEN


class StageDef(_Model):
    """One step of a pipeline: which stage (by registry ``name`` or import ``module``) and how."""

    name: str = Field(min_length=1)
    module: str | None = None
    options: dict[str, Any] | None = None
    enabled: bool = True
    timeout: float | None = Field(default=None, gt=0)
    retries: int = Field(default=0, ge=0)
    retry_backoff: float = Field(default=0.5, ge=0)


class OutputSpec(_Model):
    """A report to produce at the end of a run (formats, where to send it)."""

    name: str = Field(min_length=1)
    formats: list[str] = Field(default_factory=lambda: ["markdown"])
    sink: str = "file"
    options: dict[str, Any] | None = None


class BackendRef(_Model):
    """Which model backend an experiment targets; domain data that stages may read."""

    id: str
    profile: str = "default"
    options: dict[str, Any] | None = None
    model_version: str | None = None
    endpoint_url: str | None = None
    deployment_id: str | None = None
    fallback: BackendRef | None = None


class DatasetRef(_Model):
    """Which data set an experiment uses."""

    name: str
    provider: str = "crucible_datasets"
    split: str = "train"
    options: dict[str, Any] | None = None
    version: str | None = None
    format: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Stats(_Model):
    """Statistics configuration read by the ``bench`` stage."""

    tests: list[str] = Field(default_factory=lambda: ["ttest", "bootstrap"])
    alpha: float = Field(default=0.05, ge=0, le=1)
    confidence_level: float | None = Field(default=None, gt=0, lt=1)
    effect_size_type: str | None = None
    multiple_testing_correction: str | None = None
    bootstrap_iterations: int | None = Field(default=None, ge=1)
    options: dict[str, Any] | None = None


class Ensemble(_Model):
    strategy: str = "none"
    execution_mode: str = "parallel"
    models: list[str] | None = None
    weights: dict[str, float] | None = None
    min_agreement: float | None = None
    timeout_ms: int | None = None
    options: dict[str, Any] | None = None


class Hedging(_Model):
    strategy: str = "off"
    delay_ms: int | None = None
    percentile: float | None = None
    max_hedges: int | None = None
    budget_percent: float | None = None
    options: dict[str, Any] | None = None


class Fairness(_Model):
    enabled: bool = False
    metrics: list[str] | None = None
    group_by: str | None = None
    threshold: float | None = None
    fail_on_violation: bool | None = None
    options: dict[str, Any] | None = None


class Guardrail(_Model):
    profiles: list[str] = Field(default_factory=lambda: ["default"])
    prompt_injection_detection: bool | None = None
    jailbreak_detection: bool | None = None
    pii_detection: bool | None = None
    pii_redaction: bool | None = None
    content_moderation: bool | None = None
    fail_on_detection: bool | None = None
    options: dict[str, Any] | None = None


class Reliability(_Model):
    """Reliability settings; ``stats`` drives the bench stage, the rest is domain data."""

    ensemble: Ensemble | None = None
    hedging: Hedging | None = None
    guardrails: Guardrail | None = None
    stats: Stats | None = None
    fairness: Fairness | None = None
    monitoring: dict[str, Any] | None = None
    drift: dict[str, Any] | None = None
    circuit_breaker: dict[str, Any] | None = None
    feedback: dict[str, Any] | None = None


class Experiment(_Model):
    """An experiment: an id, the pipeline of stages to run, and descriptive domain data."""

    id: str = Field(min_length=1)
    pipeline: list[StageDef] = Field(default_factory=list)
    backend: BackendRef | None = None
    description: str | None = None
    owner: str | None = None
    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None
    dataset: DatasetRef | None = None
    reliability: Reliability | None = None
    outputs: list[OutputSpec] | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    experiment_type: str | None = None
    model_version: str | None = None
    training_config: dict[str, Any] | None = None
    baseline: str | None = None
    matrix: dict[str, list[Any]] | None = None

    @field_validator("matrix")
    @classmethod
    def _matrix_keys(cls, v: dict[str, list[Any]] | None) -> dict[str, list[Any]] | None:
        if v is not None:
            for key, values in v.items():
                if "." not in key:
                    raise ValueError(f"matrix key {key!r} must look like 'stage.option'")
                if not values:
                    raise ValueError(f"matrix key {key!r} needs at least one value")
        return v

    def to_json(self) -> str:
        """Serialise to JSON; ``Experiment.model_validate_json`` reads it back unchanged."""
        return self.model_dump_json(by_alias=True)


def format_loc(loc: Sequence[int | str]) -> str:
    """Render a pydantic error location as ``pipeline[2].timeout``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def validation_messages(err: ValidationError) -> list[str]:
    """One ``path: message`` line per pydantic error."""
    return [f"{format_loc(e['loc'])}: {e['msg']}" for e in err.errors()]


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
    return experiment_from_mapping(_parse(p, text), source=p.name)
