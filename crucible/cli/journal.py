"""Tell the user when run records are waiting in the store's local journal, or were replayed."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from crucible.cli.output import warn

if TYPE_CHECKING:
    from crucible.store import RunStore


def _records(n: int) -> str:
    return f"{n} run record{'s' if n != 1 else ''}"


def warn_if_journaled(store: RunStore) -> None:
    """A stderr note when records wait in the journal (the database was unreachable)."""
    waiting = store.journal_pending()
    if waiting:
        warn(
            f"warning: {_records(waiting)} could not reach "
            f"{store.url} and wait in the journal at {store.journal_dir}; they are written "
            "the next time a crucible command opens this store while the database is reachable"
        )


def report_journal(store: RunStore, before: int) -> None:
    """After a read command used ``store``: what its open replayed, and what still waits."""
    left = store.journal_pending()
    if before > left:
        warn(f"note: replayed {_records(before - left)} from the journal at {store.journal_dir} "
             f"into {store.url}")  # fmt: skip
    if left:
        warn(
            f"warning: {_records(left)} wait in the journal at {store.journal_dir} for "
            f"{store.url}; they are written the next time a crucible command opens this store "
            "while the database is reachable (crucible runs list does), or by the process "
            "still writing them"
        )


@asynccontextmanager
async def reading(url: str | os.PathLike[str] | None) -> AsyncIterator[RunStore]:
    """The store for a read command: its first use opens it (replaying the journal), and
    afterwards the command says what was replayed and what still waits."""
    from crucible.store import RunStore

    store = RunStore(url)
    before = store.journal_pending()
    try:
        yield store
    finally:
        await store.close()
        report_journal(store, before)
