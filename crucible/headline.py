"""The headline convention: a metric's one-line result, shown first wherever a run is shown.

A stage that wants its result read at a glance stores a string under ``"headline"`` in its
metric mapping (``metrics["bench"]["headline"]``, flattened ``bench.headline``). The CLI run
summary, the reports and ``crucible ui`` list these lines before anything else; the engine
knows no stage, so this key is the whole contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["HEADLINE_KEY", "headlines", "is_headline_key"]

HEADLINE_KEY: Final = "headline"


def headlines(metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(metric name, line)`` for every top-level metric mapping with a string headline."""
    out: list[tuple[str, str]] = []
    for name, value in metrics.items():
        if isinstance(value, Mapping):
            line = value.get(HEADLINE_KEY)
            if isinstance(line, str) and line.strip():
                out.append((str(name), line))
    return out


def is_headline_key(flat_key: str) -> bool:
    """True for a flattened ``<metric>.headline`` key (already shown as a headline)."""
    name, dot, leaf = flat_key.partition(".")
    return bool(name) and dot == "." and leaf == HEADLINE_KEY
