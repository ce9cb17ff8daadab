"""Reading a page's query parameters: blanks are absent, bad values are a 400 naming the field.

Every value is bounded (:data:`MAX_VALUE_CHARS`), a repeated parameter holds at most
:data:`MAX_REPEATED` values (the metric columns a table can show, the runs compare can set side
by side), and :class:`~crucible.ui.guard.Guard` refuses a request target longer than
:data:`MAX_TARGET_BYTES`, so no URL makes a page grow without bound.
"""

from __future__ import annotations

import unicodedata
from typing import Final

from starlette.exceptions import HTTPException
from starlette.requests import Request

from crucible.store import RunStore

__all__ = [
    "MAX_REPEATED",
    "MAX_TARGET_BYTES",
    "MAX_VALUE_CHARS",
    "check_metric",
    "metric_names",
    "number",
    "store_of",
    "text",
    "texts",
]

MAX_VALUE_CHARS: Final = 256  # ids are at most 255 characters in the store
MAX_REPEATED: Final = 20  # metric columns, or runs to compare
MAX_TARGET_BYTES: Final = 8192  # path and query string, as sent (percent-encoded)


def store_of(request: Request) -> RunStore:
    """The store the app opened at startup."""
    store: RunStore = request.app.state.store
    return store


def _values(request: Request, name: str) -> list[str]:
    """Every value of ``name``, stripped; a 400 when one is too long or holds a NUL."""
    values = [v.strip() for v in request.query_params.getlist(name)]
    for value in values:
        if len(value) > MAX_VALUE_CHARS:
            raise HTTPException(400, f"{name} is too long: at most {MAX_VALUE_CHARS} characters")
        if "\x00" in value:
            raise HTTPException(400, f"{name} cannot hold a NUL character")
    return values


def text(request: Request, name: str) -> str | None:
    """One parameter (the last given), stripped; None when missing or blank."""
    values = _values(request, name)
    return (values[-1] if values else "") or None


def _bounded(name: str, values: list[str]) -> list[str]:
    distinct = list(dict.fromkeys(v for v in values if v))
    if len(distinct) > MAX_REPEATED:
        raise HTTPException(
            400, f"too many {name} values: at most {MAX_REPEATED}, got {len(distinct)}"
        )
    return distinct


def texts(request: Request, name: str) -> list[str]:
    """Every value of a repeated parameter, stripped, blanks and repeats dropped, in order."""
    return _bounded(name, _values(request, name))


def check_metric(name: str, key: str) -> str:
    """``key`` when a store can look it up as a metric; a 400 naming parameter ``name`` if not."""
    bad = next((c for c in key if c in '"\\' or unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        raise HTTPException(
            400,
            f"{name}: a metric name cannot hold {bad!r} "
            "(no control characters, double quotes or backslashes)",
        )
    return key


def metric_names(request: Request, name: str = "metric") -> list[str]:
    """Metric columns from ``?metric=a&metric=b`` or ``?metric=a,b``."""
    parts = [p.strip() for v in _values(request, name) for p in v.split(",")]
    return [check_metric(name, p) for p in _bounded(name, parts)]


def number(request: Request, name: str, default: int) -> int:
    """An integer parameter; a 400 naming it when it is not one."""
    raw = text(request, name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise HTTPException(400, f"{name} must be a whole number, got {raw!r}") from None
