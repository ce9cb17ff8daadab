"""The batch slot a run holds, so that a run left only waiting for its store can give it back.

A batch runs at most ``max_concurrency`` runs at once. A run whose stages are done and whose
final record only waits for the database executes nothing: its store observer gives its slot
back (``give_back``) so that the next run starts meanwhile. The slot is held per task in a
context variable, tagged with the run's id, so a run started inside another run's stage never
gives back the outer run's slot.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token

__all__ = ["give_back", "hold", "let_go"]

_HELD: ContextVar[tuple[str, Callable[[], None]] | None] = ContextVar(
    "crucible_batch_slot", default=None
)


def hold(run_id: str, release: Callable[[], None]) -> Token[tuple[str, Callable[[], None]] | None]:
    """Note that this task's run ``run_id`` holds a slot that ``release`` frees (idempotent)."""
    return _HELD.set((run_id, release))


def let_go(token: Token[tuple[str, Callable[[], None]] | None]) -> None:
    """Forget the slot noted by ``hold`` (the caller frees it itself)."""
    _HELD.reset(token)


def give_back(run_id: str) -> None:
    """Free the slot of run ``run_id`` now, if this task's run holds one."""
    held = _HELD.get()
    if held is not None and held[0] == run_id:
        held[1]()
