"""Start the run browser: check the settings and the store, then run uvicorn."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

import uvicorn

from crucible.errors import StoreError
from crucible.store import RunStore
from crucible.ui.app import create_app
from crucible.ui.config import UiError, UiSettings, settings_from

__all__ = ["run_server"]


async def _check_store(url: str | None) -> list[str]:
    """Open the store once, so a bad URL or an unreachable server fails before serving (the
    open replays its journal); the lines to print: the store, and what its journal held."""
    store = RunStore(url)
    before = store.journal_pending()
    try:
        await store.open()
    except StoreError as err:
        raise UiError(f"cannot open the run store: {err}") from err
    finally:
        await store.close()
    lines = [f"  store: {store.url}"]
    left = store.journal_pending()
    if before > left:
        lines.append(f"  replayed {before - left} run record(s) from the journal at "
                     f"{store.journal_dir}")  # fmt: skip
    if left:
        lines.append(f"  warning: {left} run record(s) wait in the journal at {store.journal_dir}"
                     "; the process still writing them writes them itself, or the next "
                     "crucible command that opens this store does")  # fmt: skip
    return lines


def _address(settings: UiSettings) -> str:
    """The URL people open, with an IPv6 host in brackets."""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}/"


def run_server(
    *,
    store_url: str | None,
    host: str,
    port: int,
    token: str | None,
    jaeger_url: str | None,
    artifact_roots: Sequence[str | os.PathLike[str]],
) -> None:
    """Serve until interrupted; UiError when the settings or the store are unusable."""
    settings = settings_from(
        store_url=store_url,
        host=host,
        port=port,
        token=token,
        jaeger_url=jaeger_url,
        artifact_roots=artifact_roots,
    )
    shown = asyncio.run(_check_store(settings.store_url))
    note = " (open it once with ?token=<your token>)" if settings.token else ""
    print(f"crucible ui: {_address(settings)}{note}", *shown, sep="\n", file=sys.stderr, flush=True)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
    )
