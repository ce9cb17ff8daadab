"""The ``crucible`` process's garbage-collector settings (``crucible.console`` applies them).

That process exists to run experiments. With CPython's defaults (thresholds 700/10/10) a long
batch rescans everything it has kept so far (every loaded module, every outcome) about six times
per 10,000 runs: a third to a half of the batch's time. The console script therefore collects
less often from its first line, and freezes what is loaded (imports are never garbage) just
before a command starts its runs. Only the ``crucible`` process does this: a library never
changes its caller's collector (README, Performance, says how a program can do the same).
``CRUCIBLE_GC=default`` turns it off.
"""

from __future__ import annotations

import gc
import os
from typing import Final

__all__ = ["THRESHOLDS", "freeze_imports", "tune_process"]

THRESHOLDS: Final = (20_000, 20, 20)
_tuned = False


def tune_process() -> None:
    """Raise the collection thresholds (the console script calls this before any import)."""
    global _tuned
    if os.environ.get("CRUCIBLE_GC", "").strip().lower() == "default":
        return
    gc.set_threshold(*THRESHOLDS)
    _tuned = True


def freeze_imports() -> None:
    """Move every object alive now out of the collector's sight, in a tuned process only."""
    if _tuned:
        gc.freeze()
