"""Run ids as the user types them: a whole id, or its first characters as the tables show them.

An exact id wins; otherwise a prefix of at least ``MIN_PREFIX`` characters that starts exactly
one stored id names that run. A prefix shared by several ids is an error listing a few of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from crucible.cli.app import CliError

if TYPE_CHECKING:
    from crucible.store import RunStore

__all__ = ["MIN_PREFIX", "UnknownRunId", "resolve_run_id", "unknown"]

MIN_PREFIX: Final = 4  # as git abbreviates; the tables show 8
_CANDIDATES: Final = 5


class UnknownRunId(CliError):
    """No stored run has this id, or starts with it."""


def unknown(text: str) -> UnknownRunId:
    """The error for an id no stored run has (or starts with)."""
    short = f" (a short id needs at least {MIN_PREFIX} characters)"
    return UnknownRunId(f"unknown run id {text!r}{short if len(text) < MIN_PREFIX else ''}")


async def resolve_run_id(store: RunStore, text: str) -> str:
    """The stored run id ``text`` names (exactly, else as a unique prefix); CliError if none."""
    if not text:
        raise unknown(text)
    found = await store.find_run_ids(text, limit=_CANDIDATES + 1)  # shortest first
    if text in found:
        return text
    if len(text) < MIN_PREFIX or not found:
        raise unknown(text)
    if len(found) == 1:
        return found[0]
    shown = found[:_CANDIDATES]
    more = " and more" if len(found) > _CANDIDATES else ""
    raise CliError(
        f"run id {text!r} is ambiguous: it starts {len(shown)}{more} stored run ids; "
        "give more of the id",
        lines=shown,
    )
