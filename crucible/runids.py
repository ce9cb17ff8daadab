"""Run ids: random UUID4s from the OS's randomness, and which of them this process minted.

A stage seeding ``random`` cannot make an id repeat. An id minted here is known to be new, so
the run store need not wait for the database to confirm it before the run starts (an id a
caller chose still waits: it may be one already stored).
"""

from __future__ import annotations

import os
from typing import Final

__all__ = ["forget", "minted", "new_run_id"]

_MAX_REMEMBERED: Final = 200_000  # then forgotten: those runs just wait for their start
_minted: set[str] = set()


def new_run_id() -> str:
    """A random UUID4, the same text as ``str(uuid.uuid4())`` without building a ``UUID``."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    run_id = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    if len(_minted) >= _MAX_REMEMBERED:
        _minted.clear()
    _minted.add(run_id)
    return run_id


def minted(run_id: str) -> bool:
    """Whether ``new_run_id`` made ``run_id`` in this process (and still remembers it)."""
    return run_id in _minted


def forget(run_id: str) -> None:
    """The run has ended: its id need not be remembered."""
    _minted.discard(run_id)
