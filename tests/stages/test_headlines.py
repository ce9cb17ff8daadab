"""The one-line headlines of bench results, checked against scipy's own numbers."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from crucible import Experiment
from crucible.headline import headlines
from crucible.testing import make_context
from stages.bench import BenchOptions, bench, headline

BASELINE = [0.61, 0.64, 0.58, 0.66, 0.60, 0.63, 0.59, 0.65, 0.70, 0.57]
CANDIDATE = [0.66, 0.79, 0.64, 0.78, 0.63, 0.80, 0.61, 0.72, 0.69, 0.75]
MINUS = "\u2212"


async def bench_result(groups: dict[str, list[float]], **opts: Any) -> dict[str, Any]:
    outputs = [{"prompt": name, "score": v} for name, values in groups.items() for v in values]
    ctx = make_context(experiment=Experiment(id="h")).add_outputs(outputs)
    out = await bench(ctx, BenchOptions.model_validate(opts))
    result = out.get_metric("bench")
    assert isinstance(result, dict)
    return result


async def test_two_groups_difference_ci_first_test_and_effect_size() -> None:
    result = await bench_result(
        {"baseline": BASELINE, "candidate": CANDIDATE},
        tests=["welch", "ttest"],
        effect_size="hedges_g",
    )
    welch = stats.ttest_ind(CANDIDATE, BASELINE, equal_var=False)
    ci = welch.confidence_interval(0.95)
    diff = float(np.mean(CANDIDATE) - np.mean(BASELINE))
    g, size = result["effect_size"]["value"], result["effect_size"]["interpretation"]
    expected = (
        f"candidate {MINUS} baseline = {diff:.3f}, 95 % CI [{ci.low:.3f}, {ci.high:.3f}], "
        f"Welch p = {welch.pvalue:.2g}, Hedges g = {g:.2f} ({size})"
    )
    assert result["headline"] == expected == headline(result)
    assert expected.startswith(f"candidate {MINUS} baseline = 0.084, 95 % CI [0.029, 0.139]")
    assert headlines({"bench": result, "other": {"x": 1}}) == [("bench", expected)]


async def test_correction_shows_the_adjusted_p_and_its_method() -> None:
    result = await bench_result(
        {"a": BASELINE, "b": CANDIDATE}, tests=["ttest", "mann_whitney"], correction="holm"
    )
    adjusted = result["test_results"]["ttest"]["p_adjusted"]
    assert f"Student t p = {adjusted:.2g} (Holm)" in result["headline"]
    assert result["headline"].startswith(f"b {MINUS} a = ")


async def test_rank_test_first_takes_the_bootstrap_interval() -> None:
    result = await bench_result(
        {"a": BASELINE, "b": CANDIDATE},
        tests=["mann_whitney", "bootstrap"],
        bootstrap_iterations=500,
    )
    low, high = result["test_results"]["bootstrap"]["difference_ci"]
    line = result["headline"]
    assert "95 % bootstrap CI [" in line and "Mann-Whitney p = " in line
    shown = line.split("[", 1)[1].split("]", 1)[0].split(", ")
    assert abs(float(shown[0]) - low) < 0.001 and abs(float(shown[1]) - high) < 0.001


async def test_three_groups_anova_and_the_highest_mean() -> None:
    third = [v + 0.2 for v in BASELINE]
    result = await bench_result(
        {"a": BASELINE, "b": CANDIDATE, "c": third}, tests=["anova", "ttest"]
    )
    f = stats.f_oneway(BASELINE, CANDIDATE, third)
    assert result["headline"] == (
        f"ANOVA across 3 groups: F = {f.statistic:.3g}, p < 0.001, "
        f"highest mean c = {np.mean(third):.3f}"
    )


async def test_one_group_no_data_and_undefined_tests() -> None:
    one = await bench_result({"only": [1.0, 2.0, 3.0]})
    assert one["headline"].startswith("only: mean = 2.00, 95 % CI [")
    assert one["headline"].endswith("n = 3 (one group: nothing to compare)")
    empty = await bench_result({})
    assert empty["headline"] == "no numeric data to compare (data_source outputs)"
    flat = await bench_result({"a": [1.0, 1.0], "b": [1.0, 1.0]}, tests=["ttest"])
    assert flat["headline"].startswith(f"b {MINUS} a = 0, ")
    assert "Student t: " in flat["headline"]  # the test's own reason it could not run
