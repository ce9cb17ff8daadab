"""One-line summaries of the built-in stages' results: what a person should read first.

``bench`` and ``data_checks`` store the line in their metric under ``"headline"`` (the
convention of :mod:`crucible.headline`), so the CLI, the reports and ``crucible ui`` show the
same text without knowing either stage. Pure functions of the JSON-safe results; no numpy or
scipy, so anything can import this module cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["bench_headline", "data_checks_headline", "format_p"]

TEST_LABELS: dict[str, str] = {
    "ttest": "Student t",
    "welch": "Welch",
    "paired_ttest": "paired t",
    "wilcoxon": "Wilcoxon",
    "mann_whitney": "Mann-Whitney",
    "anova": "ANOVA",
    "kruskal_wallis": "Kruskal-Wallis",
    "bootstrap": "bootstrap",
}
_STATISTIC: dict[str, str] = {"anova": "F", "kruskal_wallis": "H"}
_CORRECTIONS: dict[str, str] = {"holm": "Holm", "bh": "BH", "bonferroni": "Bonferroni"}
_EFFECTS: dict[str, str] = {"cohens_d": "Cohen's d", "hedges_g": "Hedges g"}
_MINUS = "\u2212"  # a real minus sign (U+2212) between the group names
_FLAGGED_SHOWN = 3


def _real(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _sig(x: float, digits: int = 3) -> str:
    """``x`` to ``digits`` significant digits, never in exponent form for everyday sizes."""
    if x == 0:
        return "0"
    if 1e-4 <= abs(x) < 1e6:
        decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
        return f"{x:.{decimals}f}"
    return f"{x:.{digits - 1}e}"


def format_p(p: float) -> str:
    """``p = 0.024``, ``p = 0.31``, ``p < 0.001``."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def _level(result: Mapping[str, Any]) -> str:
    level = _real(result.get("confidence_level"))
    return f"{level * 100:g} %" if level is not None else "95 %"


def _interval(value: Any) -> tuple[float, float] | None:
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        low, high = _real(value[0]), _real(value[1])
        if low is not None and high is not None:
            return low, high
    return None


