"""A batch's slots: ``max_concurrency`` for runs executing stages, more for runs settling.

A run whose stages are done and whose final record only waits for the database executes
nothing: its store observer gives its slot back (``give_back``) so that the next run starts
meanwhile, and a commit's latency no longer idles the batch. Runs settle that way while fewer
than ``ALIVE`` runs are alive in all; beyond that a run waits in its slot as before (more live
runs would cost the collector more than the latency they hide). The slot is held per task in a
context variable, tagged with the run's id, so a run started inside another run's stage never
gives back the outer run's slot.
"""

from __future__ import annotations

from contextvars import ContextVar, Token

import anyio

__all__ = ["ALIVE", "Slot", "Slots", "give_back", "hold", "let_go"]

ALIVE = 512  # runs alive at once, settling ones included


class Slots:
    """``total`` places for running runs, and up to ``alive - total`` for runs settling."""

    def __init__(self, total: int, alive: int = ALIVE) -> None:
        self.limiter = anyio.CapacityLimiter(total)
        self.settle_cap = max(0, alive - total)
        self.settling = 0

    def slot(self) -> Slot:
        return Slot(self)


class Slot:
    """One run's place: taken, then freed once (early by ``settle``, or at the run's end)."""

    __slots__ = ("_held", "_settling", "_slots")

    def __init__(self, slots: Slots) -> None:
        self._slots = slots
        self._held = False
        self._settling = False

    async def take(self) -> None:
        await self._slots.limiter.acquire_on_behalf_of(self)
        self._held = True

    def settle(self) -> None:
        """Free the place for the next run while this one only waits, if the cap allows."""
        slots = self._slots
        if self._held and slots.settling < slots.settle_cap:
            self._held, self._settling = False, True
            slots.settling += 1
            slots.limiter.release_on_behalf_of(self)

    def free(self) -> None:
        """The run is over: free its place (or its settling place)."""
        if self._settling:
            self._settling = False
            self._slots.settling -= 1
        if self._held:
            self._held = False
            self._slots.limiter.release_on_behalf_of(self)


_HELD: ContextVar[tuple[str, Slot] | None] = ContextVar("crucible_batch_slot", default=None)


def hold(run_id: str, slot: Slot) -> Token[tuple[str, Slot] | None]:
    """Note that this task's run ``run_id`` holds ``slot``."""
    return _HELD.set((run_id, slot))


def let_go(token: Token[tuple[str, Slot] | None]) -> None:
    """Forget the slot noted by ``hold`` (the caller frees it itself)."""
    _HELD.reset(token)


def give_back(run_id: str) -> None:
    """Run ``run_id`` only waits for its store now: let the next run start, if it may."""
    held = _HELD.get()
    if held is not None and held[0] == run_id:
        held[1].settle()
