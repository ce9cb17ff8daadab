"""Statistics core of the ``bench`` stage: pure, synchronous, JSON-safe results.

Conventions:

* Groups are ordered by sorted key; "group1" and "group2" are the first and second of that order.
* Every two-group difference is ``mean(group2) - mean(group1)``: t statistics, their confidence
  intervals, the effect size and the bootstrap difference all share that sign.
* Results hold only ``dict``/``list``/``str``/``int``/``float``/``bool``/``None``; no value is NaN
  or infinite (undefined numbers are ``None``, undefined tests an ``{"error": ...}`` entry).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import special, stats

from stages._stat_names import (
    CORRECTIONS,
    EFFECT_SIZES,
    MULTI_GROUP_TESTS,
    TESTS,
    TWO_GROUP_TESTS,
    canonical_correction,
    canonical_effect_size,
    canonical_test,
    canonical_tests,
    name_key,
)

__all__ = [
    "CORRECTIONS",
    "EFFECT_SIZES",
    "MULTI_GROUP_TESTS",
    "TESTS",
    "TWO_GROUP_TESTS",
    "adjust_p_values",
    "analyse",
    "canonical_correction",
    "canonical_effect_size",
    "canonical_test",
    "canonical_tests",
    "clean_groups",
    "holm",
]

FloatArray = npt.NDArray[np.float64]
Result = dict[str, Any]

_BOOTSTRAP_METHODS: dict[str, str] = {"percentile": "percentile", "bca": "BCa", "basic": "basic"}

# Upper bound on resampled values held in memory at once by one bootstrap batch.
_BOOTSTRAP_BATCH_VALUES = 4_000_000


def _is_number(value: object) -> bool:
    """True for finite real numbers; bools, None, strings and NaN/inf are not data."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        return False
    return math.isfinite(float(value))


def clean_groups(groups: Mapping[str, Sequence[float]]) -> dict[str, FloatArray]:
    """Keep the finite numbers of each group, drop empty groups, order by sorted key."""
    cleaned: dict[str, FloatArray] = {}
    for name in sorted(groups, key=str):
        values = groups[name]
        if isinstance(values, str | bytes) or not isinstance(values, Iterable):
            continue
        numbers_only = [float(v) for v in values if _is_number(v)]
        if numbers_only:
            cleaned[str(name)] = np.asarray(numbers_only, dtype=np.float64)
    return cleaned


def _num(value: Any) -> float | None:
    """A plain float, or ``None`` when the value is missing or not finite."""
    if value is None:
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def _interval(low: Any, high: Any) -> list[float | None]:
    """A confidence interval as a JSON list."""
    return [_num(low), _num(high)]


def _interpret_p(p: float, alpha: float) -> str:
    """Describe a p-value in bands of alpha/100, alpha/10 and alpha."""
    if p < alpha / 100:
        return f"highly significant: p < {alpha / 100:g} (alpha/100)"
    if p < alpha / 10:
        return f"very significant: p < {alpha / 10:g} (alpha/10)"
    if p < alpha:
        return f"significant: p < {alpha:g} (alpha)"
    return f"not significant: p = {p:.4f} >= {alpha:g} (alpha)"


def _interpret_effect(value: float) -> str:
    """Cohen's conventional size bands for |d|: 0.2, 0.5, 0.8."""
    size = abs(value)
    if size < 0.2:
        return "negligible"
    if size < 0.5:
        return "small"
    if size < 0.8:
        return "medium"
    return "large"


class _Undefined(ValueError):
    """The test is not defined for these data (too few values, zero variance, ...)."""


@dataclass(frozen=True)
class _Settings:
    """Options shared by every test of one analysis."""

    alpha: float
    confidence_level: float
    iterations: int
    bootstrap_method: str
    rng: np.random.Generator


def _p_valued(test: str, statistic: Any, p_value: Any, alpha: float) -> Result:
    """Common fields of a test that yields a statistic and a p-value."""
    stat = _num(statistic)
    p = _num(p_value)
    if stat is None or p is None:
        raise _Undefined(f"{test} is undefined for these data (too few values or zero variance)")
    return {
        "test": test,
        "statistic": stat,
        "p_value": p,
        "significant": p < alpha,
        "interpretation": _interpret_p(p, alpha),
    }


