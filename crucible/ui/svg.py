"""SVG building blocks for the charts: escaping, scales with readable ticks, axes, colours.

Everything returns markup strings; every piece of text and every attribute value goes through
:func:`esc`. Styling is done with presentation attributes only (no ``style``), so the charts
need no stylesheet and pass a strict Content-Security-Policy.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from crucible.ui.display import number

__all__ = [
    "FONT",
    "PALETTE",
    "RESULT_COLORS",
    "Linear",
    "Points",
    "axis_x",
    "axis_y",
    "document",
    "esc",
    "ramp",
    "text",
]

FONT: Final = 'font-family="system-ui, -apple-system, Segoe UI, sans-serif" font-size="12"'
INK: Final = "#333"
_HALF_CHAR: Final = 3.6  # half the width of a 12 px character, roughly (digits are ~6.7 px)
_RIGHT_ROOM: Final = 14  # of the 16 px every chart leaves right of its plot
GRID: Final = "#e4e4e4"
PALETTE: Final = (
    "#1f6fb4",
    "#d1495b",
    "#2e9e5b",
    "#8d5fc2",
    "#e8871e",
    "#1aa3b8",
    "#8c564b",
    "#c2478f",
)
RESULT_COLORS: Final = {
    "success": "#2e9e5b",
    "failure": "#d1495b",
    "error": "#d1495b",
    "timeout": "#e8871e",
    "cancellation": "#7d7d7d",
    "skip": "#c4c4c4",
    "running": "#4a90d9",  # the stage a live run is in (see run_pages.running_bar)
}
_RAMP: Final = ((59, 15, 112), (31, 158, 137), (216, 168, 10))


def esc(value: object) -> str:
    """Text or an attribute value, safe inside SVG embedded in HTML."""
    return html.escape(str(value), quote=True)


def num(x: float) -> str:
    """A coordinate with two decimals at most."""
    return f"{x:.2f}".rstrip("0").rstrip(".")


def text(
    x: float, y: float, content: object, *, anchor: str = "start", fill: str = INK, extra: str = ""
) -> str:
    """A text element at (x, y); ``extra`` holds further (trusted, constant) attributes."""
    return (
        f'<text x="{num(x)}" y="{num(y)}" text-anchor="{anchor}" fill="{fill}"{extra}>'
        f"{esc(content)}</text>"
    )


def document(width: int, height: int, body: Sequence[str], *, label: str, kind: str) -> str:
    """The ``<svg>`` element: sized, labelled for screen readers, fonts set once."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-{esc(kind)}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{esc(label)}" {FONT}>' + "".join(body) + "</svg>"
    )


def ramp(t: float) -> str:
    """A colour from dark violet (0) through teal to amber (1), for a value's place in a range."""
    t = min(1.0, max(0.0, t)) * (len(_RAMP) - 1)
    i = min(int(t), len(_RAMP) - 2)
    f = t - i
    rgb = (round(a + (b - a) * f) for a, b in zip(_RAMP[i], _RAMP[i + 1], strict=True))
    return "#" + "".join(f"{c:02x}" for c in rgb)


@dataclass(frozen=True, slots=True)
class Linear:
    """A linear map from data ``lo..hi`` to pixels ``a..b``, with ticks at round numbers."""

    lo: float
    hi: float
    a: float
    b: float
    step: float

    @classmethod
    def nice(cls, values: Sequence[float], a: float, b: float, *, count: int = 5) -> Linear:
        """A scale covering ``values`` whose ends fall on ticks."""
        finite = [v for v in values if math.isfinite(v)] or [0.0]
        lo, hi = min(finite), max(finite)
        if lo == hi:
            pad = abs(lo) * 0.1 or 1.0
            lo, hi = lo - pad, hi + pad
        step = _step((hi - lo) / count)
        return cls(math.floor(lo / step) * step, math.ceil(hi / step) * step, a, b, step)

    def __call__(self, v: float) -> float:
        return self.a + (v - self.lo) / (self.hi - self.lo) * (self.b - self.a)

    def ticks(self) -> list[float]:
        n = round((self.hi - self.lo) / self.step)
        digits = max(0, 1 - math.floor(math.log10(self.step)))
        return [round(self.lo + i * self.step, digits) for i in range(n + 1)]


def _step(raw: float) -> float:
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5):
        if raw <= m * magnitude:
            return m * magnitude
    return 10 * magnitude


@dataclass(frozen=True, slots=True)
class Points:
    """Categories at evenly spaced positions between pixels ``a`` and ``b`` (inset half a step)."""

    categories: tuple[str, ...]
    a: float
    b: float

    def __call__(self, category: str) -> float:
        i = self.categories.index(category)
        width = (self.b - self.a) / max(1, len(self.categories))
        return self.a + width * (i + 0.5)


def axis_x(scale: Linear | Points, y: float, top: float, label: str) -> list[str]:
    """Ticks, grid lines and labels along the bottom at ``y``, titled ``label``."""
    out = [
        f'<line x1="{num(scale.a)}" y1="{num(y)}" x2="{num(scale.b)}" y2="{num(y)}" '
        f'stroke="{INK}"/>'
    ]
    for x, tick in _ticks(scale):
        out.append(
            f'<line x1="{num(x)}" y1="{num(top)}" x2="{num(x)}" y2="{num(y)}" stroke="{GRID}"/>'
        )
        # A label centred on a tick at the right end would run past the chart's edge (charts
        # leave 16 px there): such a label ends at its tick instead.
        wide = x + len(tick) * _HALF_CHAR > scale.b + _RIGHT_ROOM
        out.append(text(x, y + 16, tick, anchor="end" if wide else "middle"))
    if not label:
        return out
    out.append(
        text((scale.a + scale.b) / 2, y + 34, label, anchor="middle", extra=' font-weight="600"')
    )
    return out


def axis_y(scale: Linear, x: float, right: float, label: str) -> list[str]:
    """Ticks, grid lines and labels up the left side at ``x``, titled ``label``."""
    out = [
        f'<line x1="{num(x)}" y1="{num(scale.a)}" x2="{num(x)}" y2="{num(scale.b)}" '
        f'stroke="{INK}"/>'
    ]
    for y, tick in _ticks(scale):
        out.append(
            f'<line x1="{num(x)}" y1="{num(y)}" x2="{num(right)}" y2="{num(y)}" stroke="{GRID}"/>'
        )
        out.append(text(x - 6, y + 4, tick, anchor="end"))
    if not label:
        return out
    mid = (scale.a + scale.b) / 2
    out.append(
        text(
            14,
            mid,
            label,
            anchor="middle",
            extra=f' font-weight="600" transform="rotate(-90 14 {num(mid)})"',
        )
    )
    return out


def _ticks(scale: Linear | Points) -> list[tuple[float, str]]:
    if isinstance(scale, Points):
        return [(scale(c), _clip(c)) for c in scale.categories]
    return [(scale(t), number(t)) for t in scale.ticks()]


def _clip(label: str, most: int = 18) -> str:
    return label if len(label) <= most else label[: most - 1] + "…"
