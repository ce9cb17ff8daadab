"""The ``bench`` stage: statistical comparison of score groups, off the event loop.

Groups of numbers come from the run's outputs (grouped by prompt), from list-valued metrics, or
from a custom extractor; ``stages._stats.analyse`` does the statistics in a worker thread and the
JSON-safe summary lands in ``metrics["bench"]``, with its one-line ``headline`` (see
``stages.headlines``).
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from crucible.context import Context
from crucible.errors import CrucibleError
from crucible.experiment import Stats
from crucible.registry import load_option_callable
from crucible.serialize import to_jsonable
from crucible.stage import stage
from stages import _stat_names
from stages.headlines import bench_headline as headline

__all__ = ["BenchFailed", "BenchOptions", "BenchTestOptions", "bench", "extract_groups", "headline"]

_log = structlog.get_logger("crucible.stages.bench")

DEFAULT_ALPHA = 0.05
DEFAULT_TESTS: tuple[str, ...] = ("ttest",)
DEFAULT_BOOTSTRAP_ITERATIONS = 10_000
#: More resamples than this buy no precision that matters and could exhaust a service's memory.
MAX_BOOTSTRAP_ITERATIONS = 1_000_000
DEFAULT_SEED = 0
SCORE_KEYS: tuple[str, ...] = ("score", "accuracy", "loss")
DEFAULT_GROUP = "default"
_BUILTIN_SOURCES = ("outputs", "metrics")

Groups = dict[str, list[float]]


class BenchFailed(CrucibleError):
    """The bench stage could not analyse: bad statistics settings or a broken data source."""


class BenchTestOptions(BaseModel):
    """Per-test knobs, from the stage's ``options`` or ``reliability.stats.options``."""

    model_config = ConfigDict(extra="forbid")

    bootstrap_iterations: int | None = Field(
        default=None,
        ge=1,
        le=MAX_BOOTSTRAP_ITERATIONS,
        description="Bootstrap resamples (default 10000, at most 1000000).",
    )
    bootstrap_method: Literal["percentile", "bca", "basic"] | None = Field(
        default=None, description="Bootstrap interval method (default percentile)."
    )
    seed: int | None = Field(default=None, description="Seed of the bootstrap resampling.")


