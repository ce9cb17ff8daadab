"""Run-browser fixtures: stores filled by real runs, and the app served over real HTTP."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from crucible.store import RunStore
from crucible.ui.app import create_app
from crucible.ui.config import UiSettings
from tests.store.conftest import pg_database, store_url
from tests.ui.fill import Filled, fill

__all__ = ["pg_database", "store_url"]  # the store tests' SQLite/PostgreSQL fixtures


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def served(settings: UiSettings) -> Iterator[str]:
    """Serve the app for ``settings`` with uvicorn on 127.0.0.1 (its own thread and event
    loop, as a separate server process would have); yield its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="crucible-ui-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive(), "the UI server stopped during startup"
        assert time.monotonic() < deadline, "the UI server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture
async def filled(tmp_path: Path) -> tuple[Path, Filled]:
    """A SQLite store (``tmp_path/runs.db``) filled by real runs; reports under ``tmp_path``."""
    db = tmp_path / "runs.db"
    async with RunStore(db) as store:
        ids = await fill(store, tmp_path)
    return db, ids


@pytest.fixture
async def client(filled: tuple[Path, Filled], tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the app over the filled store, artifacts allowed under ``tmp_path``."""
    db, _ = filled
    settings = UiSettings(
        store_url=str(db), port=0, artifact_roots=(tmp_path,)
    )  # pytest resolves tmp_path
    with served(settings) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            yield http
