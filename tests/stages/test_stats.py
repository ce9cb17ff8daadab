"""Tests of the bench statistics core against statsmodels, hand computations and textbook values."""

from __future__ import annotations

import itertools
import json
import math
import time
from typing import Any

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.oneway import anova_oneway
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW
from statsmodels.stats.weightstats import ttest_ind as sm_ttest_ind

from stages._stats import (
    TESTS,
    adjust_p_values,
    analyse,
    canonical_correction,
    canonical_effect_size,
    canonical_test,
    canonical_tests,
    clean_groups,
    holm,
)

# Student's sleep data (Cushny & Peebles 1905): extra hours of sleep under two drugs, same patients.
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
SLEEP = {"drug2": SLEEP_2, "drug1": SLEEP_1}  # insertion order deliberately unsorted

RNG = np.random.default_rng(12345)
A = RNG.normal(10.0, 2.0, 30)
B = RNG.normal(11.0, 3.0, 25)


def _json_roundtrip(result: dict[str, Any]) -> dict[str, Any]:
    """Fail if the result is not strict JSON; return it decoded."""
    decoded: dict[str, Any] = json.loads(json.dumps(result, allow_nan=False))
    return decoded


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("ttest", "ttest"),
        ("t_test", "ttest"),
        ("student", "ttest"),
        ("T-Test", "ttest"),
        ("welch", "welch"),
        ("welch_ttest", "welch"),
        ("paired_ttest", "paired_ttest"),
        ("paired", "paired_ttest"),
        ("wilcoxon", "wilcoxon"),
        ("mann_whitney", "mann_whitney"),
        ("mannwhitney", "mann_whitney"),
        ("mwu", "mann_whitney"),
        ("anova", "anova"),
        ("one_way_anova", "anova"),
        ("kruskal_wallis", "kruskal_wallis"),
        ("kruskal", "kruskal_wallis"),
        ("bootstrap", "bootstrap"),
    ],
)
def test_aliases_map_to_canonical_names(alias: str, canonical: str) -> None:
    assert canonical_test(alias) == canonical


def test_canonical_tests_deduplicates_and_keeps_order() -> None:
    assert canonical_tests(["mwu", "ttest", "mann_whitney", "student"]) == ["mann_whitney", "ttest"]
    assert canonical_tests("kruskal") == ["kruskal_wallis"]


def test_unknown_test_raises_value_error_listing_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown statistical test 'chisq'") as info:
        analyse(SLEEP, tests=["ttest", "chisq"])
    for name in TESTS:
        assert name in str(info.value)
    # names are checked before the data: an unknown test is an error even with no data
    with pytest.raises(ValueError):
        analyse({}, tests=["nope"])


def test_other_option_names_and_ranges_are_validated() -> None:
    assert canonical_correction("fdr_bh") == "bh"
    assert canonical_correction("Holm") == "holm"
    assert canonical_correction(None) is None
    assert canonical_effect_size("hedges_g") == "hedges_g"
    for bad in (
        {"correction": "sidak"},
        {"effect_size": "glass_delta"},
        {"alpha": 0.0},
        {"alpha": 1.5},
        {"confidence_level": 1.0},
        {"bootstrap_iterations": 0},
        {"bootstrap_method": "studentized"},
    ):
        with pytest.raises(ValueError):
            analyse(SLEEP, tests=["ttest"], **bad)


# --- data cleaning ----------------------------------------------------------------------------


def test_non_numeric_values_are_dropped_and_groups_sorted() -> None:
    groups: dict[str, Any] = {
        "z": [1.0, None, "2", True, float("nan"), float("inf"), 3, np.float32(5.0)],
        "a": [None, "x", False],
        "m": [np.int64(4), 2.5],
    }
    cleaned = clean_groups(groups)
    assert list(cleaned) == ["m", "z"]
    assert cleaned["z"].tolist() == [1.0, 3.0, 5.0]
    assert cleaned["m"].tolist() == [4.0, 2.5]


def test_no_data_when_nothing_numeric() -> None:
    assert analyse({}, tests=["ttest"]) == {"no_data": True}
    junk: dict[str, Any] = {"a": [None, "x"], "b": []}
    assert analyse(junk, tests=["ttest"]) == {"no_data": True}