def _is_number(value: object) -> bool:
    """Finite real numbers only: bools, None, strings and NaN/inf are not data."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return math.isfinite(float(value))


def _check_data_source(value: Any) -> Any:
    """Accept "outputs", "metrics", a callable, an import path, or {"custom": one of those}."""
    if isinstance(value, Mapping):
        if set(value) != {"custom"}:
            raise ValueError("a mapping data_source must be {'custom': <callable or import path>}")
        value = value["custom"]
        if isinstance(value, str) and value.strip().lower() in _BUILTIN_SOURCES:
            raise ValueError("{'custom': ...} needs a callable or an import path")
    if callable(value):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _BUILTIN_SOURCES:
            return lowered
        if ":" in value or "." in value:
            return value  # an import path, resolved at run time (needs allow_imports=True)
    raise ValueError(
        "data_source must be 'outputs', 'metrics', a callable fn(ctx) -> {group: [numbers]} "
        f"or an import path 'package.module:function'; got {value!r}"
    )


class BenchOptions(BaseModel):
    """Options of the ``bench`` stage; unset ones fall back to ``reliability.stats``."""

    model_config = ConfigDict(extra="forbid")

    tests: list[str] | None = Field(
        default=None,
        description=(
            "Tests to run: ttest, welch, paired_ttest, wilcoxon, mann_whitney, anova, "
            "kruskal_wallis, bootstrap (aliases such as mannwhitney/kruskal accepted). "
            "Default: reliability.stats.tests, else [ttest]."
        ),
    )
    alpha: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Significance level (integers widened). Default: stats.alpha, else 0.05.",
    )
    data_source: Any = Field(
        default="outputs",
        description=(
            "'outputs' (scores grouped by prompt), 'metrics' (list-valued and numeric metrics), "
            "or a callable fn(ctx) -> {group: [numbers]}, sync or async."
        ),
    )
    options: BenchTestOptions = Field(
        default_factory=BenchTestOptions,
        description="Test options (bootstrap_iterations, bootstrap_method, seed); override "
        "reliability.stats.options.",
    )
    confidence_level: float | None = Field(
        default=None, gt=0, lt=1, description="Confidence level of intervals. Default: 1 - alpha."
    )
    bootstrap_iterations: int | None = Field(
        default=None,
        ge=1,
        le=MAX_BOOTSTRAP_ITERATIONS,
        description="Bootstrap resamples (at most 1000000); wins over options/stats.",
    )
    correction: str | None = Field(
        default=None,
        description="Multiple-comparison correction: holm, bh, bonferroni or none. "
        "Default: stats.multiple_testing_correction.",
    )
    effect_size: str | None = Field(
        default=None,
        description="cohens_d or hedges_g. Default: stats.effect_size_type, else cohens_d.",
    )
    seed: int | None = Field(
        default=None, description="Seed for bootstrap resampling (default 0: reproducible)."
    )

    @field_validator("tests")
    @classmethod
    def _known_tests(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _stat_names.canonical_tests(v)

    @field_validator("data_source")
    @classmethod
    def _known_source(cls, v: Any) -> Any:
        return _check_data_source(v)

    @field_validator("correction")
    @classmethod
    def _known_correction(cls, v: str | None) -> str | None:
        if v is None:
            return None
        return _stat_names.canonical_correction(v) or "none"  # explicit "none" beats stats config

    @field_validator("effect_size")
    @classmethod
    def _known_effect_size(cls, v: str | None) -> str | None:
        return None if v is None else _stat_names.canonical_effect_size(v)


@dataclass(frozen=True, slots=True)
class _Settings:
    """Statistics settings after applying stage option -> stats config -> default."""

    tests: list[str]
    alpha: float
    confidence_level: float | None
    bootstrap_iterations: int
    bootstrap_method: str
    correction: str | None
    effect_size: str
    seed: int

    def public(self) -> dict[str, Any]:
        return {
            "bootstrap_iterations": self.bootstrap_iterations,
            "bootstrap_method": self.bootstrap_method,
            "effect_size": self.effect_size,
            "seed": self.seed,
        }


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _stats_test_options(stats: Stats | None) -> BenchTestOptions:
    """Known keys of ``stats.options`` (None is fine); unknown keys are logged and ignored."""
    raw = dict(stats.options or {}) if stats is not None else {}
    known = {k: v for k, v in raw.items() if k in BenchTestOptions.model_fields}
    ignored = sorted(set(raw) - set(known))
    if ignored:
        _log.warning("ignoring unknown reliability.stats.options keys", keys=ignored)
    try:
        return BenchTestOptions.model_validate(known)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise BenchFailed(f"invalid reliability.stats.options: {problems}") from None


def resolve_settings(opts: BenchOptions, stats: Stats | None) -> _Settings:
    """Apply the precedence stage option -> ``reliability.stats`` -> default, per key."""
    stats_opts = _stats_test_options(stats)
    try:
        tests = opts.tests
        if tests is None and stats is not None:
            tests = _stat_names.canonical_tests(stats.tests)
        correction = opts.correction
        if correction is None and stats is not None:
            correction = _stat_names.canonical_correction(stats.multiple_testing_correction)
        effect = opts.effect_size
        if effect is None and stats is not None and stats.effect_size_type is not None:
            effect = _stat_names.canonical_effect_size(stats.effect_size_type)
    except ValueError as err:
        raise BenchFailed(f"invalid reliability.stats configuration: {err}") from None
    alpha = _first(opts.alpha, stats.alpha if stats is not None else None, DEFAULT_ALPHA)
    if not 0 < alpha < 1:
        raise BenchFailed(f"alpha must be strictly between 0 and 1, got {alpha!r}")
    return _Settings(
        tests=list(DEFAULT_TESTS) if tests is None else list(tests),
        alpha=float(alpha),
        confidence_level=_first(
            opts.confidence_level, stats.confidence_level if stats is not None else None
        ),
        bootstrap_iterations=_first(
            opts.bootstrap_iterations,
            opts.options.bootstrap_iterations,
            stats.bootstrap_iterations if stats is not None else None,
            stats_opts.bootstrap_iterations,
            DEFAULT_BOOTSTRAP_ITERATIONS,
        ),
        bootstrap_method=_first(
            opts.options.bootstrap_method, stats_opts.bootstrap_method, "percentile"
        ),
        correction=None if correction in (None, "none") else correction,
        effect_size=effect or "cohens_d",
        seed=_first(opts.seed, opts.options.seed, stats_opts.seed, DEFAULT_SEED),
    )


# --- data extraction ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Extracted:
    """Groups of numbers plus how many outputs could not be read."""

    groups: Groups
    skipped_outputs: int = 0


def _numbers(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if _is_number(v)]


def groups_from_outputs(outputs: Iterable[Any]) -> Extracted:
    """Group by ``output["prompt"]`` (absent -> "default"); first numeric score/accuracy/loss."""
    groups: Groups = {}
    skipped = 0
    for output in outputs:
        if not isinstance(output, Mapping):
            skipped += 1
            continue
        value = next((output[k] for k in SCORE_KEYS if _is_number(output.get(k))), None)
        if value is None:
            continue
        prompt = output.get("prompt")
        name = DEFAULT_GROUP if prompt is None else str(prompt)
        groups.setdefault(name, []).append(float(value))
    return Extracted({k: groups[k] for k in sorted(groups)}, skipped)


def _as_sequence(value: Any) -> Sequence[Any] | None:
    """A list-like metric value (list, tuple, persistent vector, numpy array), else None."""
    if isinstance(value, str | bytes | Mapping):
        return None
    if isinstance(value, Sequence):
        return value
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        converted = tolist()
        return converted if isinstance(converted, list) else None
    return None


def groups_from_metrics(metrics: Mapping[str, Any]) -> Extracted:
    """Numeric metrics become one-value groups, list metrics their numbers; maps are ignored."""
    groups: Groups = {}
    for name, value in metrics.items():
        if name == "bench":
            continue  # never analyse an earlier bench result
        if _is_number(value):
            groups[name] = [float(value)]
            continue
        seq = _as_sequence(value)
        if seq is not None:
            nums = _numbers(seq)
            if nums:
                groups[name] = nums
    return Extracted({k: groups[k] for k in sorted(groups)})


def _check_custom_groups(result: Any, where: str) -> Groups:
    """The extractor must return {str: sequence of numbers}; anything else is BenchFailed."""
    if not isinstance(result, Mapping):
        raise BenchFailed(
            f"{where} must return a mapping of group name -> list of numbers, "
            f"got {type(result).__name__}"
        )
    groups: Groups = {}
    for name, values in result.items():
        if not isinstance(name, str):
            raise BenchFailed(f"{where} returned a non-string group name {name!r}")
        seq = _as_sequence(values)
        if seq is None:
            raise BenchFailed(
                f"{where} returned {type(values).__name__} for group {name!r}; "
                "expected a list of numbers"
            )
        nums = _numbers(seq)
        if nums:
            groups[name] = nums
    return {k: groups[k] for k in sorted(groups)}


def _describe_callable(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"bench data_source {getattr(fn, '__module__', '?')}.{name}"


async def _run_custom(source: Any, ctx: Context) -> Extracted:
    """Call the custom extractor (sync ones in a worker thread) and check what it returned."""
    try:
        fn = load_option_callable(source, what="bench.data_source")
    except Exception as err:
        raise BenchFailed(f"cannot load bench data_source {source!r}: {err}") from err
    where = _describe_callable(fn)
    try:
        if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__):
            result = await fn(ctx)
        else:
            result = await anyio.to_thread.run_sync(fn, ctx, abandon_on_cancel=True)
            if inspect.isawaitable(result):
                result = await result
    except Exception as err:
        raise BenchFailed(f"{where} raised {type(err).__name__}: {err}") from err
    return Extracted(_check_custom_groups(result, where))


def extract_groups(ctx: Context, source: str) -> Extracted:
    """Built-in extraction for ``"outputs"`` or ``"metrics"`` (pure; runs in a worker thread)."""
    if source == "outputs":
        return groups_from_outputs(ctx.outputs)
    if source == "metrics":
        return groups_from_metrics(ctx.metrics)
    raise ValueError(f"unknown built-in data_source {source!r}")


def _analyse(extracted: Extracted, s: _Settings) -> dict[str, Any]:
    # numpy and scipy load here, in the worker thread of bench's first run: importing this
    # module (to list stages or validate options) stays cheap.
    from stages import _stats

    return _stats.analyse(
        extracted.groups,
        tests=s.tests,
        alpha=s.alpha,
        confidence_level=s.confidence_level,
        bootstrap_iterations=s.bootstrap_iterations,
        correction=s.correction,
        effect_size=s.effect_size,
        seed=s.seed,
        bootstrap_method=s.bootstrap_method,
    )


def _extract_and_analyse(ctx: Context, source: str, s: _Settings) -> tuple[Extracted, Any]:
    extracted = extract_groups(ctx, source)
    return extracted, _analyse(extracted, s)


@stage(
    "bench",
    description=(
        "Statistical comparison of score groups (t-tests, Mann-Whitney, Wilcoxon, ANOVA, "
        "Kruskal-Wallis, bootstrap) with effect sizes and multiple-comparison correction"
    ),
    register=False,
)
async def bench(ctx: Context, opts: BenchOptions) -> Context:
    """Extract groups, analyse them in a worker thread, store ``metrics["bench"]``."""
    reliability = ctx.experiment.reliability
    settings = resolve_settings(opts, reliability.stats if reliability is not None else None)
    source = opts.data_source
    try:
        if isinstance(source, str) and source in _BUILTIN_SOURCES:
            source_name = source
            extracted, analysis = await anyio.to_thread.run_sync(
                functools.partial(_extract_and_analyse, ctx, source, settings),
                abandon_on_cancel=True,
            )
        else:
            source_name = "custom"
            extracted = await _run_custom(source, ctx)
            analysis = await anyio.to_thread.run_sync(
                functools.partial(_analyse, extracted, settings), abandon_on_cancel=True
            )
    except ValueError as err:  # analyse rejects bad settings only
        raise BenchFailed(f"invalid statistics settings: {err}") from err

    timestamp = dt.datetime.now(dt.UTC).isoformat()
    result: dict[str, Any] = {"data_source": source_name}
    if analysis.get("no_data"):
        result.update(no_data=True, tests_run=settings.tests, alpha=settings.alpha)
        _log.warning("bench found no numeric data", data_source=source_name)
    else:
        result.update(analysis)
        result["settings"] = settings.public()
    if source_name == "outputs":
        result["skipped_outputs"] = extracted.skipped_outputs
        if extracted.skipped_outputs:
            _log.warning("bench skipped non-mapping outputs", count=extracted.skipped_outputs)
    result["timestamp"] = timestamp
    metric = to_jsonable(result, redact_secrets=False)
    metric["headline"] = headline(metric)
    return ctx.put_metric("bench", metric).record_event(
        "bench.analysed",
        groups=len(extracted.groups),
        tests=list(settings.tests),
        data_source=source_name,
        no_data=bool(analysis.get("no_data")),
    )