def _t_result(test: str, res: Any, diff: float, s: _Settings) -> Result:
    """Fields of a t-test result, including the CI of the mean difference."""
    out = _p_valued(test, res.statistic, res.pvalue, s.alpha)
    ci = res.confidence_interval(confidence_level=s.confidence_level)
    out.update(
        df=_num(res.df),
        mean_difference=diff,
        confidence_interval=_interval(ci.low, ci.high),
        confidence_level=s.confidence_level,
    )
    return out


def _require_spread(*samples: FloatArray) -> None:
    """Raise when no sample varies: t statistics would divide by zero."""
    if all(x.size < 2 or float(np.ptp(x)) == 0.0 for x in samples):
        raise _Undefined("too few values or zero variance within groups")


def _require_same_size(test: str, a: FloatArray, b: FloatArray) -> None:
    """Paired tests match values by position."""
    if a.size != b.size:
        raise _Undefined(f"{test} needs groups of equal size (got {a.size} and {b.size})")


def _ttest(a: FloatArray, b: FloatArray, s: _Settings) -> Result:
    """Student's two-sample t-test (equal variances)."""
    _require_spread(a, b)
    res = stats.ttest_ind(b, a, equal_var=True)
    return _t_result("ttest", res, float(b.mean() - a.mean()), s)


def _welch(a: FloatArray, b: FloatArray, s: _Settings) -> Result:
    """Welch's two-sample t-test (unequal variances)."""
    if a.size < 2 or b.size < 2:
        raise _Undefined("welch needs at least two values per group")
    _require_spread(a, b)
    res = stats.ttest_ind(b, a, equal_var=False)
    return _t_result("welch", res, float(b.mean() - a.mean()), s)


def _paired(a: FloatArray, b: FloatArray, s: _Settings) -> Result:
    """Paired t-test on the differences ``group2[i] - group1[i]``."""
    _require_same_size("paired_ttest", a, b)
    _require_spread(b - a)
    res = stats.ttest_rel(b, a)
    return _t_result("paired_ttest", res, float((b - a).mean()), s)


def _wilcoxon(a: FloatArray, b: FloatArray, s: _Settings) -> Result:
    """Wilcoxon signed-rank test on the differences ``group2[i] - group1[i]``."""
    _require_same_size("wilcoxon", a, b)
    res = stats.wilcoxon(b, a)
    return _p_valued("wilcoxon", res.statistic, res.pvalue, s.alpha)


def _mann_whitney(a: FloatArray, b: FloatArray, s: _Settings) -> Result:
    """Two-sided Mann-Whitney U test; the statistic is U of group2."""
    res = stats.mannwhitneyu(b, a, alternative="two-sided")
    return _p_valued("mann_whitney", res.statistic, res.pvalue, s.alpha)


def _diff_of_means(x: FloatArray, y: FloatArray, axis: int = -1) -> Any:
    """Vectorised bootstrap statistic: ``mean(y) - mean(x)`` along ``axis``."""
    return np.mean(y, axis=axis) - np.mean(x, axis=axis)


