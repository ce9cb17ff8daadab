"""Charts as inline SVG strings: a stage timeline, metric-vs-parameter lines, parallel
coordinates, and bars with confidence intervals.

Pure functions of plain data (no web framework), so reports can embed the same pictures.
Every data mark has class ``mark`` and a ``<title>`` tooltip; the best point has class ``best``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from crucible.flatten import is_number
from crucible.ui.display import number
from crucible.ui.svg import (
    INK,
    PALETTE,
    RESULT_COLORS,
    Linear,
    Points,
    axis_x,
    axis_y,
    document,
    esc,
    num,
    ramp,
    text,
)

__all__ = [
    "BarCI",
    "Series",
    "TimelineBar",
    "bar_ci",
    "line_chart",
    "parallel_coordinates",
    "timeline",
]

Value = float | str
_HALO = ' stroke="#fff" stroke-width="3" paint-order="stroke"'


@dataclass(frozen=True, slots=True)
class TimelineBar:
    """One stage attempt: its lane (the stage), seconds from the run's start, and its result."""

    lane: str
    start_s: float
    end_s: float
    result: str
    attempt: int = 1
    tooltip: str = ""


def timeline(bars: Sequence[TimelineBar], *, width: int = 1000) -> str:
    """One lane per stage (in first-seen order), one bar per attempt, coloured by result.

    Wider than the other charts: it spans the run page's card, and its bars are its content.
    """
    lanes = list(dict.fromkeys(b.lane for b in bars))
    left, lane_h, top = 150, 26, 8
    bottom = top + lane_h * max(1, len(lanes))
    end = max((b.end_s for b in bars), default=0.0)
    x = Linear.nice([0.0, end], left, width - 16)
    out = axis_x(x, bottom, top, "seconds since the run started")
    for i, lane in enumerate(lanes):
        out.append(text(left - 8, top + lane_h * i + 17, _clip(lane, 22), anchor="end"))
    for b in bars:
        x0, x1 = x(max(0.0, b.start_s)), x(max(b.start_s, b.end_s))
        y = top + lane_h * lanes.index(b.lane) + 5
        colour = RESULT_COLORS.get(b.result, "#999")
        tip = b.tooltip or f"{b.lane}: attempt {b.attempt}, {b.result}"
        out.append(
            f'<rect class="mark" data-result="{esc(b.result)}" x="{num(x0)}" y="{y}" '
            f'width="{num(max(3.0, x1 - x0))}" height="16" rx="3" fill="{colour}">'
            f"<title>{esc(tip)}</title></rect>"
        )
        if b.attempt > 1 and x1 - x0 > 22:
            out.append(text(x0 + 4, y + 12, f"#{b.attempt}", fill="#fff"))
    results = list(dict.fromkeys(b.result for b in bars))
    out += _legend([(r, RESULT_COLORS.get(r, "#999")) for r in results], left, bottom + 44)
    return document(width, bottom + 60, out, label="stage timeline", kind="timeline")


@dataclass(frozen=True, slots=True)
class Series:
    """One line: a name (for the legend) and its (x, y) points; x may be a category."""

    name: str
    points: Sequence[tuple[Value, float]]