def _tests(result: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """The test results in the order they were asked for."""
    found = result.get("test_results")
    if not isinstance(found, Mapping):
        return []
    order = [t for t in result.get("tests_run") or [] if t in found]
    order += [t for t in found if t not in order]
    return [(t, found[t]) for t in order if isinstance(found[t], Mapping)]


def _p_text(test: Mapping[str, Any], correction: Any) -> str:
    """The test's p-value, the adjusted one when a correction was applied."""
    adjusted = _real(test.get("p_adjusted"))
    if adjusted is not None:
        how = _CORRECTIONS.get(str(correction), str(correction or "adjusted"))
        return f"{format_p(adjusted)} ({how})"
    return format_p(float(test["p_value"]))


def _difference(
    result: Mapping[str, Any], tests: list[tuple[str, Mapping[str, Any]]], primary: str | None
) -> tuple[float | None, tuple[float, float] | None, str]:
    """The difference of means, its interval and what kind of interval it is."""
    ordered = sorted(tests, key=lambda kv: kv[0] != primary)  # the primary test's CI first
    diff = next((d for _, t in ordered if (d := _real(t.get("mean_difference"))) is not None), None)
    for _, test in ordered:
        ci = _interval(test.get("confidence_interval"))
        if ci is not None:
            return diff, ci, "CI"
    for name, test in ordered:
        ci = _interval(test.get("difference_ci"))
        if name == "bootstrap" and ci is not None:
            return diff, ci, "bootstrap CI"
    means = _group_means(result)
    if diff is None and len(means) == 2:
        diff = means[1][1] - means[0][1]
    return diff, None, ""


def _two_groups(result: Mapping[str, Any], names: Sequence[str]) -> str:
    tests = _tests(result)
    with_p = [(n, t) for n, t in tests if _real(t.get("p_value")) is not None]
    primary = with_p[0][0] if with_p else None
    diff, ci, ci_kind = _difference(result, tests, primary)
    parts = []
    head = f"{names[1]} {_MINUS} {names[0]}"
    if diff is None:
        parts.append(f"{head}: no difference computed")
    elif ci is not None:
        width = abs(ci[1] - ci[0])
        decimals = min(12, max(0, 2 - math.floor(math.log10(width)))) if width > 0 else 3
        shown = [f"{v:.{decimals}f}" for v in (diff, *ci)]
        parts.append(f"{head} = {shown[0]}")
        parts.append(f"{_level(result)} {ci_kind} [{shown[1]}, {shown[2]}]")
    else:
        parts.append(f"{head} = {_sig(diff)}")
    if primary is not None:
        p_text = _p_text(with_p[0][1], result.get("correction"))
        parts.append(f"{TEST_LABELS.get(primary, primary)} {p_text}")
    else:
        failed = next(((n, t["error"]) for n, t in tests if t.get("error")), None)
        if failed is not None:
            parts.append(f"{TEST_LABELS.get(failed[0], failed[0])}: {failed[1]}")
    effect = result.get("effect_size")
    if isinstance(effect, Mapping) and _real(effect.get("value")) is not None:
        label = _EFFECTS.get(str(effect.get("type")), str(effect.get("type")))
        size = f" ({effect['interpretation']})" if effect.get("interpretation") else ""
        parts.append(f"{label} = {float(effect['value']):.2f}{size}")
    return ", ".join(parts)


def _group_means(result: Mapping[str, Any]) -> list[tuple[str, float]]:
    stats = result.get("group_stats")
    if not isinstance(stats, Sequence):
        return []
    out = []
    for entry in stats:
        if isinstance(entry, Mapping) and (mean := _real(entry.get("mean"))) is not None:
            out.append((str(entry.get("group")), mean))
    return out


def _many_groups(result: Mapping[str, Any], names: Sequence[str]) -> str:
    tests = [(n, t) for n, t in _tests(result) if n in _STATISTIC]
    with_p = [(n, t) for n, t in tests if _real(t.get("p_value")) is not None]
    parts = []
    if with_p:
        name, test = with_p[0]
        stat = f"{_STATISTIC[name]} = {_sig(float(test['statistic']))}"
        p_text = _p_text(test, result.get("correction"))
        parts.append(f"{TEST_LABELS[name]} across {len(names)} groups: {stat}, {p_text}")
    elif tests:
        parts.append(f"{len(names)} groups: {TEST_LABELS[tests[0][0]]}: {tests[0][1].get('error')}")
    else:
        parts.append(f"{len(names)} groups: no multi-group test ran (use anova or kruskal_wallis)")
    means = _group_means(result)
    if means:
        best, mean = max(means, key=lambda gm: gm[1])
        parts.append(f"highest mean {best} = {_sig(mean)}")
    return ", ".join(parts)


def _one_group(result: Mapping[str, Any]) -> str:
    one = result.get("results")
    one = one if isinstance(one, Mapping) else {}
    mean = _real(one.get("mean"))
    text = f"{one.get('group', '?')}: mean = {_sig(mean) if mean is not None else '?'}"
    ci = _interval(one.get("confidence_interval"))
    if ci is not None:
        text += f", {_level(result)} CI [{_sig(ci[0])}, {_sig(ci[1])}]"
    return text + f", n = {one.get('n', '?')} (one group: nothing to compare)"


def bench_headline(result: Mapping[str, Any]) -> str:
    """The bench result in one line, e.g. ``candidate \u2212 baseline = 0.077, 95 % CI [0.011,
    0.142], Welch p = 0.024, Hedges g = 1.07 (large)``: ``group2 - group1`` (sorted names), the
    first test asked for, the effect size.
    """
    if result.get("no_data"):
        return f"no numeric data to compare (data_source {result.get('data_source', '?')})"
    names = [str(n) for n in result.get("groups") or []]
    if len(names) == 2:
        return _two_groups(result, names)
    if len(names) > 2:
        return _many_groups(result, names)
    return _one_group(result)


def _flag_text(entry: Mapping[str, Any]) -> str:
    where = f"#{entry.get('index', '?')}"
    if entry.get("id") is not None:
        where += f" (id {entry['id']})"
    missing = entry.get("missing")
    if isinstance(missing, list) and missing:
        return f"{where} missing {', '.join(map(str, missing))}"
    why = entry.get("error") or entry.get("issue")
    return f"{where} {why}" if why else where


def data_checks_headline(metric: Mapping[str, Any]) -> str:
    """``1 of 20 examples flagged: #7 missing output`` or ``all 20 examples have input, output``."""
    total = metric.get("total", 0)
    flagged_n = metric.get("missing_required", 0)
    if not flagged_n:
        fields = ", ".join(map(str, metric.get("required_fields") or [])) or "required fields"
        return f"all {total} examples have {fields}" if total != 1 else f"the example has {fields}"
    flagged = [f for f in metric.get("flagged") or [] if isinstance(f, Mapping)]
    shown = "; ".join(_flag_text(f) for f in flagged[:_FLAGGED_SHOWN])
    more = flagged_n - min(len(flagged), _FLAGGED_SHOWN)
    if more > 0:
        shown += f"; {more} more" if shown else f"{more} issues"
    return f"{flagged_n} of {total} examples flagged: {shown}"