def test_one_group_gives_descriptives_with_t_interval() -> None:
    values = [4.1, 5.3, 6.2, 5.9, 4.8, 5.5]
    groups: dict[str, Any] = {"only": [*values, None]}
    result = _json_roundtrip(analyse(groups, tests=["ttest"], alpha=0.1))
    assert result["groups"] == ["only"]
    assert result["sample_sizes"] == [6]
    assert result["tests_run"] == ["ttest"]
    res = result["results"]
    assert res["group"] == "only" and res["n"] == 6
    assert res["mean"] == pytest.approx(np.mean(values))
    assert res["std"] == pytest.approx(np.std(values, ddof=1))
    lo, hi = DescrStatsW(np.array(values)).tconfint_mean(alpha=0.1)
    assert res["confidence_interval"] == pytest.approx([lo, hi])
    assert res.get("tests_skipped")


def test_one_value_group_has_no_std_or_interval() -> None:
    res = analyse({"g": [3.0]}, tests=["ttest"])["results"]
    assert res == {**res, "n": 1, "mean": 3.0, "std": None, "confidence_interval": None}


def test_every_group_gets_its_mean_and_t_interval() -> None:
    groups = {"b": [0.9, 1.4, 1.1, 1.3], "a": [0.2, 0.5, 0.4], "c": [2.0]}
    result = _json_roundtrip(analyse(groups, tests=["anova"], confidence_level=0.9))
    stats_by_group = {g["group"]: g for g in result["group_stats"]}
    assert [g["group"] for g in result["group_stats"]] == ["a", "b", "c"]
    for name in ("a", "b"):
        lo, hi = DescrStatsW(np.array(groups[name])).tconfint_mean(alpha=0.1)
        entry = stats_by_group[name]
        assert entry["n"] == len(groups[name])
        assert entry["mean"] == pytest.approx(np.mean(groups[name]))
        assert entry["confidence_interval"] == pytest.approx([lo, hi])
    assert stats_by_group["c"] == {
        "group": "c",
        "n": 1,
        "mean": 2.0,
        "std": None,
        "confidence_interval": None,
    }


# --- two groups: parametric tests ------------------------------------------------------------


def test_student_ttest_matches_textbook_sleep_data() -> None:
    result = analyse(SLEEP, tests=["ttest"])
    assert result["groups"] == ["drug1", "drug2"]
    res = result["test_results"]["ttest"]
    # R: t.test(extra ~ group, sleep, var.equal=TRUE): t = -1.8608, df = 18, p = 0.07919
    # (R reports group1 - group2; this module reports group2 - group1, hence the sign).
    assert res["statistic"] == pytest.approx(1.8608, abs=1e-4)
    assert res["df"] == 18
    assert res["p_value"] == pytest.approx(0.07919, abs=1e-5)
    assert res["mean_difference"] == pytest.approx(1.58)
    assert res["significant"] is False


def test_welch_and_paired_match_textbook_sleep_data() -> None:
    tr = analyse(SLEEP, tests=["welch", "paired"])["test_results"]
    # R: t.test(extra ~ group, sleep): t = -1.8608, df = 17.776, p = 0.07939,
    # 95% CI -3.3654832 0.2054832
    assert tr["welch"]["df"] == pytest.approx(17.776, abs=1e-3)
    assert tr["welch"]["p_value"] == pytest.approx(0.07939, abs=1e-5)
    assert tr["welch"]["confidence_interval"] == pytest.approx([-0.2054832, 3.3654832], abs=1e-6)
    # R paired: t = -4.0621, df = 9, p = 0.002833, 95% CI -2.4598858 -0.7001142
    assert tr["paired_ttest"]["statistic"] == pytest.approx(4.0621, abs=1e-4)
    assert tr["paired_ttest"]["df"] == 9
    assert tr["paired_ttest"]["p_value"] == pytest.approx(0.002833, abs=1e-6)
    assert tr["paired_ttest"]["confidence_interval"] == pytest.approx(
        [0.7001142, 2.4598858], abs=1e-6
    )
    assert tr["paired_ttest"]["significant"] is True


