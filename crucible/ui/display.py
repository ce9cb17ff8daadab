"""How values read on a page: rounded numbers (the full value kept for hover and copy), times.

Pure functions, used as template filters and by the CSV export's neighbours; none of them
escapes (the templates do).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any, Final

from crucible.flatten import is_number

__all__ = ["duration", "full_value", "number", "short_id", "signed", "value", "when"]

_SIGNIFICANT: Final = 4
_MAX_TEXT: Final = 120
MISSING: Final = "\u2013"  # an en dash: no value


def number(x: float) -> str:
    """A number rounded for reading: 4 significant digits (0.0767, 1235, 2.500e-07)."""
    if isinstance(x, int):
        return str(x)
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(x)))
    if magnitude >= 6 or magnitude < -4:
        return f"{x:.{_SIGNIFICANT - 1}e}"
    digits = max(0, _SIGNIFICANT - 1 - magnitude)
    text = f"{x:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def signed(x: float) -> str:
    """A difference with its sign: ``+0.077``, ``-3``, ``0``."""
    return ("+" if x > 0 else "") + number(x)


def value(v: Any) -> str:
    """Any stored value as short text: numbers rounded, containers as compact JSON, cut long."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if is_number(v):
        return number(v)
    text = v if isinstance(v, str) else json.dumps(v, separators=(", ", ": "), default=str)
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def full_value(v: Any) -> str:
    """The exact value, for a title or the clipboard: floats in full (repr), the rest as JSON."""
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return v
    return json.dumps(v, default=str)


def duration(seconds: float | None) -> str:
    """Seconds as ``0.4 ms``, ``850 ms``, ``3.2 s``, ``4 min 05 s`` or ``2 h 03 min``.

    MISSING when unknown (a run still running).
    """
    if seconds is None:
        return MISSING
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def when(moment: dt.datetime | None) -> str:
    """A UTC time to the second; ``MISSING`` when unset."""
    if moment is None:
        return MISSING
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def short_id(run_id: str | None, keep: int = 8) -> str:
    """A long id cut to its first ``keep`` characters (the page keeps the full id in a title)."""
    if run_id is None:
        return MISSING
    return run_id if len(run_id) <= keep + 4 else run_id[:keep] + "…"