def line_chart(
    series: Sequence[Series],
    *,
    x_label: str,
    y_label: str,
    best: tuple[Value, float] | None = None,
    width: int = 760,
    height: int = 340,
) -> str:
    """``y_label`` against ``x_label``: numbers on a linear axis, anything else as categories."""
    xs = [p[0] for s in series for p in s.points]
    legend_w = 150 if len(series) > 1 else 0
    left, right, top, bottom = 70, width - 16 - legend_w, 14, height - 46
    numeric = all(is_number(v) for v in xs)
    xscale: Linear | Points = (
        Linear.nice([float(v) for v in xs], left, right)
        if numeric
        else Points(tuple(dict.fromkeys(str(v) for v in xs)), left, right)
    )
    y = Linear.nice([p[1] for s in series for p in s.points], bottom, top)
    out = axis_x(xscale, bottom, top, x_label) + axis_y(y, left, right, y_label)

    def px(v: Value) -> float:
        return xscale(float(v)) if isinstance(xscale, Linear) else xscale(str(v))

    for i, s in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        pts = sorted(s.points, key=lambda p: px(p[0]))
        if len(pts) > 1:
            path = " ".join(
                f"{'M' if j == 0 else 'L'}{num(px(a))},{num(y(b))}" for j, (a, b) in enumerate(pts)
            )
            out.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for a, b in pts:
            tip = f"{x_label} = {_show(a)}, {y_label} = {number(b)}"
            if len(series) > 1:
                tip = f"{s.name}: {tip}"
            out.append(
                f'<circle class="mark" cx="{num(px(a))}" cy="{num(y(b))}" r="4.5" '
                f'fill="{colour}"><title>{esc(tip)}</title></circle>'
            )
    if best is not None:
        out.append(
            f'<circle class="best" cx="{num(px(best[0]))}" cy="{num(y(best[1]))}" r="9" '
            f'fill="none" stroke="{INK}" stroke-width="2"><title>best: {esc(number(best[1]))}'
            "</title></circle>"
        )
    if legend_w:
        for i, s in enumerate(series):
            colour = PALETTE[i % len(PALETTE)]
            out += _legend([(s.name, colour)], right + 16, top + 14 + 18 * i)
    return document(width, height, out, label=f"{y_label} by {x_label}", kind="line")


def parallel_coordinates(
    axes: Sequence[str],
    rows: Sequence[Sequence[Value | None]],
    *,
    colour_axis: int = -1,
    best: int | None = None,
    width: int = 760,
    height: int = 360,
) -> str:
    """One vertical axis per name, one line per row, coloured by its value on ``colour_axis``.

    Rows missing a value on any axis are left out; ``best`` (a row index) is drawn on top.
    """
    top, bottom, left, right = 34, height - 46, 60, width - 60
    complete = [(i, r) for i, r in enumerate(rows) if all(v is not None for v in r)]
    gap = (right - left) / max(1, len(axes) - 1)
    scales: list[Linear | Points] = []
    out: list[str] = []
    axis_marks: list[str] = []  # drawn over the lines, labels with a white halo
    for k, name in enumerate(axes):
        column = [r[k] for _, r in complete]
        ax = left + gap * k
        numbers = _numbers(column)
        if numbers is not None:
            linear = Linear.nice(numbers, bottom, top)
            scale: Linear | Points = linear
            ticks = [(linear(t), number(t)) for t in linear.ticks()]
        else:
            scale = Points(tuple(dict.fromkeys(str(v) for v in column)), bottom, top)
            ticks = [(scale(c), _clip(c, 14)) for c in scale.categories]
        scales.append(scale)
        axis_marks.append(
            f'<line x1="{num(ax)}" y1="{top}" x2="{num(ax)}" y2="{bottom}" stroke="{INK}"/>'
        )
        axis_marks.append(
            text(ax, top - 14, _clip(name, 20), anchor="middle", extra=' font-weight="600"')
        )
        axis_marks += [text(ax - 5, ty + 4, tl, anchor="end", extra=_HALO) for ty, tl in ticks]
    colours = _colour_values([r[colour_axis] for _, r in complete])
    ordered = sorted(zip(complete, colours, strict=True), key=lambda p: p[0][0] == best)
    for (i, row), colour in ordered:
        pts = [(left + gap * k, _at(scales[k], v)) for k, v in enumerate(row)]
        path = " ".join(
            f"{'M' if j == 0 else 'L'}{num(a)},{num(b)}" for j, (a, b) in enumerate(pts)
        )
        cls, w = ("mark best", "4") if i == best else ("mark", "1.6")
        tip = ", ".join(f"{n} = {_show(v)}" for n, v in zip(axes, row, strict=True))
        out.append(
            f'<path class="{cls}" d="{path}" fill="none" stroke="{colour}" '
            f'stroke-width="{w}" stroke-opacity="0.85"><title>{esc(tip)}</title></path>'
        )
    out += axis_marks
    name = axes[colour_axis] if axes else ""
    out += _legend([(f"low {name}", ramp(0)), (f"high {name}", ramp(1))], left, height - 12)
    return document(width, height, out, label="parallel coordinates", kind="parallel")


