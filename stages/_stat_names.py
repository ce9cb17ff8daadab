"""The names the ``bench`` stage accepts: tests, corrections, effect sizes and their aliases.

Kept apart from the statistics so that option validation needs neither numpy nor scipy.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "CORRECTIONS",
    "EFFECT_SIZES",
    "MULTI_GROUP_TESTS",
    "TESTS",
    "TWO_GROUP_TESTS",
    "canonical_correction",
    "canonical_effect_size",
    "canonical_test",
    "canonical_tests",
    "name_key",
]

TESTS: tuple[str, ...] = (
    "ttest",
    "welch",
    "paired_ttest",
    "wilcoxon",
    "mann_whitney",
    "anova",
    "kruskal_wallis",
    "bootstrap",
)
"""Canonical test names, in the order they are documented."""

MULTI_GROUP_TESTS: frozenset[str] = frozenset({"anova", "kruskal_wallis"})
"""Tests that accept any number (>= 2) of groups."""

TWO_GROUP_TESTS: frozenset[str] = frozenset(TESTS) - MULTI_GROUP_TESTS
"""Tests that need exactly two groups."""

_TEST_ALIASES: dict[str, str] = {
    "ttest": "ttest",
    "t_test": "ttest",
    "student": "ttest",
    "student_t": "ttest",
    "welch": "welch",
    "welch_ttest": "welch",
    "welch_t_test": "welch",
    "paired_ttest": "paired_ttest",
    "paired_t_test": "paired_ttest",
    "paired": "paired_ttest",
    "wilcoxon": "wilcoxon",
    "wilcoxon_signed_rank": "wilcoxon",
    "mann_whitney": "mann_whitney",
    "mannwhitney": "mann_whitney",
    "mann_whitney_u": "mann_whitney",
    "mwu": "mann_whitney",
    "anova": "anova",
    "one_way_anova": "anova",
    "oneway_anova": "anova",
    "kruskal_wallis": "kruskal_wallis",
    "kruskal": "kruskal_wallis",
    "bootstrap": "bootstrap",
}

CORRECTIONS: tuple[str, ...] = ("holm", "bh", "bonferroni")
"""Canonical multiple-comparison corrections."""

_CORRECTION_ALIASES: dict[str, str] = {
    "holm": "holm",
    "bh": "bh",
    "fdr_bh": "bh",
    "benjamini_hochberg": "bh",
    "bonferroni": "bonferroni",
}

EFFECT_SIZES: tuple[str, ...] = ("cohens_d", "hedges_g")
"""Canonical effect-size measures."""

_EFFECT_ALIASES: dict[str, str] = {
    "cohens_d": "cohens_d",
    "cohen_d": "cohens_d",
    "hedges_g": "hedges_g",
    "hedge_g": "hedges_g",
}


def name_key(name: str) -> str:
    """Normalise a user-written name: case, spaces and dashes do not matter."""
    return name.strip().lower().replace("-", "_").replace(" ", "_").replace("'", "")


def canonical_test(name: str) -> str:
    """Map a test name or alias to its canonical name; raise ``ValueError`` if unknown."""
    found = _TEST_ALIASES.get(name_key(name)) if isinstance(name, str) else None
    if found is None:
        raise ValueError(
            f"unknown statistical test {name!r}; valid tests: {', '.join(TESTS)} "
            f"(aliases: {', '.join(sorted(k for k in _TEST_ALIASES if k not in TESTS))})"
        )
    return found


def canonical_tests(names: Iterable[str] | str) -> list[str]:
    """Canonicalise a list of test names, dropping duplicates but keeping order."""
    items = [names] if isinstance(names, str) else list(names)
    return list(dict.fromkeys(canonical_test(n) for n in items))


def canonical_correction(name: str | None) -> str | None:
    """Map a correction name to ``holm``/``bh``/``bonferroni`` (``None``/``"none"`` -> ``None``)."""
    if name is None or (isinstance(name, str) and name_key(name) in ("", "none")):
        return None
    found = _CORRECTION_ALIASES.get(name_key(name)) if isinstance(name, str) else None
    if found is None:
        raise ValueError(
            f"unknown multiple-comparison correction {name!r}; valid: {', '.join(CORRECTIONS)}, "
            "fdr_bh, or None"
        )
    return found


def canonical_effect_size(name: str) -> str:
    """Map an effect-size name to ``cohens_d`` or ``hedges_g``."""
    found = _EFFECT_ALIASES.get(name_key(name)) if isinstance(name, str) else None
    if found is None:
        raise ValueError(f"unknown effect size {name!r}; valid: {', '.join(EFFECT_SIZES)}")
    return found
