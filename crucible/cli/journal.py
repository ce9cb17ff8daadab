"""Tell the user when run records are waiting in the store's local journal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from crucible.cli.output import warn

if TYPE_CHECKING:
    from crucible.store import RunStore


def warn_if_journaled(store: RunStore) -> None:
    """A stderr note when records wait in the journal (the database was unreachable)."""
    waiting = store.journal_pending()
    if waiting:
        warn(
            f"warning: {waiting} run record{'s' if waiting != 1 else ''} could not reach "
            f"{store.url} and wait in the journal at {store.journal_dir}; they are written "
            "the next time a crucible command opens this store while the database is reachable"
        )
