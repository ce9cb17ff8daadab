"""Reading a page's query parameters: blanks are absent, bad numbers are a 400 naming the field."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request

from crucible.store import RunStore

__all__ = ["metric_names", "number", "store_of", "text", "texts"]


def store_of(request: Request) -> RunStore:
    """The store the app opened at startup."""
    store: RunStore = request.app.state.store
    return store


def text(request: Request, name: str) -> str | None:
    """One parameter, stripped; None when missing or blank."""
    value = request.query_params.get(name, "").strip()
    return value or None


def texts(request: Request, name: str) -> list[str]:
    """Every value of a repeated parameter, stripped, blanks and repeats dropped, in order."""
    values = (v.strip() for v in request.query_params.getlist(name))
    return list(dict.fromkeys(v for v in values if v))


def metric_names(request: Request, name: str = "metric") -> list[str]:
    """Metric columns from ``?metric=a&metric=b`` or ``?metric=a,b``."""
    parts = (p.strip() for v in request.query_params.getlist(name) for p in v.split(","))
    return list(dict.fromkeys(p for p in parts if p))


def number(request: Request, name: str, default: int) -> int:
    """An integer parameter; a 400 naming it when it is not one."""
    raw = text(request, name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise HTTPException(400, f"{name} must be a whole number, got {raw!r}") from None
