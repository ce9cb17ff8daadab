"""The bench stage: data extraction, config precedence, statistics results, loop freedom."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any

import anyio
import anyio.lowlevel
import numpy as np
import pytest
from pydantic import ValidationError

import crucible
from crucible import Context, Experiment, InvalidPipeline, StageDef, StageFailed
from crucible.experiment import Reliability, Stats
from crucible.stage import as_stage_spec
from crucible.testing import make_context, run_stage
from stages.bench import BenchFailed, BenchOptions, bench, groups_from_metrics
from tests.support.schema import validate_schema

A = [0.61, 0.64, 0.58, 0.66, 0.60, 0.63, 0.59, 0.65]
B = [0.81, 0.79, 0.84, 0.78, 0.83, 0.80, 0.85, 0.82]
C = [0.70, 0.72, 0.69, 0.73, 0.71, 0.74, 0.68, 0.72]


def scored(prompt: str | None, values: Sequence[float], key: str = "score") -> list[Any]:
    rows: list[Any] = []
    for v in values:
        row: dict[str, Any] = {key: v}
        if prompt is not None:
            row["prompt"] = prompt
        rows.append(row)
    return rows


def ctx_with(outputs: Sequence[Any] = (), stats: Stats | None = None, **metrics: Any) -> Context:
    exp = Experiment(id="bench-exp", reliability=Reliability(stats=stats) if stats else None)
    return make_context(experiment=exp).add_outputs(list(outputs)).merge_metrics(metrics)


async def run_bench(ctx: Context, **opts: Any) -> dict[str, Any]:
    """Call the stage function directly (it reads outputs/metrics, which run_stage drops)."""
    out = await bench(ctx, BenchOptions.model_validate(opts))
    result = out.get_metric("bench")
    assert isinstance(result, dict)
    json.dumps(result, allow_nan=False)  # JSON-safe: lists, no tuples, no NaN
    return result


async def test_no_data_is_not_a_failure() -> None:
    result = await run_bench(ctx_with())
    assert result["no_data"] is True
    assert result["tests_run"] == ["ttest"] and result["alpha"] == 0.05
    assert result["data_source"] == "outputs"


async def test_one_group_gives_descriptive_results() -> None:
    result = await run_bench(ctx_with(scored(None, A)))
    desc = result["results"]
    assert desc["group"] == "default" and desc["n"] == len(A)
    assert 0.60 < desc["mean"] < 0.64
    assert "only one group" in desc["tests_skipped"]
    lo, hi = desc["confidence_interval"]
    assert lo < desc["mean"] < hi


async def test_two_groups_ttest() -> None:
    result = await run_bench(ctx_with(scored("a", A) + scored("b", B)), tests=["ttest"])
    assert result["tests_run"] == ["ttest"] and result["alpha"] == 0.05
    assert result["groups"] == ["a", "b"] and result["sample_sizes"] == [8, 8]
    tt = result["test_results"]["ttest"]
    assert tt["p_value"] < 0.001 and tt["statistic"] > 0 and tt["significant"] is True
    assert isinstance(tt["confidence_interval"], list)


async def test_mann_whitney_alias() -> None:
    result = await run_bench(ctx_with(scored("a", A) + scored("b", B)), tests=["mannwhitney"])
    mw = result["test_results"]["mann_whitney"]
    assert {"p_value", "statistic"} <= mw.keys()
    assert result["tests_run"] == ["mann_whitney"]


async def test_three_groups_anova() -> None:
    outputs = scored("a", A) + scored("b", B) + scored("c", C)
    result = await run_bench(ctx_with(outputs), tests=["anova", "ttest"])
    assert result["groups"] == ["a", "b", "c"]
    assert result["test_results"]["anova"]["p_value"] < 0.001
    assert "error" in result["test_results"]["ttest"]  # two-group test on three groups
    assert "effect_size" not in result


async def test_score_falls_back_to_accuracy_then_loss() -> None:
    outputs = [
        {"prompt": "a", "score": "n/a", "accuracy": 0.5, "loss": 9.0},
        {"prompt": "a", "loss": 0.7},
        {"prompt": "b", "score": 0.9},
    ]
    result = await run_bench(ctx_with(outputs))
    assert result["sample_sizes"] == [2, 1]


async def test_metrics_source_takes_lists_and_numbers_not_maps() -> None:
    ctx = ctx_with(
        accuracy=[0.9, 0.8, 0.85],
        loss=(0.3, 0.2, 0.25),
        data_checks={"total": 10, "missing_required": 1},
        label="x",
        started={"at": 5},
    )
    result = await run_bench(ctx, data_source="metrics")
    assert result["groups"] == ["accuracy", "loss"]
    assert result["sample_sizes"] == [3, 3]
    assert result["data_source"] == "metrics"


def test_metrics_extraction_rules() -> None:
    got = groups_from_metrics(
        {"z": 3, "a": [1, "x", None, 2.5, True], "flag": True, "arr": np.array([1.0, 2.0])}
    )
    assert list(got.groups) == ["a", "arr", "z"]
    assert got.groups["a"] == [1.0, 2.5] and got.groups["z"] == [3.0]


async def test_custom_extractor_sync_and_async() -> None:
    def sync_source(ctx: Context) -> Mapping[str, list[float]]:
        return {"treatment": B, "control": A}

    async def async_source(ctx: Context) -> Mapping[str, list[float]]:
        await anyio.lowlevel.checkpoint()
        return {"treatment": B, "control": A}

    for source in (sync_source, async_source):
        result = await run_bench(ctx_with(), data_source=source, tests=["ttest"])
        assert result["groups"] == ["control", "treatment"]
        assert result["data_source"] == "custom"
        assert "p_value" in result["test_results"]["ttest"]


async def test_custom_extractor_through_the_engine() -> None:
    exp = Experiment(
        id="custom",
        pipeline=[StageDef(name="bench", options={"data_source": {"custom": lambda c: {"x": A}}})],
    )
    out = await crucible.run(exp, registry=crucible.Registry([bench]))
    assert out.get_metric("bench")["groups"] == ["x"]


async def test_custom_extractor_errors_become_bench_failed() -> None:
    def broken(ctx: Context) -> Any:
        raise KeyError("nope")

    with pytest.raises(BenchFailed, match=r"raised KeyError"):
        await run_bench(ctx_with(), data_source=broken)
    with pytest.raises(BenchFailed, match="must return a mapping"):
        await run_bench(ctx_with(), data_source=lambda c: [1, 2, 3])
    with pytest.raises(BenchFailed, match="expected a list of numbers"):
        await run_bench(ctx_with(), data_source=lambda c: {"a": 1.0})
    with pytest.raises(StageFailed) as info:
        await run_stage(bench, None, {"data_source": broken})
    assert isinstance(info.value.cause, BenchFailed)


async def test_import_path_source_needs_allow_imports() -> None:
    with pytest.raises(StageFailed) as info:
        await run_stage(bench, None, {"data_source": "tests.stages.test_bench:fixed_groups"})
    assert "allow_imports" in str(info.value.cause)
    out = await run_stage(
        bench, None, {"data_source": "tests.stages.test_bench:fixed_groups"}, allow_imports=True
    )
    assert out.get_metric("bench")["groups"] == ["a", "b"]


def fixed_groups(ctx: Context) -> dict[str, list[float]]:
    return {"a": A, "b": B}


async def test_bootstrap_iterations_from_stats_options() -> None:
    stats = Stats(tests=["bootstrap"], options={"bootstrap_iterations": 100})
    result = await run_bench(ctx_with(scored("a", A) + scored("b", B), stats=stats))
    boot = result["test_results"]["bootstrap"]
    assert boot["iterations"] == 100
    assert boot["group1_ci"][0] < boot["group1_ci"][1]
    assert boot["mean_difference"] == pytest.approx(np.mean(B) - np.mean(A))


async def test_precedence_stage_option_over_stats_over_default() -> None:
    stats = Stats(
        tests=["ttest", "bootstrap"],
        alpha=0.01,
        bootstrap_iterations=50,
        options={"bootstrap_iterations": 70, "seed": 3, "unrelated": 1},
        multiple_testing_correction="holm",
        effect_size_type="hedges_g",
    )
    ctx = ctx_with(scored("a", A) + scored("b", B), stats=stats)
    result = await run_bench(ctx)
    assert result["alpha"] == 0.01 and result["tests_run"] == ["ttest", "bootstrap"]
    assert result["test_results"]["bootstrap"]["iterations"] == 50
    assert result["settings"]["seed"] == 3
    assert result["correction"] == "holm" and "p_adjusted" in result["test_results"]["ttest"]
    assert result["effect_size"]["type"] == "hedges_g"

    result = await run_bench(
        ctx,
        tests=["welch"],
        alpha=0.1,
        options={"bootstrap_iterations": 20},
        correction="none",
        effect_size="cohens_d",
    )
    assert result["alpha"] == 0.1 and result["tests_run"] == ["welch"]
    assert result["settings"]["bootstrap_iterations"] == 20
    assert result["correction"] is None and result["effect_size"]["type"] == "cohens_d"


async def test_stats_with_options_none_does_not_crash() -> None:
    stats = Stats(options=None)
    result = await run_bench(ctx_with(scored("a", A) + scored("b", B), stats=stats))
    assert result["tests_run"] == ["ttest", "bootstrap"]  # Stats' own default tests
    assert result["test_results"]["bootstrap"]["iterations"] == 10_000


async def test_bad_stats_config_is_bench_failed() -> None:
    ctx = ctx_with(scored("a", A), stats=Stats(tests=["chi_square"], options={}))
    with pytest.raises(BenchFailed, match="unknown statistical test 'chi_square'"):
        await run_bench(ctx)
    ctx = ctx_with(scored("a", A), stats=Stats(options={"bootstrap_iterations": 0}))
    with pytest.raises(BenchFailed, match=r"stats\.options"):
        await run_bench(ctx)


async def test_effect_size_present_for_two_groups() -> None:
    result = await run_bench(ctx_with(scored("a", A) + scored("b", B)))
    es = result["effect_size"]
    assert es["type"] == "cohens_d" and es["value"] > 0.8 and es["interpretation"] == "large"
    assert es["mean2"] > es["mean1"]  # sign convention: group2 - group1


async def test_non_numeric_scores_and_outputs_are_ignored() -> None:
    outputs: list[Any] = [
        {"prompt": "a", "score": None},
        {"prompt": "a", "score": "high"},
        {"prompt": "b", "score": float("nan")},
        {"prompt": "b", "score": True},
        "a bare string",
        42,
        [("score", 1.0)],
    ]
    result = await run_bench(ctx_with(outputs))
    assert result["no_data"] is True
    assert result["skipped_outputs"] == 3


async def test_alpha_from_stats_config_controls_significance() -> None:
    a = [0.50, 0.55, 0.48, 0.52, 0.51, 0.53]
    b = [0.54, 0.57, 0.51, 0.56, 0.53, 0.58]  # p ~ 0.046: significant at 0.05, not at 0.01
    stats = Stats(tests=["ttest"], alpha=0.01, options={})
    result = await run_bench(ctx_with(scored("a", a) + scored("b", b), stats=stats))
    tt = result["test_results"]["ttest"]
    assert result["alpha"] == 0.01
    assert 0.01 < tt["p_value"] < 0.05 and tt["significant"] is False
    at_default = await run_bench(ctx_with(scored("a", a) + scored("b", b)), tests=["ttest"])
    assert at_default["test_results"]["ttest"]["significant"] is True


async def test_through_engine_records_event_and_metric(spans: Any) -> None:
    out = await run_stage(bench, None, {"tests": ["ttest"]}, tracer_provider=spans.provider)
    assert out.get_metric("bench")["no_data"] is True
    assert out.trace is not None
    (event,) = out.trace.spans[0].events
    assert event.name == "bench.analysed"
    assert event.attributes["groups"] == 0 and event.attributes["tests"] == ["ttest"]
    span = spans.one("stage bench")
    assert [e.name for e in span.events] == ["bench.analysed"]


async def test_unknown_test_rejected_before_anything_runs() -> None:
    ran: list[str] = []

    @crucible.stage("first", description="Records that it ran", register=False)
    async def first(ctx: Context) -> Context:
        ran.append("first")
        return ctx

    exp = Experiment(
        id="bad",
        pipeline=[
            StageDef(name="first"),
            StageDef(name="bench", options={"tests": ["ttest", "chi_square"], "typo": 1}),
        ],
    )
    with pytest.raises(InvalidPipeline) as info:
        await crucible.run(exp, registry=crucible.Registry([first, bench]))
    text = str(info.value)
    assert "chi_square" in text and "typo" in text and ran == []


@pytest.mark.parametrize(
    "opts",
    [
        {"alpha": 1.5},
        {"alpha": 0},
        {"correction": "tukey"},
        {"effect_size": "glass_delta"},
        {"data_source": "somewhere"},
        {"data_source": 3},
        {"options": {"bootstrap_iterations": 0}},
        {"options": {"iterations": 10}},
        {"bootstrap_iterations": 0},
        {"bootstrap_iterations": 1_000_001},  # a service's memory, not more precision
        {"options": {"bootstrap_iterations": 20_000_000}},
    ],
)
def test_bad_options_rejected_by_validation(opts: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        BenchOptions.model_validate(opts)


def test_int_alpha_accepted() -> None:
    """Integers are widened to float; only the range (0, 1) limits alpha, never the type."""
    spec = as_stage_spec(bench)
    assert spec.validate_options({"alpha": 0.01}).alpha == 0.01
    with pytest.raises(ValidationError) as info:
        BenchOptions.model_validate({"alpha": 1})
    errors = info.value.errors()
    assert [e["type"] for e in errors] == ["less_than"]  # a range error, not a type error
    opts = BenchOptions.model_validate({"bootstrap_iterations": 100.0, "confidence_level": 0.9})
    assert opts.bootstrap_iterations == 100


def test_describe() -> None:
    schema = as_stage_spec(bench).describe()
    assert schema["name"] == "bench"
    assert "statistical" in schema["description"].lower()
    assert schema["required"] == []
    assert {"tests", "alpha", "data_source", "options"} <= set(schema["optional"])
    assert schema["types"]["alpha"] == "float"
    assert schema["types"]["tests"] == ("list", "string")
    assert validate_schema(schema) == []


def test_entry_point_resolves_to_the_stage() -> None:
    (ep,) = [e for e in entry_points(group="crucible.stages") if e.name == "bench"]
    assert ep.load() is bench


async def test_loop_stays_free_during_heavy_bootstrap() -> None:
    rng = np.random.default_rng(1)
    groups = {"a": rng.normal(0, 1, 3000).tolist(), "b": rng.normal(0.2, 1, 3000).tolist()}
    opts = BenchOptions(
        data_source=lambda c: groups, tests=["bootstrap"], bootstrap_iterations=10_000
    )
    ticks = 0
    elapsed = 0.0

    async def ticker(stop: anyio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            await anyio.sleep(0.01)
            ticks += 1

    async with anyio.create_task_group() as tg:
        stop = anyio.Event()
        tg.start_soon(ticker, stop)
        t0 = time.perf_counter()
        out = await bench(make_context(), opts)
        elapsed = time.perf_counter() - t0
        stop.set()
    assert out.get_metric("bench")["test_results"]["bootstrap"]["iterations"] == 10_000
    assert elapsed > 0.1, "the workload should be heavy enough to measure"
    expected = elapsed / 0.01
    assert ticks >= 0.5 * expected, (ticks, expected, elapsed)
