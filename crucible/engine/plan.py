"""Pre-flight: resolve every enabled stage and validate its options before anything runs."""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import structlog

from crucible.errors import ImportsNotAllowed, InvalidPipeline, OptionsError, Problem, UnknownStage
from crucible.experiment import Experiment, StageDef, experiment_from_mapping
from crucible.files import FileAccess, access_in_effect, restored_stage, using_access
from crucible.observers import StageInfo
from crucible.registry import Registry
from crucible.scrub import Scrubber, definition_secrets, found_in, secret_values
from crucible.serialize import to_jsonable
from crucible.stage import StageSpec
from crucible.telemetry import attributes as span_attrs
from crucible.telemetry import conventions as names

ValidateMode = Literal["error", "warn", "off"]
_log = structlog.get_logger("crucible.engine")
_MAX_OPTIONS_ATTR = 2048


@dataclass(frozen=True, slots=True)
class PlannedStage:
    """A pipeline step after pre-flight: its spec (None when disabled) and validated options.

    The span name and attributes are computed here once, so a batch that runs the same
    experiment many times does not rebuild them per run.
    """

    index: int
    definition: StageDef
    spec: StageSpec | None
    options: Any
    span_attributes: Mapping[str, Any] = field(default_factory=dict)
    metric_attributes: Mapping[str, Any] = field(default_factory=dict)
    span_name: str = ""
    first_attempt_attributes: Mapping[str, Any] = field(default_factory=dict)
    info: StageInfo | None = None
    secrets: frozenset[str] = frozenset()  # secret values in its options (see crucible.scrub)

    @property
    def name(self) -> str:
        return self.definition.name


class Plan(list[PlannedStage]):
    """The planned stages of a pipeline, with what every run of it needs, computed once.

    ``secrets`` are its stages' secret values and its experiment's (``more_secrets``); every
    stage's span attributes are scrubbed of all of them.
    """

    __slots__ = ("_runs", "_text", "infos", "origins", "secrets")

    def __init__(
        self, stages: Sequence[PlannedStage], more_secrets: frozenset[str] = frozenset()
    ) -> None:
        secrets = more_secrets.union(*(p.secrets for p in stages))
        if secrets and (more_secrets or len(stages) > 1):  # one stage's own secrets may occur
            hide = Scrubber(secrets).encoded()  # in another's options (and the experiment's)
            stages = [_scrubbed(p, hide) for p in stages]
        super().__init__(stages)
        self.origins: tuple[str, ...] = tuple(p.spec.origin for p in stages if p.spec)
        self.infos: tuple[StageInfo, ...] = tuple(p.info for p in stages if p.info)
        self.secrets: frozenset[str] = secrets
        self._text = "\n".join(_attribute_text(p.span_attributes) for p in stages)
        self._runs: weakref.WeakKeyDictionary[Scrubber, Plan] = weakref.WeakKeyDictionary()

    def for_scrubber(self, scrubber: Scrubber) -> Plan:
        """This plan with its span attributes scrubbed of ``scrubber``'s secrets too (a run's:
        the environment's, its assigns'); itself when none of those occurs in them. Decided
        once per scrubber (a run's lives as long as the run)."""
        if not scrubber:
            return self
        hit = self._runs.get(scrubber)
        if hit is not None:
            return hit
        extra = scrubber.values - self.secrets
        found = self
        if extra and found_in(extra, self._text):
            found = Plan(self, self.secrets | extra)
        self._runs[scrubber] = found
        return found


def _attribute_text(attributes: Mapping[str, Any]) -> str:
    """Every string among span ``attributes`` (tuples of strings included), one a line."""
    return "\n".join(
        s for v in attributes.values() for s in (v if type(v) is tuple else (v,)) if type(s) is str
    )


def _scrubbed(step: PlannedStage, hide: Scrubber) -> PlannedStage:
    """``step`` with ``hide``'s secrets scrubbed from its span attributes (itself if none)."""
    if not hide.finds(_attribute_text(step.span_attributes)):
        return step
    attrs = hide.value(step.span_attributes)
    first = span_attrs.checked(span_attrs.attempt_attributes(attrs, 1))
    return replace(step, span_attributes=attrs, first_attempt_attributes=first)


