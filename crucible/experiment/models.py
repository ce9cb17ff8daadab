"""Experiment definitions: pydantic models for experiments, stages, outputs and domain data."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

#: The most extra attempts one stage may ask for; more is almost certainly a mistake, and each
#: attempt is a span, a trace record and a stored row.
MAX_RETRIES = 100
#: The longest experiment id, stage name or run id, in characters: what the run store keeps.
ID_MAX = 255
#: The longest wait before one retry, in seconds: the exponential backoff stops growing here.
MAX_RETRY_DELAY_S = 60.0

_FROZEN = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class _Model(BaseModel):
    model_config = _FROZEN


class StageDef(_Model):
    """One step of a pipeline: which stage (by registry ``name`` or import ``module``) and how."""

    name: str = Field(min_length=1, max_length=ID_MAX)
    module: str | None = None
    options: dict[str, Any] | None = None
    enabled: bool = True
    timeout: float | None = Field(default=None, gt=0)
    retries: int = Field(default=0, ge=0, json_schema_extra={"maximum": MAX_RETRIES})
    retry_backoff: float = Field(default=0.5, ge=0, allow_inf_nan=False)

    @field_validator("retries")
    @classmethod
    def _retries_bounded(cls, v: int, info: ValidationInfo) -> int:
        if v > MAX_RETRIES:
            stage = info.data.get("name", "?")
            why = f"stage {stage!r}: retries={v} is more than the maximum of {MAX_RETRIES}"
            raise PydanticCustomError("too_many_retries", "{why}", {"why": why})
        return v


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

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, defer_build=True)


class Stats(_Model):
    """Statistics configuration read by the ``bench`` stage."""

    tests: list[str] = Field(default_factory=lambda: ["ttest", "bootstrap"])
    alpha: float = Field(default=0.05, ge=0, le=1)
    confidence_level: float | None = Field(default=None, gt=0, lt=1)
    effect_size_type: str | None = None
    multiple_testing_correction: str | None = None
    bootstrap_iterations: int | None = Field(default=None, ge=1, le=1_000_000)  # as bench allows
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

    id: str = Field(min_length=1, max_length=ID_MAX)
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
    checkpoint: bool = False  # keep each completed stage's Context, so the run can resume
    _source: Path | None = PrivateAttr(default=None)

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

    @property
    def source(self) -> Path | None:
        """The file this experiment was loaded from (None when built in Python)."""
        private = self.__pydantic_private__  # read directly: every run asks (pydantic's
        return private.get("_source") if private else None  # attribute path is slow)

    def with_source(self, path: Path | None) -> Experiment:
        """This experiment, remembered as loaded from ``path`` (relative data paths start there)."""
        copy = self.model_copy()
        copy._source = None if path is None else path.resolve()
        return copy

    def __eq__(self, other: object) -> bool:
        # Where an experiment was loaded from is not part of what it is.
        if not isinstance(other, Experiment):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    def to_json(self) -> str:
        """Serialise to JSON; ``Experiment.model_validate_json`` reads it back unchanged."""
        return self.model_dump_json(by_alias=True)