@pytest.mark.parametrize(("test", "usevar"), [("ttest", "pooled"), ("welch", "unequal")])
def test_two_sample_ttests_match_statsmodels(test: str, usevar: str) -> None:
    res = analyse({"a": A.tolist(), "b": B.tolist()}, tests=[test], alpha=0.1)["test_results"][test]
    t, p, df = sm_ttest_ind(B, A, usevar=usevar)
    assert res["statistic"] == pytest.approx(t, rel=1e-10)
    assert res["p_value"] == pytest.approx(p, rel=1e-8)
    assert res["df"] == pytest.approx(df, rel=1e-10)
    # confidence level defaults to 1 - alpha = 0.9
    assert res["confidence_level"] == pytest.approx(0.9)
    cm = CompareMeans(DescrStatsW(B), DescrStatsW(A))
    assert res["confidence_interval"] == pytest.approx(
        list(cm.tconfint_diff(alpha=0.1, usevar=usevar)), rel=1e-8
    )
    assert res["mean_difference"] == pytest.approx(B.mean() - A.mean())


def test_paired_ttest_matches_statsmodels_with_explicit_confidence_level() -> None:
    x, y = A[:20], B[:20]
    res = analyse({"x": x.tolist(), "y": y.tolist()}, tests=["paired"], confidence_level=0.99)
    entry = res["test_results"]["paired_ttest"]
    d = DescrStatsW(y - x)
    t, p, df = d.ttest_mean(0.0)
    assert entry["statistic"] == pytest.approx(t)
    assert entry["p_value"] == pytest.approx(p)
    assert entry["df"] == df == 19
    assert entry["confidence_interval"] == pytest.approx(list(d.tconfint_mean(alpha=0.01)))


# --- two groups: rank tests (exact references by enumeration) --------------------------------


def test_wilcoxon_matches_exact_enumeration() -> None:
    x = np.array([1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06])
    y = np.array([0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14])
    d = y - x
    ranks = np.argsort(np.argsort(np.abs(d))) + 1  # no ties in |d|
    r_plus = ranks[d > 0].sum()
    all_r_plus = np.array(
        [sum(r for r, s in zip(ranks, signs, strict=True) if s) for signs in _all_signs(len(d))]
    )
    p_exact = min(1.0, 2 * min(np.mean(all_r_plus <= r_plus), np.mean(all_r_plus >= r_plus)))
    res = analyse({"x": x.tolist(), "y": y.tolist()}, tests=["wilcoxon"])["test_results"]
    assert res["wilcoxon"]["statistic"] == min(r_plus, ranks.sum() - r_plus) == 3
    assert res["wilcoxon"]["p_value"] == pytest.approx(p_exact)
    # by hand: rank sums <= 3 come from {}, {1}, {2}, {3}, {1, 2}; two-sided p = 2 * 5 / 2**8
    assert res["wilcoxon"]["p_value"] == pytest.approx(10 / 256)
    assert res["wilcoxon"]["significant"] is True


def _all_signs(n: int) -> list[tuple[bool, ...]]:
    """Every assignment of signs to n ranks."""
    return list(itertools.product((False, True), repeat=n))


def test_mann_whitney_matches_exact_enumeration() -> None:
    a = np.array([1.1, 2.3, 0.7, 3.9])
    b = np.array([4.2, 2.9, 5.1, 3.3, 6.0])
    u_b = sum(float(bi > ai) for ai in a for bi in b)
    pooled = np.concatenate([a, b])
    us = []
    for idx in itertools.combinations(range(9), 5):
        bb = pooled[list(idx)]
        aa = np.delete(pooled, list(idx))
        us.append(sum(float(bi > ai) for ai in aa for bi in bb))
    dist = np.array(us)
    p_exact = min(1.0, 2 * min(np.mean(dist <= u_b), np.mean(dist >= u_b)))
    res = analyse({"a": a.tolist(), "b": b.tolist()}, tests=["mwu"])["test_results"]
    entry = res["mann_whitney"]
    assert entry["statistic"] == u_b == 18
    assert entry["p_value"] == pytest.approx(p_exact)
    assert p_exact == pytest.approx(8 / 126)  # 4 of C(9, 4) arrangements in each tail
    assert entry["significant"] is False
    assert set(entry) >= {"statistic", "p_value", "significant", "interpretation"}


# --- k groups ---------------------------------------------------------------------------------


