"""Run the CLI's async work so that SIGINT (Ctrl-C) and SIGTERM cancel it cleanly.

``docker stop``, systemd and Kubernetes send SIGTERM. Without a handler the process dies at
once and its run stays ``running``; with this one the run is cancelled, recorded
``cancelled``, its spans are flushed, and the command exits 143 (128 + SIGTERM), or 130 for
Ctrl-C. Both signals go through the event loop, so neither raises in the middle of the work.

Every wait while stopping is bounded: the work's cancellation gets ``CANCEL_GRACE_S``, tasks it
left behind ``LEFTOVER_S``. A second SIGINT or SIGTERM while the command stops (the telemetry
flush included) ends the process at once with 130 or 143: what was not yet stored or exported
then is lost, and runs not yet recorded show ``abandoned`` on the store's next open.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

if TYPE_CHECKING:
    import asyncio

T = TypeVar("T")
EXIT_TERMINATED = 128 + signal.SIGTERM
CANCEL_GRACE_S = 60.0  # longer than the store takes to journal what it cannot write (30 s)
LEFTOVER_S = 5.0
_STOPS = (signal.SIGINT, signal.SIGTERM)
_NAMES: dict[int, str] = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}


class Terminated(Exception):
    """The work was cancelled because the process received SIGTERM."""


def _say(text: str) -> None:
    """Write to stderr without Python's buffers (safe inside a signal handler)."""
    with contextlib.suppress(OSError):
        os.write(2, text.encode("utf-8", "replace"))


def exit_now(sig: int) -> NoReturn:
    """End the process at once: a second stop signal while stopping."""
    for fd in (1, 2):  # a progress display hides the cursor: show it again
        with contextlib.suppress(OSError):
            if os.isatty(fd):
                os.write(fd, b"\x1b[?25h")
    _say(
        f"\nerror: {_NAMES.get(sig, sig)} while stopping: exiting now; spans not yet "
        "exported and runs not yet recorded are lost\n"
    )
    os._exit(128 + sig)


def _exit_on_stop_signals() -> None:
    """From now on a SIGINT or SIGTERM ends the process at once (the command is stopping)."""
    for sig in _STOPS:
        signal.signal(sig, lambda s, _frame: exit_now(s))


class _Stopper:
    """The signal handlers of one ``run_cancellable``: first cancels, second exits."""

    def __init__(self) -> None:
        self.received: int | None = None

    async def guard(self, main: Coroutine[Any, Any, T]) -> T:
        import asyncio

        loop = asyncio.get_running_loop()
        work: asyncio.Future[T] = asyncio.ensure_future(main)
        grace: asyncio.Future[None] = loop.create_future()

        def give_up() -> None:
            if not grace.done():
                grace.set_result(None)

        def on_signal(sig: int) -> None:
            if self.received is not None:
                exit_now(sig)
            self.received = sig
            for hook in list(_on_stop):
                hook()
            work.cancel()
            loop.call_later(CANCEL_GRACE_S, give_up)

        watching = sys.platform != "win32"
        if watching:
            for sig in _STOPS:
                loop.add_signal_handler(sig, on_signal, sig)
        try:
            either: list[asyncio.Future[Any]] = [work, grace]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if watching:
                for sig in _STOPS:
                    loop.remove_signal_handler(sig)
                if self.received is not None:
                    _exit_on_stop_signals()
        if not work.done():
            _say(
                f"warning: the cancellation did not finish within {CANCEL_GRACE_S:g} s; "
                "stopping without it (runs not yet recorded show abandoned)\n"
            )
            raise asyncio.CancelledError
        return work.result()  # raises CancelledError when the signal cancelled it


def _close(loop: asyncio.AbstractEventLoop) -> None:
    """``asyncio.run``'s cleanup, each wait bounded: a task that will not end is left behind."""
    import asyncio

    left = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in left:
        task.cancel()
    try:
        if left:
            loop.run_until_complete(asyncio.wait(left, timeout=LEFTOVER_S))
        loop.run_until_complete(asyncio.wait_for(loop.shutdown_asyncgens(), LEFTOVER_S))
        loop.run_until_complete(asyncio.wait_for(loop.shutdown_default_executor(), LEFTOVER_S))
    except (TimeoutError, asyncio.CancelledError):
        pass
    finally:
        asyncio.set_event_loop(None)
        loop.close()


_on_stop: list[Callable[[], None]] = []


def when_stopping(hook: Callable[[], None]) -> None:
    """Call ``hook`` when a stop signal arrives during this ``run_cancellable`` (before the work
    is cancelled): e.g. ``RunStore.hurry``, so records journal at once if the database is away."""
    _on_stop.append(hook)


def run_cancellable(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` in a new event loop; SIGINT or SIGTERM cancels it.

    Raises KeyboardInterrupt (SIGINT) or :class:`Terminated` (SIGTERM) once it is cancelled.
    After that, until the process exits, another of those signals exits at once (see above).
    """
    import asyncio  # loaded when a command runs, not for --help

    from crucible.gcsettings import freeze_imports

    freeze_imports()  # everything a command needs is loaded by now
    stopper = _Stopper()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(stopper.guard(main))
    except asyncio.CancelledError:
        if stopper.received == signal.SIGTERM:
            raise Terminated() from None
        if stopper.received == signal.SIGINT:
            raise KeyboardInterrupt() from None
        raise
    finally:
        _on_stop.clear()
        _close(loop)
