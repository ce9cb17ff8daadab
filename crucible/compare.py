"""Compare stored runs: what differs in their configuration and their metrics, as plain data.

``crucible ui``'s compare page and ``crucible runs diff`` both show :func:`diff_runs`, so they
can never disagree. Configurations come from :func:`run_configuration`, the one place that
decides what a run "ran with".
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from crucible.flatten import flatten, flatten_configuration, is_number
from crucible.store.records import ExperimentInfo, RunInfo

__all__ = ["DiffRow", "RunDiff", "RunHead", "diff_runs", "run_configuration", "run_versions"]


def run_configuration(info: RunInfo, experiment: ExperimentInfo | None) -> dict[str, Any]:
    """The experiment definition ``info`` ran with (secrets already redacted by the store).

    Runs record their own resolved experiment (after ``--set`` and the matrix point). Runs
    stored before that only have the experiment's latest definition: this takes that and
    applies the run's matrix point (``assigns["matrix"]``), the way a sweep made it.
    """
    if info.config is not None:
        return dict(info.config)
    definition: dict[str, Any] = (
        dict(experiment.definition) if experiment is not None else {"id": info.experiment_id}
    )
    point = info.assigns.get("matrix")
    if isinstance(point, Mapping) and isinstance(definition.get("pipeline"), list):
        definition["pipeline"] = [_with_point(sd, point) for sd in definition["pipeline"]]
    return definition


def run_versions(info: RunInfo) -> dict[str, Any]:
    """What a run ran with besides its configuration: package versions and the git commit."""
    found: dict[str, Any] = dict(info.versions or {})
    if info.git_commit is not None:
        found["git.commit"] = info.git_commit
    if info.git_dirty is not None:
        found["git.dirty"] = info.git_dirty
    return found


def _with_point(stage_def: Any, point: Mapping[str, Any]) -> Any:
    if not isinstance(stage_def, Mapping):
        return stage_def
    options = dict(stage_def.get("options") or {})
    for key, value in point.items():
        stage_name, _, option = str(key).partition(".")
        if stage_name == stage_def.get("name") and option:
            options[option] = value
    return {**stage_def, "options": options or stage_def.get("options")}


@dataclass(frozen=True, slots=True)
class RunHead:
    """Who a compared run is: ids, status, timing and its failure, if any."""

    run_id: str
    experiment_id: str
    status: str
    batch_id: str | None
    started_at: str
    duration_s: float | None
    failure: str | None


@dataclass(frozen=True, slots=True)
class DiffRow:
    """One option or metric across the runs.

    ``values`` maps run id to value (a run without it is absent); ``deltas`` maps every other
    run's id to its value minus the first run's, where both are numbers.
    """

    key: str
    values: Mapping[str, Any]
    deltas: Mapping[str, float]
    differs: bool


@dataclass(frozen=True, slots=True)
class RunDiff:
    """Runs side by side: the first is the baseline every delta is taken against."""

    runs: tuple[RunHead, ...]
    configuration: tuple[DiffRow, ...]  # only the options that differ
    metrics: tuple[DiffRow, ...]  # every metric, differing or not
    versions: tuple[DiffRow, ...] = ()  # only the packages (and git state) that differ

    @property
    def status_differs(self) -> bool:
        return len({r.status for r in self.runs}) > 1

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready data (what ``runs diff --json`` prints)."""
        return {
            "runs": [asdict(r) for r in self.runs],
            "status_differs": self.status_differs,
            "configuration": [_row_dict(r) for r in self.configuration],
            "versions": [_row_dict(r) for r in self.versions],
            "metrics": [_row_dict(r) for r in self.metrics],
        }


def _row_dict(row: DiffRow) -> dict[str, Any]:
    return {
        "key": row.key,
        "values": dict(row.values),
        "deltas": dict(row.deltas),
        "differs": row.differs,
    }


def diff_runs(runs: Sequence[RunInfo], configurations: Sequence[Mapping[str, Any]]) -> RunDiff:
    """Compare two or more runs, each with its configuration (see :func:`run_configuration`).

    Options are flattened (``bench.alpha``, ``bench:retries``, ``outputs[0].formats``) and
    only differing ones are kept; so are versions (:func:`run_versions`); metrics are
    flattened (``bench.ttest.p_value``) and all kept.
    """
    if len(runs) != len(configurations):
        raise ValueError(f"{len(runs)} runs but {len(configurations)} configurations")
    ids = [r.run_id for r in runs]
    if len(ids) < 2 or len(set(ids)) != len(ids):
        raise ValueError(f"diff_runs needs two or more distinct runs, got {ids}")
    config_rows = _rows(ids, [flatten_configuration(c) for c in configurations])
    metric_rows = _rows(ids, [flatten(r.metrics) for r in runs])
    version_rows = _rows(ids, [run_versions(r) for r in runs])
    return RunDiff(
        runs=tuple(_head(r) for r in runs),
        configuration=tuple(row for row in config_rows if row.differs),
        metrics=tuple(metric_rows),
        versions=tuple(row for row in version_rows if row.differs),
    )


def _head(info: RunInfo) -> RunHead:
    failure = None
    if info.failure_stage or info.failure_message:
        where = f"stage {info.failure_stage}: " if info.failure_stage else ""
        failure = f"{where}{info.error_type or 'error'}: {info.failure_message or ''}".strip()
    return RunHead(
        run_id=info.run_id,
        experiment_id=info.experiment_id,
        status=info.status,
        batch_id=info.batch_id,
        started_at=info.started_at.isoformat(),
        duration_s=info.duration_s,
        failure=failure,
    )


def _rows(ids: Sequence[str], flat: Sequence[Mapping[str, Any]]) -> list[DiffRow]:
    keys = sorted({k for f in flat for k in f})
    rows = []
    for key in keys:
        values = {rid: f[key] for rid, f in zip(ids, flat, strict=True) if key in f}
        canon = {_canonical(f[key]) if key in f else None for f in flat}
        rows.append(DiffRow(key, values, _deltas(ids, values), len(canon) > 1))
    return rows


def _deltas(ids: Sequence[str], values: Mapping[str, Any]) -> dict[str, float]:
    base = values.get(ids[0])
    if not is_number(base):
        return {}
    out: dict[str, float] = {}
    for rid in ids[1:]:
        value = values.get(rid)
        if is_number(value) and math.isfinite(value - base):
            out[rid] = value - base
    return out


def _canonical(value: Any) -> tuple[str, Any]:
    """Equal-if-the-same-value: 1 == 1.0 (options widen ints), but True is not 1."""
    if is_number(value):
        return ("number", float(value))
    return ("json", json.dumps(value, sort_keys=True, default=str))
