"""Compare two stored runs: configuration option by option, versions, status, every metric.

``diff_runs(a, b)`` is pure: it reads two :class:`~crucible.store.RunInfo` records and returns
a :class:`RunDiff`. Its ``to_dict()`` is what ``crucible runs diff A B --json`` prints::

    {"a": "run-a", "b": "run-b",
     "status": {"a": "completed", "b": "failed", "same": false},
     "config": [{"path": "bench.alpha", "a": 0.05, "b": 0.01, "change": "changed"}],
     "versions": [{"path": "git.commit", "a": "3f2c...", "b": "9a01...", "change": "changed"}],
     "metrics": [{"name": "accuracy", "a": 0.9, "b": 0.93, "change": "changed",
                  "difference": 0.03}]}

``config`` and ``versions`` list only what differs; ``metrics`` lists every metric of either
run. ``change`` is ``changed``, ``added`` (only in b), ``removed`` (only in a) or, for metrics,
``same``; the missing side is ``null``. ``difference`` is ``b - a`` when both are numbers.
Paths: a stage's option is ``STAGE.OPTION`` as ``--set`` takes it (``bench.alpha``), or
``pipeline[2].options.alpha`` when the name is not unique; a stage's other fields are
``pipeline[bench].timeout``; the stage names in order are ``pipeline``; other experiment fields
by their path (``dataset.name``). Nested mappings flatten with dots; lists are compared whole.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from crucible.experiment import Experiment

if TYPE_CHECKING:
    from crucible.store import RunInfo

__all__ = ["Change", "MetricRow", "RunDiff", "diff_runs", "flatten_config"]

_MISSING: Final = object()
_EXPERIMENT_FIELDS: Final = frozenset(Experiment.model_fields)


@dataclass(frozen=True, slots=True)
class Change:
    """One configuration or version value that differs between run a and run b."""

    path: str
    a: Any
    b: Any
    change: str


@dataclass(frozen=True, slots=True)
class MetricRow:
    """One metric side by side; ``difference`` is ``b - a`` when both are numbers."""

    name: str
    a: Any
    b: Any
    change: str
    difference: float | None


@dataclass(frozen=True, slots=True)
class RunDiff:
    """What differs between two runs (see the module docstring for the data shape)."""

    a: str
    b: str
    status_a: str
    status_b: str
    config: tuple[Change, ...]
    versions: tuple[Change, ...]
    metrics: tuple[MetricRow, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready data."""
        return {
            "a": self.a,
            "b": self.b,
            "status": {
                "a": self.status_a,
                "b": self.status_b,
                "same": self.status_a == self.status_b,
            },
            "config": [dataclasses.asdict(c) for c in self.config],
            "versions": [dataclasses.asdict(c) for c in self.versions],
            "metrics": [dataclasses.asdict(m) for m in self.metrics],
        }


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping) and value:
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}", out)
    else:
        out[prefix] = value


def _flat(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{dotted.path: leaf}`` of a mapping, each path starting with ``prefix.`` if given."""
    out: dict[str, Any] = {}
    for k, v in mapping.items():
        _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    return out


def flatten_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A stored configuration as ``{path: value}`` with the paths the diff uses."""
    out: dict[str, Any] = {}
    pipeline = [sd for sd in config.get("pipeline") or [] if isinstance(sd, Mapping)]
    counts = Counter(str(sd.get("name")) for sd in pipeline)
    out["pipeline"] = [sd.get("name") for sd in pipeline]
    for i, sd in enumerate(pipeline):
        name = str(sd.get("name"))
        unique = counts[name] == 1 and name not in _EXPERIMENT_FIELDS and name != "pipeline"
        for key, value in sd.items():
            if key == "options":
                out.update(_flat(value or {}, name if unique else f"pipeline[{i}].options"))
            elif key != "name":
                out[f"pipeline[{name if unique else i}].{key}"] = value
    out.update(_flat({k: v for k, v in config.items() if k != "pipeline"}))
    return out


def _changes(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[Change, ...]:
    found = []
    for path in _union(a, b):
        va, vb = a.get(path, _MISSING), b.get(path, _MISSING)
        if va is _MISSING:
            found.append(Change(path, None, vb, "added"))
        elif vb is _MISSING:
            found.append(Change(path, va, None, "removed"))
        elif va != vb or type(va) is not type(vb):
            found.append(Change(path, va, vb, "changed"))
    return tuple(found)


def _union(a: Iterable[str], b: Iterable[str]) -> list[str]:
    return list(dict.fromkeys([*a, *b]))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _metric_rows(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[MetricRow, ...]:
    rows = []
    for name in _union(a, b):
        va, vb = a.get(name, _MISSING), b.get(name, _MISSING)
        if va is _MISSING:
            rows.append(MetricRow(name, None, vb, "added", None))
            continue
        if vb is _MISSING:
            rows.append(MetricRow(name, va, None, "removed", None))
            continue
        diff = vb - va if _number(va) and _number(vb) else None
        rows.append(MetricRow(name, va, vb, "same" if va == vb else "changed", diff))
    return tuple(rows)


def _versions(info: RunInfo) -> dict[str, Any]:
    found: dict[str, Any] = dict(info.versions or {})
    if info.git_commit is not None:
        found["git.commit"] = info.git_commit
        found["git.dirty"] = info.git_dirty
    return found


def diff_runs(a: RunInfo, b: RunInfo) -> RunDiff:
    """What differs between stored runs ``a`` and ``b`` (a pure function of the two records)."""
    return RunDiff(
        a=a.run_id,
        b=b.run_id,
        status_a=a.status,
        status_b=b.status,
        config=_changes(flatten_config(a.config or {}), flatten_config(b.config or {})),
        versions=_changes(_versions(a), _versions(b)),
        metrics=_metric_rows(_flat(a.metrics), _flat(b.metrics)),
    )
