"""The SVG charts: well-formed, one mark per datum, text escaped, the best point marked."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from crucible.ui.charts import (
    BarCI,
    Series,
    TimelineBar,
    bar_ci,
    line_chart,
    parallel_coordinates,
    timeline,
)
from crucible.ui.display import duration, full_value, number, short_id, signed, value
from crucible.ui.svg import Linear

NS = "{http://www.w3.org/2000/svg}"
HOSTILE = "<script>alert(1)</script>"


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{NS}svg"
    assert "style" not in svg  # presentation attributes only: passes a strict CSP
    return root


def marks(root: ET.Element) -> list[ET.Element]:
    return [e for e in root.iter() if "mark" in (e.get("class") or "").split()]


def texts(root: ET.Element) -> list[str]:
    return [e.text or "" for e in root.iter(f"{NS}text")] + [
        e.text or "" for e in root.iter(f"{NS}title")
    ]


def test_timeline_draws_one_bar_per_attempt_coloured_by_result() -> None:
    bars = [
        TimelineBar("0 load", 0.0, 0.2, "success"),
        TimelineBar(f"1 {HOSTILE}", 0.2, 0.5, "failure", 1, f"boom {HOSTILE}"),
        TimelineBar(f"1 {HOSTILE}", 0.9, 1.4, "success", 2),
        TimelineBar("2 report", 1.4, 1.4, "success"),  # instant: still visible
    ]
    root = parse(timeline(bars))
    rects = marks(root)
    assert [r.get("data-result") for r in rects] == ["success", "failure", "success", "success"]
    assert rects[1].get("fill") != rects[0].get("fill")
    assert all(float(r.get("width") or 0) >= 3 for r in rects)
    ys = [float(r.get("y") or 0) for r in rects]
    assert ys[1] == ys[2] and ys[0] < ys[1] < ys[3]  # retries share their stage's lane
    assert float(rects[2].get("x") or 0) > float(rects[1].get("x") or 0)
    assert f"boom {HOSTILE}" in texts(root)  # escaped in the markup, exact as text
    assert "#2" in texts(root)


def test_line_chart_numeric_and_categorical_with_best_point() -> None:
    series = [Series("depth=1", [(0.1, 1.0), (0.3, 2.0), (0.2, 1.5)]),
              Series("depth=2", [(0.1, 2.0), (0.2, 2.5), (0.3, 3.0)])]  # fmt: skip
    root = parse(line_chart(series, x_label="alpha", y_label=HOSTILE, best=(0.3, 3.0)))
    assert len(marks(root)) == 6
    best = [e for e in root.iter() if e.get("class") == "best"]
    assert len(best) == 1
    top = min(float(m.get("cy") or 0) for m in marks(root))
    assert float(best[0].get("cy") or 0) == top  # the highest value is at the top
    assert HOSTILE in texts(root) and "depth=2" in texts(root)
    cats = parse(line_chart([Series("s", [("a", 1.0), ("b", 3.0)])], x_label="k", y_label="m"))
    assert len(marks(cats)) == 2 and {"a", "b"} <= set(texts(cats))


def test_parallel_coordinates_one_line_per_complete_row() -> None:
    rows = [[0.1, "plain", 1, 0.5], [0.3, "fancy", 3, 0.9], [0.2, None, 2, 0.7]]
    root = parse(parallel_coordinates(["alpha", "kind", "depth", "<i>m</i>"], rows, best=1))
    lines = marks(root)
    assert len(lines) == 2  # the row missing "kind" is left out
    assert "best" in (lines[-1].get("class") or "")  # drawn last, on top
    assert {"alpha", "kind", "depth", "<i>m</i>", "plain", "fancy"} <= set(texts(root))
    assert "alpha = 0.3, kind = fancy, depth = 3, <i>m</i> = 0.9" in texts(root)


def test_bar_ci_draws_bars_with_whiskers() -> None:
    bars = [BarCI("baseline", 0.61, 0.55, 0.67), BarCI("candidate", -0.2), BarCI(HOSTILE, 0.7)]
    root = parse(bar_ci(bars, y_label="mean score"))
    rects = marks(root)
    assert len(rects) == 3
    assert "baseline: 0.61 [0.55, 0.67]" in texts(root) and f"{HOSTILE}: 0.7" in texts(root)
    whiskers = [p for p in root.iter(f"{NS}path") if p.get("stroke")]
    assert len(whiskers) == 1


def test_empty_charts_still_render() -> None:
    for svg in (timeline([]), line_chart([], x_label="x", y_label="y"),
                parallel_coordinates(["a"], []), bar_ci([])):  # fmt: skip
        assert marks(parse(svg)) == []


@pytest.mark.parametrize(
    ("values", "lo", "hi", "ticks"),
    [([0.0, 2.3], 0.0, 2.5, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]),
     ([0.55, 0.7], 0.55, 0.7, [0.55, 0.6, 0.65, 0.7]),
     ([-3.0, 12.0], -5.0, 15.0, [-5.0, 0.0, 5.0, 10.0, 15.0]),
     ([5.0, 5.0], 4.4, 5.6, [4.4, 4.6, 4.8, 5.0, 5.2, 5.4, 5.6])],
)  # fmt: skip
def test_scales_end_on_round_ticks(
    values: list[float], lo: float, hi: float, ticks: list[float]
) -> None:
    scale = Linear.nice(values, 0, 100)
    assert (scale.lo, scale.hi) == pytest.approx((lo, hi))
    assert scale.ticks() == pytest.approx(ticks)
    assert scale(scale.lo) == 0 and scale(scale.hi) == 100


def test_display_rounds_for_reading_and_keeps_the_full_value() -> None:
    assert number(0.07669999999999999) == "0.0767"
    assert number(1234.5678) == "1235" and number(12.3456) == "12.35" and number(3.0) == "3"
    assert number(2.5e-7) == "2.500e-07" and number(12_345_678.0) == "1.235e+07"
    assert number(7) == "7" and number(float("nan")) == "nan"
    assert full_value(0.07669999999999999) == "0.07669999999999999"
    assert value(True) == "true" and value(None) == "null" and value([1, "a"]) == '[1, "a"]'
    assert value("x" * 500).endswith("…") and len(value("x" * 500)) == 120
    assert signed(0.5) == "+0.5" and signed(-3) == "-3" and signed(0) == "0"
    assert (
        duration(0.00042) == "0.4 ms" and duration(0.25) == "250 ms" and duration(3.21) == "3.2 s"
    )
    assert duration(245) == "4 min 05 s" and duration(7380) == "2 h 03 min"
    assert short_id("0123456789abcdef0123") == "01234567…" and short_id("short-id") == "short-id"