def for_run(planned: Sequence[PlannedStage], scrubber: Scrubber) -> Sequence[PlannedStage]:
    """``planned`` with its span attributes scrubbed of a run's ``scrubber`` (Plan.for_scrubber)."""
    if not scrubber:
        return planned
    return (planned if type(planned) is Plan else Plan(planned)).for_scrubber(scrubber)


def plan_secrets(planned: Sequence[PlannedStage]) -> frozenset[str]:
    """The secret values in a plan's options (its stages' secrets, united)."""
    if type(planned) is Plan:
        return planned.secrets
    return frozenset().union(*(p.secrets for p in planned))


def plan_facts(planned: Sequence[PlannedStage]) -> tuple[tuple[str, ...], tuple[StageInfo, ...]]:
    """The origins of a plan's enabled stages and every entry's StageInfo."""
    if type(planned) is Plan:
        return planned.origins, planned.infos
    return tuple(p.spec.origin for p in planned if p.spec), tuple(p.info for p in planned if p.info)


def coerce_experiment(experiment: Experiment | Mapping[str, Any]) -> Experiment:
    """An Experiment as given, or built from a mapping (ExperimentFileError on problems)."""
    if isinstance(experiment, Experiment):
        return experiment
    if isinstance(experiment, Mapping):
        return experiment_from_mapping(experiment)
    raise TypeError(f"run() expects an Experiment or a mapping, got {type(experiment).__name__}")


def options_attribute(options: Mapping[str, Any] | None) -> str:
    """Options as sorted JSON with secrets redacted, cut to a span-friendly length."""
    text = json.dumps(to_jsonable(dict(options or {})), sort_keys=True)
    return text if len(text) <= _MAX_OPTIONS_ATTR else text[: _MAX_OPTIONS_ATTR - 3] + "..."


def _planned(
    experiment: Experiment, i: int, sd: StageDef, spec: StageSpec | None, options: Any
) -> PlannedStage:
    secrets = frozenset(secret_values(sd.options) | secret_values(options))
    shown = options_attribute(sd.options)
    if secrets:  # a SecretStr option under an ordinary key, or a secret inside another value
        shown = Scrubber(secrets).encoded().text(shown)  # as the JSON text writes them
    attrs = span_attrs.stage_attributes(sd.name, i, (sd.options or {}).keys(), shown)
    return PlannedStage(
        i,
        sd,
        spec,
        options,
        attrs,
        metric_attributes={
            names.PIPELINE_NAME: experiment.id,
            names.TASK_NAME: sd.name,
            names.TASK_RUN_RESULT: names.RESULT_SUCCESS,
        },
        span_name=names.stage_span_name(sd.name),
        first_attempt_attributes=span_attrs.checked(span_attrs.attempt_attributes(attrs, 1)),
        info=StageInfo(i, sd.name, spec is not None),
        secrets=secrets,
    )


def plan(
    experiment: Experiment,
    registry: Registry,
    *,
    validate_options: ValidateMode = "error",
    allow_imports: bool = False,
    restored: int = 0,
) -> list[PlannedStage]:
    """Resolve every enabled stage and validate its options; raise InvalidPipeline if any fail.

    The first ``restored`` stages are those a resume restores: their read paths must be inside
    the roots but need not exist any more.
    """
    if validate_options not in ("error", "warn", "off"):
        raise ValueError(
            f"validate_options must be 'error', 'warn' or 'off', got {validate_options!r}"
        )
    fatal: list[Problem] = []
    warnings: list[Problem] = []
    planned: list[PlannedStage] = []
    access = access_in_effect()  # a stage planned under it may be reused (_reused)
    settings = (experiment.id, registry.version, validate_options, allow_imports)
    for i, sd in enumerate(experiment.pipeline):
        lenient = i < restored
        here = (*settings, lenient)
        again = _reused(sd, i, registry, here, access)
        if again is not None:
            planned.append(again)
            continue
        with restored_stage() if lenient else nullcontext():
            clean = _plan_stage(experiment, i, sd, registry, validate_options, allow_imports,
                                planned, fatal, warnings)  # fmt: skip
        if clean and access is not None:
            _remember(_stage_cache, _STAGE_CACHE_SIZE, (id(sd), i),
                      (weakref.ref(registry), here, access, planned[-1]))  # fmt: skip
    if fatal:
        raise InvalidPipeline(fatal + warnings, source=experiment.id)
    for p in warnings:
        _log.warning("invalid stage options", experiment_id=experiment.id, problem=str(p))
    return Plan(planned, definition_secrets(experiment))


