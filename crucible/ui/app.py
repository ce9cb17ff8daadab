"""The run browser as a Starlette app: routes, the store it reads, templates and the gate.

Only GET (and HEAD) routes exist: the browser reads the store and never writes to it. The
store is opened (its tables created if missing) when the app starts and closed when it stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from crucible.errors import StoreError
from crucible.store import RunStore
from crucible.ui import pages, render, run_pages
from crucible.ui.config import UiSettings
from crucible.ui.guard import Guard

__all__ = ["create_app"]

_log = structlog.get_logger("crucible.ui")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    context = {"title": f"{exc.status_code}", "message": exc.detail}
    return render.page(request, "message.html", context, exc.status_code)


async def _store_error(request: Request, exc: Exception) -> Response:
    """The store failed (gone, locked, unreachable): say so instead of a bare 500.

    The database URL and the driver's error go to the server's log, never to the browser.
    """
    assert isinstance(exc, StoreError)
    _log.error("ui.store_failed", path=request.url.path, error=str(exc))
    context = {
        "title": "The run store could not be read",
        "message": "The store is unreachable, locked or damaged; the server's log says why.",
        "store_url": None,
    }
    return render.page(request, "message.html", context, 503)


def create_app(settings: UiSettings) -> Starlette:
    """The app for ``settings``: every page, the static assets and the token/Host gate."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = RunStore(settings.store_url)
        await store.open()
        app.state.store = store
        try:
            yield
        finally:
            await store.close()

    app = Starlette(
        routes=[
            Route("/", pages.runs_page),
            Route("/batches", pages.batches_page),
            Route("/batch", pages.batch_page),
            Route("/batch.csv", pages.batch_csv),
            Route("/run", run_pages.run_page),
            Route("/run.json", run_pages.run_live),
            Route("/artifact", run_pages.artifact),
            Route("/compare", run_pages.compare_page),
            Mount("/static", StaticFiles(packages=[("crucible.ui", "static")]), name="static"),
        ],
        middleware=[Middleware(Guard, token=settings.token, local_only=settings.local_only)],
        exception_handlers={HTTPException: _http_error, StoreError: _store_error},
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app