def test_anova_matches_statsmodels_for_two_and_three_groups() -> None:
    c = RNG.normal(12.0, 2.0, 18)
    for data in ([A, B], [A, B, c]):
        groups = {f"g{i}": g.tolist() for i, g in enumerate(data)}
        res = analyse(groups, tests=["one_way_anova"])["test_results"]["anova"]
        ref = anova_oneway(data, use_var="equal")
        assert res["statistic"] == pytest.approx(ref.statistic)
        assert res["p_value"] == pytest.approx(ref.pvalue)
        assert res["df"] == pytest.approx(list(ref.df))
    # with two groups ANOVA's F is the square of Student's t
    two = analyse({"a": A.tolist(), "b": B.tolist()}, tests=["anova", "ttest"])["test_results"]
    assert two["anova"]["statistic"] == pytest.approx(two["ttest"]["statistic"] ** 2)
    assert two["anova"]["p_value"] == pytest.approx(two["ttest"]["p_value"])


def test_kruskal_wallis_matches_hand_computed_h_for_three_groups() -> None:
    groups = {
        "a": [2.9, 3.0, 2.5, 2.6, 3.2],
        "b": [3.8, 2.7, 4.0, 2.4],
        "c": [2.8, 3.4, 3.7, 2.2, 2.0],
    }
    pooled = np.concatenate([np.array(v) for v in groups.values()])
    ranks = np.argsort(np.argsort(pooled)) + 1.0  # no ties
    n_total = pooled.size
    h = 0.0
    start = 0
    for values in groups.values():
        r = ranks[start : start + len(values)]
        h += r.sum() ** 2 / len(values)
        start += len(values)
    h = 12.0 / (n_total * (n_total + 1)) * h - 3 * (n_total + 1)
    res = analyse(groups, tests=["kruskal"])["test_results"]["kruskal_wallis"]
    assert res["statistic"] == pytest.approx(h)
    assert res["df"] == 2
    assert res["p_value"] == pytest.approx(math.exp(-h / 2))  # chi-square sf with 2 df


def test_three_groups_reject_two_group_tests_per_entry() -> None:
    groups = {"c": [5.0, 6.0, 7.0, 6.5], "a": [1.0, 2.0, 1.5, 2.5], "b": [3.0, 2.0, 4.0, 3.5]}
    result = _json_roundtrip(analyse(groups, tests=list(TESTS)))
    assert result["groups"] == ["a", "b", "c"]
    assert result["sample_sizes"] == [4, 4, 4]
    assert "effect_size" not in result
    tr = result["test_results"]
    assert list(tr) == list(TESTS)
    for name in TESTS:
        if name in ("anova", "kruskal_wallis"):
            assert tr[name]["p_value"] < 0.05 and tr[name]["significant"] is True
        else:
            assert tr[name] == {"test": name, "error": "needs exactly two groups"}


# --- every test, errors, significance ----------------------------------------------------------


def test_every_advertised_test_produces_a_p_value_or_bootstrap_ci() -> None:
    result = _json_roundtrip(analyse({"x": A[:25].tolist(), "y": B.tolist()}, tests=list(TESTS)))
    assert result["tests_run"] == list(TESTS)
    for name, entry in result["test_results"].items():
        assert "error" not in entry, (name, entry)
        assert entry["test"] == name
        if name == "bootstrap":
            assert len(entry["difference_ci"]) == 2
        else:
            assert 0.0 <= entry["p_value"] <= 1.0
            assert isinstance(entry["significant"], bool)
            assert isinstance(entry["interpretation"], str)


def test_errors_are_isolated_to_the_failing_test() -> None:
    groups = {"a": [2.0, 2.0, 2.0], "b": [2.0, 2.0, 2.0, 2.0]}
    result = _json_roundtrip(
        analyse(groups, tests=["ttest", "welch", "paired", "anova", "kruskal", "mwu"])
    )
    tr = result["test_results"]
    for name in ("ttest", "welch", "anova", "kruskal_wallis"):
        assert "error" in tr[name] and "p_value" not in tr[name], name
    assert "equal size" in tr["paired_ttest"]["error"]
    assert tr["mann_whitney"]["p_value"] == pytest.approx(1.0)
    assert result["effect_size"] == {
        "type": "cohens_d",
        "error": "pooled standard deviation is zero",
    }


def test_paired_tests_need_equal_sizes() -> None:
    tr = analyse({"a": [1.0, 2.0, 3.0], "b": [2.0, 3.0, 4.5, 5.0]}, tests=["paired", "wilcoxon"])
    for name in ("paired_ttest", "wilcoxon"):
        assert tr["test_results"][name]["error"].startswith(f"{name} needs groups of equal size")