def _plan_stage(
    experiment: Experiment,
    i: int,
    sd: StageDef,
    registry: Registry,
    validate_options: ValidateMode,
    allow_imports: bool,
    planned: list[PlannedStage],
    fatal: list[Problem],
    warnings: list[Problem],
) -> bool:
    """Resolve and validate one stage: append it to ``planned``, or its problems.

    True when it was planned without a problem (only such a stage may be reused).
    """
    if not sd.enabled:
        planned.append(_planned(experiment, i, sd, None, None))
        return True
    try:
        spec = registry.resolve(sd, allow_imports=allow_imports)
    except (UnknownStage, ImportsNotAllowed, TypeError) as err:
        fatal.append(Problem(str(err), stage_index=i, stage=sd.name))
        return False
    if validate_options == "off":
        planned.append(_planned(experiment, i, sd, spec, spec.unchecked_options(sd.options)))
        return True
    try:
        opts = spec.validate_options(sd.options)
    except OptionsError as err:
        probs = [Problem(m, stage_index=i, stage=sd.name, path=p) for p, m in err.problems]
        (fatal if validate_options == "error" else warnings).extend(probs)
        planned.append(_planned(experiment, i, sd, spec, spec.unchecked_options(sd.options)))
        return False
    planned.append(_planned(experiment, i, sd, spec, opts))
    return True


# Planned stages by (id(stage definition), index): the variants of a sweep share the stage
# definitions the sweep does not vary (matrix_points), so those are resolved and validated once.
# A cached PlannedStage holds its definition, so the id cannot be reused while it is cached.
_STAGE_CACHE_SIZE = 1024
_stage_cache: dict[tuple[int, int], tuple[Any, ...]] = {}


def _reused(
    sd: StageDef, i: int, registry: Registry, settings: tuple[Any, ...], access: FileAccess | None
) -> PlannedStage | None:
    """The stage as planned before under the same settings and file access, if it was."""
    if access is None:  # the default access depends on the working directory: plan afresh
        return None
    hit = _stage_cache.get((id(sd), i))
    if hit is None:
        return None
    reg_ref, was, was_access, planned = hit
    same = planned.definition is sd and reg_ref() is registry
    return planned if same and was == settings and was_access == access else None


def _remember(cache: dict[Any, Any], size: int, key: Any, value: Any) -> None:
    """``cache[key] = value``, dropping the oldest entry when ``cache`` holds ``size``."""
    if len(cache) >= size:
        cache.pop(next(iter(cache)))
    cache[key] = value


_PLAN_CACHE_SIZE = 256
_plan_cache: dict[int, tuple[Any, ...]] = {}


def cached_plan(
    experiment: Experiment,
    registry: Registry,
    *,
    validate_options: ValidateMode,
    allow_imports: bool,
    file_access: FileAccess,
    restored: int = 0,
) -> list[PlannedStage]:
    """plan(), reused while the same Experiment object runs again on an unchanged registry.

    Experiments are frozen, so a batch running one experiment many times resolves and
    validates it once. Entries check the object's identity (through a weak reference) and the
    registry's version (and the file access that path options were checked against);
    anything else re-plans.
    """
    if validate_options == "warn":  # warnings are logged by plan(): keep them per run
        with using_access(file_access):
            return plan(experiment, registry, validate_options="warn",
                        allow_imports=allow_imports, restored=restored)  # fmt: skip
    key = id(experiment)
    hit = _plan_cache.get(key)
    if hit is not None:
        exp_ref, reg_ref, version, mode, imports, access, held, planned = hit
        if (
            exp_ref() is experiment
            and reg_ref() is registry
            and version == registry.version
            and mode == validate_options
            and imports == allow_imports
            and held == restored
            and (access is file_access or access == file_access)
        ):
            return planned  # type: ignore[no-any-return]
    with using_access(file_access):  # path options are checked against this run's roots
        planned = plan(
            experiment, registry, validate_options=validate_options, allow_imports=allow_imports,
            restored=restored,
        )  # fmt: skip
    _remember(_plan_cache, _PLAN_CACHE_SIZE, key, (
        weakref.ref(experiment), weakref.ref(registry), registry.version,
        validate_options, allow_imports, file_access, restored, planned,
    ))  # fmt: skip
    return planned
