"""A batch as a sweep: best point, sorting, the plot it chooses, the CSV export."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

from crucible.ui.queries import PointRow
from crucible.ui.sweep import Sweep, plot, to_csv

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def point(
    i: int, matrix: dict[str, Any], metrics: dict[str, Any], status: str = "completed"
) -> PointRow:
    return PointRow(f"r{i}", "exp", status, T0 + dt.timedelta(seconds=i),
                    T0 + dt.timedelta(seconds=i + 1), matrix, metrics, None)  # fmt: skip


def grid() -> Sweep:
    points = [
        point(0, {"a": 0.1, "b": "x"}, {"score": 1.0, "loss": 0.5, "const": 1}),
        point(1, {"a": 0.2, "b": "x"}, {"score": 3.0, "loss": 0.2, "const": 1}),
        point(2, {"a": 0.1, "b": "y"}, {"score": 2.0, "loss": 0.3, "const": 1}),
        point(3, {"a": 0.2, "b": "y"}, {}, status="failed"),
    ]
    return Sweep.of(points)


def test_parameters_metrics_and_the_best_point() -> None:
    sweep = grid()
    assert sweep.params == ("a", "b")
    assert sweep.metrics == ("const", "loss", "score")
    assert sweep.default_metric() == "loss"  # the first metric that varies
    best_max, best_min = sweep.best("score", "max"), sweep.best("loss", "min")
    assert best_max is not None and best_max.run_id == "r1"
    assert best_min is not None and best_min.run_id == "r1"
    assert sweep.best("missing", "max") is None and sweep.best(None, "max") is None


def test_sorting_keeps_points_without_a_value_last() -> None:
    sweep = grid()
    assert [p.run_id for p in sweep.sorted("metric:score", True)] == ["r1", "r2", "r0", "r3"]
    assert [p.run_id for p in sweep.sorted("metric:score", False)] == ["r0", "r2", "r1", "r3"]
    assert [p.run_id for p in sweep.sorted("param:b", False)][:2] == ["r0", "r1"]
    assert [p.run_id for p in sweep.sorted("started", True)] == ["r3", "r2", "r1", "r0"]


def test_plot_is_lines_up_to_two_parameters_and_parallel_coordinates_beyond() -> None:
    sweep = grid()
    lines = plot(sweep, "score", None, sweep.best("score", "max"))
    assert lines is not None and "chart-line" in lines
    assert lines.count('class="mark"') == 3 and 'class="best"' in lines
    assert "b=x" in lines and "b=y" in lines  # one line per value of the other parameter
    along_b = plot(sweep, "score", "b", None)
    assert along_b is not None and "a=0.1" in along_b
    three = Sweep.of([point(i, {"a": i, "b": i * 2, "c": "k"}, {"m": i}) for i in range(3)])
    parallel = plot(three, "m", None, three.best("m", "max"))
    assert parallel is not None and "chart-parallel" in parallel
    assert parallel.count('class="mark') == 3
    flat = Sweep.of([point(0, {}, {"m": 1})])
    assert plot(flat, "m", None, None) is None


def test_csv_has_every_point_and_quotes_formula_like_text() -> None:
    sweep = Sweep.of([
        point(0, {"a": 1, "tests": ["t", "w"]}, {"m": [1, 2], "note": "=HYPERLINK(1)"}),
        point(1, {"a": 2}, {"neg": -1.5}),
    ])  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(to_csv(sweep))))
    assert [r["run_id"] for r in rows] == ["r0", "r1"]
    assert rows[0]["matrix.tests"] == '["t","w"]' and rows[1]["matrix.tests"] == ""
    assert rows[0]["note"] == "'=HYPERLINK(1)" and rows[1]["neg"] == "-1.5"
    assert rows[0]["m"] == "[1,2]" and rows[0]["duration_s"] == "1.0"


def test_csv_quotes_a_formula_like_metric_name_in_its_header() -> None:
    sweep = Sweep.of([point(0, {"a": 1}, {"=cmd|' /C calc'!A0": 1.0})])
    header = next(csv.reader(io.StringIO(to_csv(sweep))))
    assert header[-1] == "'=cmd|' /C calc'!A0"