def test_significance_uses_alpha_and_interpretation_bands() -> None:
    # sleep: Welch p = 0.0794, paired p = 0.00283
    loose = analyse(SLEEP, tests=["welch", "paired"], alpha=0.1)["test_results"]
    assert loose["welch"]["significant"] is True
    assert loose["welch"]["interpretation"].startswith("significant")
    assert loose["paired_ttest"]["interpretation"].startswith("very significant")
    strict = analyse(SLEEP, tests=["welch", "paired"], alpha=0.01)["test_results"]
    assert strict["welch"]["significant"] is False
    assert strict["welch"]["interpretation"] == "not significant: p = 0.0794 >= 0.01 (alpha)"
    assert strict["paired_ttest"]["significant"] is True
    assert strict["paired_ttest"]["interpretation"].startswith("significant")
    tight = analyse(SLEEP, tests=["paired"], alpha=0.001)["test_results"]["paired_ttest"]
    assert tight["significant"] is False
    far = analyse({"a": [1.0, 1.1, 0.9, 1.05], "b": [9.0, 9.1, 8.9, 9.2]}, tests=["ttest"])
    assert far["test_results"]["ttest"]["interpretation"].startswith("highly significant")


# --- effect size -------------------------------------------------------------------------------


def test_cohens_d_and_hedges_g_match_hand_computation() -> None:
    n1, n2 = A.size, B.size
    pooled = math.sqrt(((n1 - 1) * A.var(ddof=1) + (n2 - 1) * B.var(ddof=1)) / (n1 + n2 - 2))
    d = (B.mean() - A.mean()) / pooled
    df = n1 + n2 - 2
    j_exact = math.exp(math.lgamma(df / 2) - math.lgamma((df - 1) / 2)) / math.sqrt(df / 2)
    groups = {"a": A.tolist(), "b": B.tolist()}
    es_d = analyse(groups, tests=[])["effect_size"]
    assert es_d["type"] == "cohens_d"
    assert es_d["value"] == pytest.approx(d)
    assert es_d["pooled_sd"] == pytest.approx(pooled)
    assert es_d["mean1"] == pytest.approx(A.mean()) and es_d["mean2"] == pytest.approx(B.mean())
    es_g = analyse(groups, tests=[], effect_size="hedges_g")["effect_size"]
    assert es_g["type"] == "hedges_g"
    assert es_g["value"] == pytest.approx(d * j_exact)
    # the common approximation J = 1 - 3 / (4 df - 1) agrees closely at this size
    assert es_g["value"] == pytest.approx(d * (1 - 3 / (4 * df - 1)), rel=1e-4)
    assert abs(es_g["value"]) < abs(es_d["value"])


def test_effect_size_sign_and_bands() -> None:
    es = analyse(SLEEP, tests=[])["effect_size"]
    assert es["value"] > 0  # mean(drug2) > mean(drug1): same sign as the mean difference
    assert es["interpretation"] == "large"  # d = 0.832
    assert es["value"] == pytest.approx(0.8321, abs=1e-4)
    bands = {0.1: "negligible", 0.3: "small", 0.6: "medium", 1.5: "large"}
    for shift, band in bands.items():
        base = np.array([-1.0, 1.0] * 10)  # pooled sd = sqrt(20/19) for both groups
        sd = math.sqrt(20 / 19)
        es = analyse({"a": base.tolist(), "b": (base - shift * sd).tolist()}, tests=[])
        assert es["effect_size"]["value"] == pytest.approx(-shift)
        assert es["effect_size"]["interpretation"] == band


# --- bootstrap ---------------------------------------------------------------------------------


