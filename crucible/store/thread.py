"""WriterThread: a daemon thread with its own event loop, where the writer's transactions run.

Under load the callers' event loop runs hundreds of runs between two of its iterations, and each
database round trip of a commit made there waits behind all of them. In this thread a commit
waits only for the database (and the GIL), while the callers' loop waits for one result per
commit. The thread has its own engine (asyncpg connections belong to the loop that made them).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from crucible.store.connection import Database

__all__ = ["WriterThread"]

T = TypeVar("T")


class WriterThread:
    """Runs coroutines against ``db`` on a thread of their own; started on first use."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _start(self) -> asyncio.AbstractEventLoop:
        ready = threading.Event()
        holder: list[asyncio.AbstractEventLoop] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            holder.append(loop)
            ready.set()
            try:
                loop.run_forever()
                loop.run_until_complete(self.db.dispose())
            finally:
                loop.close()

        self._thread = threading.Thread(target=main, name="crucible-store-writer", daemon=True)
        self._thread.start()
        ready.wait()
        self._loop = holder[0]
        return self._loop

    async def run(
        self, fn: Callable[[Database], Awaitable[T]], on_result: Callable[[T], None] | None = None
    ) -> T:
        """``await fn(db)`` on the writer thread; its result or exception comes back here.

        ``on_result(result)`` runs in this loop as soon as the result arrives, before the awaiting
        task resumes (one loop iteration sooner: what it settles wakes its waiters at once); what
        it raises is raised here instead of the result.
        """
        loop = self._loop or self._start()

        async def call() -> T:
            return await fn(self.db)

        return await _handed_back(asyncio.run_coroutine_threadsafe(call(), loop), on_result)

    @property
    def running(self) -> bool:
        """Whether the thread has started (and not been stopped)."""
        return self._loop is not None

    async def call(self, fn: Callable[[], T], on_result: Callable[[T], None] | None = None) -> T:
        """``fn()`` on the writer thread (a plain function: no awaiting there); as :meth:`run`."""
        loop = self._loop or self._start()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def job() -> None:
            if not done.set_running_or_notify_cancel():
                return
            try:
                done.set_result(fn())
            except BaseException as err:  # the caller gets it, whatever it is
                done.set_exception(err)

        loop.call_soon_threadsafe(job)
        return await _handed_back(done, on_result)

    async def stop(self) -> None:
        """Close the thread's engine and end the thread; a later ``run`` starts a new one."""
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        await anyio.to_thread.run_sync(thread.join)


def _handed_back(
    done: concurrent.futures.Future[T], on_result: Callable[[T], None] | None
) -> asyncio.Future[T]:
    """A future of the caller's loop for ``done``, calling ``on_result`` first (see ``run``)."""
    caller = asyncio.get_running_loop()
    result: asyncio.Future[T] = caller.create_future()

    def arrive(_: object) -> None:  # in the caller's loop
        if result.done():
            return  # the caller stopped waiting
        if done.cancelled():
            result.cancel()
            return
        err = done.exception()
        if err is not None:
            result.set_exception(err)
            return
        value = done.result()
        if on_result is not None:
            try:
                on_result(value)
            except BaseException as exc:
                result.set_exception(exc)
                return
        result.set_result(value)

    done.add_done_callback(lambda _: caller.call_soon_threadsafe(arrive, None))
    return result
