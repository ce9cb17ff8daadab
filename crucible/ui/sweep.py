"""A batch seen as a sweep: one row per matrix point, the best point, its plot and its CSV.

Pure functions over :class:`~crucible.ui.queries.PointRow`; the page only arranges them.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from crucible.flatten import is_number
from crucible.ui.charts import Series, line_chart, parallel_coordinates
from crucible.ui.queries import PointRow

__all__ = ["Direction", "Sweep", "plain", "plot", "to_csv"]

Direction = Literal["max", "min"]
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def plain(value: Any) -> float | str:
    """A parameter value for axes and sorting: a number, or its compact JSON text."""
    if is_number(value):
        return value
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _sort_key(value: Any) -> tuple[int, float | str]:
    if is_number(value):
        return (0, float(value))
    if value is None:
        return (2, "")
    return (1, str(plain(value)))


@dataclass(frozen=True, slots=True)
class Sweep:
    """The runs of one batch with the parameters they vary and the numeric metrics they have."""

    points: tuple[PointRow, ...]
    params: tuple[str, ...]
    metrics: tuple[str, ...]

    @classmethod
    def of(cls, points: Sequence[PointRow]) -> Sweep:
        params = sorted({k for p in points for k in p.matrix})
        metrics = sorted({k for p in points for k, v in p.metrics.items() if is_number(v)})
        return cls(tuple(points), tuple(params), tuple(metrics))

    def default_metric(self) -> str | None:
        """The first numeric metric whose value differs between points, else the first one."""
        for key in self.metrics:
            if len({p.metrics.get(key) for p in self.points if key in p.metrics}) > 1:
                return key
        return self.metrics[0] if self.metrics else None

    def best(self, metric: str | None, direction: Direction) -> PointRow | None:
        """The point with the highest (``max``) or lowest (``min``) value of ``metric``."""
        scored = [p for p in self.points if metric is not None and is_number(p.metrics.get(metric))]
        if not scored:
            return None
        pick = max if direction == "max" else min
        return pick(scored, key=lambda p: float(p.metrics[str(metric)]))

    def sorted(self, key: str, descending: bool) -> list[PointRow]:
        """Points sorted by ``param:NAME``, ``metric:NAME``, ``status`` or start time."""
        kind, _, name = key.partition(":")

        def of(p: PointRow) -> Any:
            if kind == "param":
                return p.matrix.get(name)
            if kind == "metric":
                return p.metrics.get(name)
            return p.status if kind == "status" else p.started_at.timestamp()

        present = [p for p in self.points if of(p) is not None]
        absent = [p for p in self.points if of(p) is None]  # last, whatever the direction
        return sorted(present, key=lambda p: _sort_key(of(p)), reverse=descending) + absent


def plot(sweep: Sweep, metric: str, x_param: str | None, best: PointRow | None) -> str | None:
    """``metric`` against the parameters: a line per other-parameter value for one or two
    parameters, parallel coordinates for more; None without parameters or values."""
    scored = [p for p in sweep.points if is_number(p.metrics.get(metric))]
    if not sweep.params or not scored:
        return None
    if len(sweep.params) > 2:
        axes = [*sweep.params, metric]
        rows = [
            [
                *(plain(p.matrix[k]) if k in p.matrix else None for k in sweep.params),
                float(p.metrics[metric]),
            ]
            for p in scored
        ]
        at = scored.index(best) if best in scored else None
        return parallel_coordinates(axes, rows, best=at)
    x = x_param if x_param in sweep.params else _first_numeric(sweep, scored)
    others = [k for k in sweep.params if k != x]
    groups: dict[str, list[tuple[float | str, float]]] = {}
    for p in scored:
        if x not in p.matrix:
            continue
        name = ", ".join(f"{k}={plain(p.matrix.get(k))}" for k in others) or metric
        groups.setdefault(name, []).append((plain(p.matrix[x]), float(p.metrics[metric])))
    mark = None
    if best is not None and x in best.matrix:
        mark = (plain(best.matrix[x]), float(best.metrics[metric]))
    series = [Series(name, pts) for name, pts in groups.items()]
    return line_chart(series, x_label=x, y_label=metric, best=mark)


def _first_numeric(sweep: Sweep, points: Sequence[PointRow]) -> str:
    for key in sweep.params:
        if all(is_number(p.matrix.get(key)) for p in points):
            return key
    return sweep.params[0]


def to_csv(sweep: Sweep) -> str:
    """Every point: ids, status, duration, each parameter (``matrix.<key>``, as ``crucible batch
    --export`` writes it, so a metric of the same name never collides) and each metric."""
    metric_keys = sorted({k for p in sweep.points for k in p.metrics})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "run_id",
            "experiment_id",
            "status",
            "started_at",
            "duration_s",
            *(f"matrix.{k}" for k in sweep.params),
            *(_cell(k) for k in metric_keys),  # a metric's name is the run's text too
        ]
    )
    for p in sweep.points:
        took = (p.finished_at - p.started_at).total_seconds() if p.finished_at else ""
        ids = (p.run_id, p.experiment_id, p.status, p.started_at.isoformat(), took)
        writer.writerow(
            [_cell(v) for v in ids]
            + [_cell(p.matrix.get(k, "")) for k in sweep.params]
            + [_cell(p.metrics.get(k, "")) for k in metric_keys]
        )
    return out.getvalue()


def _cell(value: Any) -> Any:
    """A CSV cell; text that a spreadsheet would run as a formula is quoted with ``'``."""
    if is_number(value):
        return value
    text = plain(value) if value is not None else ""
    text = str(text)
    return "'" + text if text.startswith(_FORMULA_START) else text
