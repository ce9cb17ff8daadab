"""Run the CLI's async work so that SIGTERM cancels it cleanly, as Ctrl-C (SIGINT) does.

``docker stop``, systemd and Kubernetes send SIGTERM. Without a handler the process dies at
once and its run stays ``running``; with this one the run is cancelled, recorded
``cancelled``, its spans are flushed, and the command exits 143 (128 + SIGTERM).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(Exception):
    """The work was cancelled because the process received SIGTERM."""


def run_cancellable(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``; SIGTERM cancels ``main`` and raises :class:`Terminated`.

    Ctrl-C keeps asyncio's own handling (the task is cancelled, then KeyboardInterrupt).
    """
    import asyncio  # loaded when a command runs, not for --help

    from crucible.gcsettings import freeze_imports

    freeze_imports()  # everything a command needs is loaded by now

    async def guarded() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        received: list[int] = []

        def on_term() -> None:
            received.append(signal.SIGTERM)
            task.cancel()

        if sys.platform != "win32":
            loop.add_signal_handler(signal.SIGTERM, on_term)
        try:
            return await main
        except asyncio.CancelledError:
            if received:
                raise Terminated() from None
            raise
        finally:
            if sys.platform != "win32":
                loop.remove_signal_handler(signal.SIGTERM)

    return asyncio.run(guarded())