def test_bootstrap_is_reproducible_and_covers_the_true_difference() -> None:
    rng = np.random.default_rng(7)
    g1, g2 = rng.normal(0.0, 1.0, 100), rng.normal(2.0, 1.0, 100)
    groups = {"g1": g1.tolist(), "g2": g2.tolist()}
    start = time.perf_counter()
    first = analyse(groups, tests=["bootstrap"], seed=42)["test_results"]["bootstrap"]
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0
    again = analyse(groups, tests=["bootstrap"], seed=42)["test_results"]["bootstrap"]
    other = analyse(groups, tests=["bootstrap"], seed=43)["test_results"]["bootstrap"]
    assert first == again
    assert first["difference_ci"] != other["difference_ci"]
    assert first["iterations"] == 10_000 and first["confidence_level"] == pytest.approx(0.95)
    assert first["mean_difference"] == pytest.approx(g2.mean() - g1.mean())
    lo, hi = first["difference_ci"]
    assert 0.0 < lo < 2.0 < hi
    assert lo < first["mean_difference"] < hi
    for key, g in (("group1_ci", g1), ("group2_ci", g2)):
        lo, hi = first[key]
        assert lo < g.mean() < hi
        # the percentile CI of a mean is close to the t interval
        t_lo, t_hi = DescrStatsW(g).tconfint_mean(alpha=0.05)
        assert lo == pytest.approx(t_lo, abs=0.05) and hi == pytest.approx(t_hi, abs=0.05)


def test_bootstrap_options_are_honoured() -> None:
    res = analyse(SLEEP, tests=["bootstrap"], bootstrap_iterations=200, confidence_level=0.8)
    entry = res["test_results"]["bootstrap"]
    assert entry["iterations"] == 200 and entry["confidence_level"] == pytest.approx(0.8)
    bca = analyse(SLEEP, tests=["bootstrap"], bootstrap_method="bca")["test_results"]["bootstrap"]
    assert bca["method"] == "BCa"
    assert bca["difference_ci"][0] < 1.58 < bca["difference_ci"][1]
    tiny = analyse({"a": [1.0], "b": [2.0, 3.0]}, tests=["bootstrap"])
    assert "error" in tiny["test_results"]["bootstrap"]


# --- multiple-comparison correction ----------------------------------------------------------


@pytest.mark.parametrize(("ours", "theirs"), [("holm", "holm"), ("bh", "fdr_bh")])
def test_adjusted_p_values_match_statsmodels(ours: str, theirs: str) -> None:
    ps = [0.01, 0.04, 0.03, 0.005, 0.2, 0.04, 0.5]
    _, ref, _, _ = multipletests(ps, alpha=0.05, method=theirs)
    assert adjust_p_values(ps, ours) == pytest.approx(list(ref))
    assert adjust_p_values(ps, "bonferroni") == pytest.approx([min(1.0, p * 7) for p in ps])
    assert holm([]) == [] and adjust_p_values([], "bh") == []


@pytest.mark.parametrize(("ours", "theirs"), [("holm", "holm"), ("fdr_bh", "fdr_bh")])
def test_correction_is_applied_across_all_p_values(ours: str, theirs: str) -> None:
    tests = ["ttest", "welch", "paired", "wilcoxon", "mwu", "anova", "kruskal", "bootstrap"]
    result = _json_roundtrip(analyse(SLEEP, tests=tests, correction=ours))
    assert result["correction"] == canonical_correction(ours)
    tr = result["test_results"]
    with_p = [name for name in tr if "p_value" in tr[name]]
    assert len(with_p) == 7 and "bootstrap" not in with_p
    raw = [tr[name]["p_value"] for name in with_p]
    reject, ref, _, _ = multipletests(raw, alpha=0.05, method=theirs)
    for name, adjusted, rej in zip(with_p, ref, reject, strict=True):
        assert tr[name]["p_adjusted"] == pytest.approx(adjusted)
        assert tr[name]["significant_adjusted"] is bool(rej)
    assert "p_adjusted" not in tr["bootstrap"]


def test_no_correction_keys_without_correction() -> None:
    tr = analyse(SLEEP, tests=["ttest"])["test_results"]["ttest"]
    assert "p_adjusted" not in tr and "significant_adjusted" not in tr


# --- shape -------------------------------------------------------------------------------------


def test_result_shape_is_plain_json() -> None:
    result = analyse(SLEEP, tests=list(TESTS), correction="holm", effect_size="hedges_g")
    assert _json_roundtrip(result) == result  # no tuples, no numpy scalars, no NaN

    def walk(value: object) -> None:
        if isinstance(value, dict):
            assert all(isinstance(k, str) for k in value)
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        else:
            assert value is None or type(value) in (str, int, float, bool), type(value)

    walk(result)
    assert set(result) == {
        "groups",
        "sample_sizes",
        "alpha",
        "confidence_level",
        "tests_run",
        "correction",
        "test_results",
        "effect_size",
        "group_stats",
    }
    assert result["alpha"] == 0.05 and result["sample_sizes"] == [10, 10]