def _bootstrap_ci(data: tuple[FloatArray, ...], statistic: Callable[..., Any], s: _Settings) -> Any:
    """Seeded, vectorised, batched ``scipy.stats.bootstrap`` confidence interval."""
    size = sum(x.size for x in data)
    batch = max(1, min(s.iterations, _BOOTSTRAP_BATCH_VALUES // max(size, 1)))
    res = stats.bootstrap(
        data,
        statistic,
        n_resamples=s.iterations,
        batch=batch,
        vectorized=True,
        confidence_level=s.confidence_level,
        method=s.bootstrap_method,
        rng=s.rng,
    )
    return res.confidence_interval


def _bootstrap(a: FloatArray, b: FloatArray, s: _Settings) -> Result:
    """Bootstrap CIs of each group's mean and of ``mean(group2) - mean(group1)``."""
    if a.size < 2 or b.size < 2:
        raise _Undefined("bootstrap needs at least two values per group")
    ci1 = _bootstrap_ci((a,), np.mean, s)
    ci2 = _bootstrap_ci((b,), np.mean, s)
    ci_diff = _bootstrap_ci((a, b), _diff_of_means, s)
    return {
        "test": "bootstrap",
        "group1_ci": _interval(ci1.low, ci1.high),
        "group2_ci": _interval(ci2.low, ci2.high),
        "difference_ci": _interval(ci_diff.low, ci_diff.high),
        "mean_difference": float(b.mean() - a.mean()),
        "iterations": s.iterations,
        "confidence_level": s.confidence_level,
        "method": s.bootstrap_method,
    }


def _anova(samples: Sequence[FloatArray], s: _Settings) -> Result:
    """One-way ANOVA over k >= 2 groups; ``df`` is [between, within]."""
    total = sum(x.size for x in samples)
    if total <= len(samples):
        raise _Undefined("anova needs more values than groups")
    _require_spread(*samples)
    res = stats.f_oneway(*samples)
    out = _p_valued("anova", res.statistic, res.pvalue, s.alpha)
    out["df"] = [len(samples) - 1, total - len(samples)]
    return out


def _kruskal(samples: Sequence[FloatArray], s: _Settings) -> Result:
    """Kruskal-Wallis H test over k >= 2 groups."""
    if float(np.ptp(np.concatenate(samples))) == 0.0:
        raise _Undefined("kruskal_wallis is undefined when all values are identical")
    res = stats.kruskal(*samples)
    out = _p_valued("kruskal_wallis", res.statistic, res.pvalue, s.alpha)
    out["df"] = len(samples) - 1
    return out


_TWO_GROUP: dict[str, Callable[[FloatArray, FloatArray, _Settings], Result]] = {
    "ttest": _ttest,
    "welch": _welch,
    "paired_ttest": _paired,
    "wilcoxon": _wilcoxon,
    "mann_whitney": _mann_whitney,
    "bootstrap": _bootstrap,
}

_MULTI_GROUP: dict[str, Callable[[Sequence[FloatArray], _Settings], Result]] = {
    "anova": _anova,
    "kruskal_wallis": _kruskal,
}


def _run_test(test: str, samples: Sequence[FloatArray], s: _Settings) -> Result:
    """Run one test; any failure becomes that test's ``{"error": ...}`` entry."""
    try:
        with np.errstate(all="ignore"):
            if test in _MULTI_GROUP:
                return _MULTI_GROUP[test](samples, s)
            if len(samples) != 2:
                return {"test": test, "error": "needs exactly two groups"}
            return _TWO_GROUP[test](samples[0], samples[1], s)
    except Exception as exc:  # scipy raises many kinds; isolate them per test
        return {"test": test, "error": str(exc) or type(exc).__name__}


def _effect_size(a: FloatArray, b: FloatArray, kind: str) -> Result:
    """Cohen's d or Hedges' g of ``mean(group2) - mean(group1)`` over the pooled SD."""
    n1, n2 = a.size, b.size
    df = n1 + n2 - 2
    mean1, mean2 = float(a.mean()), float(b.mean())
    if df < 1 or (kind == "hedges_g" and df < 2):
        needed = 3 if kind == "cohens_d" else 4
        return {"type": kind, "error": f"{kind} needs at least {needed} values in total"}
    ss1 = float(np.var(a, ddof=1)) * (n1 - 1) if n1 > 1 else 0.0
    ss2 = float(np.var(b, ddof=1)) * (n2 - 1) if n2 > 1 else 0.0
    pooled_sd = math.sqrt((ss1 + ss2) / df)
    if pooled_sd == 0.0:
        return {"type": kind, "error": "pooled standard deviation is zero"}
    value = (mean2 - mean1) / pooled_sd
    if kind == "hedges_g":
        # Exact small-sample bias correction J(df) = Γ(df/2) / (√(df/2) Γ((df-1)/2)).
        log_j = special.gammaln(df / 2) - special.gammaln((df - 1) / 2) - 0.5 * math.log(df / 2)
        value *= math.exp(log_j)
    return {
        "type": kind,
        "value": value,
        "interpretation": _interpret_effect(value),
        "mean1": mean1,
        "mean2": mean2,
        "pooled_sd": pooled_sd,
    }


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (scipy has no Holm; statsmodels is dev-only)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def adjust_p_values(p_values: Sequence[float], method: str) -> list[float]:
    """Adjust p-values for multiple comparisons with ``holm``, ``bh`` or ``bonferroni``."""
    method = canonical_correction(method) or ""
    if not p_values:
        return []
    if method == "holm":
        return holm(p_values)
    if method == "bh":
        return [float(p) for p in stats.false_discovery_control(list(p_values), method="bh")]
    if method == "bonferroni":
        return [min(1.0, p * len(p_values)) for p in p_values]
    raise ValueError(f"no correction method given; valid: {', '.join(CORRECTIONS)}")


def _apply_correction(results: Iterable[Result], method: str, alpha: float) -> None:
    """Add ``p_adjusted``/``significant_adjusted`` to every p-valued result, across all."""
    with_p = [r for r in results if "p_value" in r]
    for entry, adjusted in zip(
        with_p, adjust_p_values([r["p_value"] for r in with_p], method), strict=True
    ):
        entry["p_adjusted"] = adjusted
        entry["significant_adjusted"] = adjusted < alpha


def _summary(name: str, x: FloatArray, confidence_level: float) -> Result:
    """One group's size, mean, standard deviation and t-based CI of the mean (None for n < 2)."""
    n = int(x.size)
    mean = float(x.mean())
    std: float | None = None
    ci: list[float | None] | None = None
    if n >= 2:
        std = float(np.std(x, ddof=1))
        half = float(stats.t.ppf((1 + confidence_level) / 2, n - 1)) * std / math.sqrt(n)
        ci = _interval(mean - half, mean + half)
    return {"group": name, "n": n, "mean": mean, "std": std, "confidence_interval": ci}


def _describe(name: str, x: FloatArray, confidence_level: float) -> Result:
    """Descriptive statistics of the only group that has data."""
    return {
        **_summary(name, x, confidence_level),
        "confidence_level": confidence_level,
        "tests_skipped": "only one group has data; comparison tests need two or more groups",
    }


def _check_fraction(label: str, value: float) -> float:
    """Validate a probability-like option strictly inside (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"{label} must be a number strictly between 0 and 1, got {value!r}")
    return float(value)


def analyse(
    groups: Mapping[str, Sequence[float]],
    *,
    tests: Sequence[str],
    alpha: float = 0.05,
    confidence_level: float | None = None,
    bootstrap_iterations: int = 10_000,
    correction: str | None = None,
    effect_size: str = "cohens_d",
    seed: int | None = 0,
    bootstrap_method: str = "percentile",
) -> dict[str, Any]:
    """Compare groups of numbers with the requested tests; return a JSON-safe summary.

    Raises ``ValueError`` only for bad options (unknown names, alpha outside (0, 1), ...);
    a test that cannot run on the data reports ``{"error": ...}`` in its own entry.
    """
    canonical = canonical_tests(tests)
    alpha = _check_fraction("alpha", alpha)
    level = _check_fraction(
        "confidence_level", 1 - alpha if confidence_level is None else confidence_level
    )
    method = canonical_correction(correction)
    kind = canonical_effect_size(effect_size)
    boot_method = _BOOTSTRAP_METHODS.get(name_key(bootstrap_method))
    if boot_method is None:
        raise ValueError(f"bootstrap_method must be one of {', '.join(_BOOTSTRAP_METHODS)}")
    if isinstance(bootstrap_iterations, bool) or not isinstance(bootstrap_iterations, int):
        raise ValueError("bootstrap_iterations must be an integer")
    if bootstrap_iterations < 1:
        raise ValueError("bootstrap_iterations must be at least 1")

    data = clean_groups(groups)
    if not data:
        return {"no_data": True}
    names = list(data)
    samples = list(data.values())
    out: dict[str, Any] = {
        "groups": names,
        "sample_sizes": [int(x.size) for x in samples],
        "alpha": alpha,
        "confidence_level": level,
        "tests_run": canonical,
        "correction": method,
        "group_stats": [_summary(n, x, level) for n, x in zip(names, samples, strict=True)],
    }
    if len(samples) == 1:
        out["results"] = _describe(names[0], samples[0], level)
        return out

    settings = _Settings(
        alpha, level, bootstrap_iterations, boot_method, np.random.default_rng(seed)
    )
    results = {test: _run_test(test, samples, settings) for test in canonical}
    if method is not None:
        _apply_correction(results.values(), method, alpha)
    out["test_results"] = results
    if len(samples) == 2:
        with np.errstate(all="ignore"):
            out["effect_size"] = _effect_size(samples[0], samples[1], kind)
    return out