@dataclass(frozen=True, slots=True)
class BarCI:
    """One bar: a label, its value and, when known, a confidence interval ``low..high``."""

    label: str
    value: float
    low: float | None = None
    high: float | None = None


def bar_ci(bars: Sequence[BarCI], *, y_label: str = "", width: int = 520, height: int = 320) -> str:
    """Bars from zero with interval whiskers (e.g. group means with their 95 % CIs)."""
    left, right, top, bottom = 70, width - 16, 22, height - 46
    x = Points(tuple(b.label for b in bars), left, right)
    values = [0.0] + [v for b in bars for v in (b.value, b.low, b.high) if v is not None]
    y = Linear.nice(values, bottom, top)
    out = axis_x(x, bottom, top, "") + axis_y(y, left, right, y_label)
    band = (right - left) / max(1, len(bars))
    for i, b in enumerate(bars):
        cx, colour = x(b.label), PALETTE[i % len(PALETTE)]
        y0, y1 = sorted((y(0.0), y(b.value)))
        tip = f"{b.label}: {number(b.value)}"
        if b.low is not None and b.high is not None:
            tip += f" [{number(b.low)}, {number(b.high)}]"
        out.append(
            f'<rect class="mark" x="{num(cx - band * 0.3)}" y="{num(y0)}" '
            f'width="{num(band * 0.6)}" height="{num(max(1.0, y1 - y0))}" fill="{colour}" '
            f'fill-opacity="0.8"><title>{esc(tip)}</title></rect>'
        )
        ends = [y0, y1]
        if b.low is not None and b.high is not None:
            lo, hi = y(b.low), y(b.high)
            out.append(
                f'<path d="M{num(cx)},{num(lo)} L{num(cx)},{num(hi)} M{num(cx - 8)},{num(lo)} '
                f'L{num(cx + 8)},{num(lo)} M{num(cx - 8)},{num(hi)} L{num(cx + 8)},{num(hi)}" '
                f'stroke="{INK}" stroke-width="1.5" fill="none"/>'
            )
            ends += [lo, hi]
        label_y = max(ends) + 15 if b.value < 0 else min(ends) - 6  # outside the bar's end
        out.append(text(cx, label_y, number(b.value), anchor="middle"))
    return document(width, height, out, label=y_label or "bar chart", kind="bars")


def _at(scale: Linear | Points, v: Value | None) -> float:
    if isinstance(scale, Linear):
        return scale(float(v) if is_number(v) else 0.0)
    return scale(str(v))


def _numbers(values: Sequence[Value | None]) -> list[float] | None:
    """The values as floats when every one is a number (and there is one), else None."""
    nums = [float(v) for v in values if is_number(v)]
    return nums if nums and len(nums) == len(values) else None


def _colour_values(values: Sequence[Value | None]) -> list[str]:
    nums = _numbers(values)
    if nums is not None:
        lo, hi = min(nums), max(nums)
        return [ramp((v - lo) / (hi - lo) if hi > lo else 0.5) for v in nums]
    cats = list(dict.fromkeys(str(v) for v in values))
    return [PALETTE[cats.index(str(v)) % len(PALETTE)] for v in values]


def _legend(entries: Sequence[tuple[str, str]], x: float, y: float) -> list[str]:
    out = []
    for name, colour in entries:
        out.append(
            f'<rect x="{num(x)}" y="{num(y - 10)}" width="12" height="12" rx="2" fill="{colour}"/>'
        )
        out.append(text(x + 17, y, _clip(name, 24)))
        x += 30 + 7 * min(24, len(name))
    return out


def _show(v: Value | None) -> str:
    return number(v) if is_number(v) else str(v)


def _clip(label: str, most: int) -> str:
    return label if len(label) <= most else label[: most - 1] + "…"
