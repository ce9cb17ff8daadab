"""Pages from the package's Jinja templates: autoescaped, strict about undefined names.

Every template gets ``link(...)`` (the current URL with some query keys changed) and the
display filters (``show``, ``full``, ``duration``, ``when``, ``short``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from crucible.status import RunStatus
from crucible.ui import display

__all__ = ["fragment", "page"]

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("crucible.ui", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters.update(
    show=display.value,
    full=display.full_value,
    duration=display.duration,
    when=display.when,
    short=display.short_id,
    signed=display.signed,
)
_ENV.globals["statuses"] = [s.value for s in RunStatus]


def url(path: str, **query: Any) -> str:
    """``path`` with a fresh query string (None values left out)."""
    items = {k: str(v) for k, v in query.items() if v is not None}
    return path + ("?" + urlencode(items) if items else "")


_ENV.globals["url"] = url


def fragment(request: Request, template: str, context: Mapping[str, Any]) -> str:
    """``template`` rendered to a string, with the request's helpers (``context`` may override
    ``store_url``, the header's store, with None to leave it out)."""
    helpers = {
        "request": request,
        "link": _linker(request),
        "store_url": request.app.state.store.url,
    }
    return utf8_safe(_ENV.get_template(template).render({**helpers, **context}))


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def utf8_safe(text: str) -> str:
    """``text`` with each lone surrogate (stored text may hold one; UTF-8 cannot) as U+FFFD."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def page(
    request: Request, template: str, context: Mapping[str, Any], status: int = 200
) -> HTMLResponse:
    """``template`` as an HTML response."""
    return HTMLResponse(fragment(request, template, context), status_code=status)


def _linker(request: Request) -> Any:
    """``link(path, page=2, sort=None)``: the current query with some keys changed or dropped."""

    def link(path: str | None = None, **changes: Any) -> str:
        items = [(k, v) for k, v in request.query_params.multi_items() if k not in changes]
        for key, value in changes.items():
            values = value if isinstance(value, list | tuple) else [value]
            items += [(key, str(v)) for v in values if v is not None and v != ""]
        query = urlencode(items)
        return (path or request.url.path) + (f"?{query}" if query else "")

    return link
