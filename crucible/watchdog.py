"""Detect stages that block the event loop, and name them in a warning.

A daemon thread pings the loop with ``call_soon_threadsafe``; when a ping goes unanswered for
longer than the threshold, the loop thread is executing something that never awaits. The
watchdog is a run observer: it keeps each run's LiveRun by task, so it names the stage (with
its run, trace and span ids) that the task the loop is executing is running. One watchdog per
event loop; it stops itself when no run has been active for a while.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

import structlog

from crucible.observers import AttemptStart, LiveRun, RunEnd, RunObserver, RunStart

_log = structlog.get_logger("crucible.watchdog")
DEFAULT_THRESHOLD_S = 0.5
_IDLE_STOP_S = 5.0


_parsed: dict[str | None, float | None] = {None: DEFAULT_THRESHOLD_S}


def threshold_from_env() -> float | None:
    """``CRUCIBLE_BLOCK_WARN_S`` seconds (default 0.5); ``0`` turns the watchdog off."""
    raw = os.environ.get("CRUCIBLE_BLOCK_WARN_S")
    if raw in _parsed:
        return _parsed[raw]
    assert raw is not None  # None is always in _parsed
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(
            f"CRUCIBLE_BLOCK_WARN_S must be a number of seconds, got {raw!r}"
        ) from None
    return value if value > 0 else None


@dataclass(frozen=True, slots=True)
class BlockReport:
    """One episode of a blocked loop: who blocked it and for how long (at least)."""

    seconds: float
    stage: str | None
    experiment_id: str | None
    run_id: str | None
    trace_id: str | None = None
    span_id: str | None = None


class LoopWatchdog(RunObserver):
    """Watches one event loop from a daemon thread; follows its runs as an observer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, threshold_s: float) -> None:
        self.loop = loop
        self.threshold_s = threshold_s
        self._runs: dict[Any, LiveRun] = {}  # task -> what its run is doing
        self.last_active = time.monotonic()
        self.reports: list[BlockReport] = []
        self._ack = threading.Event()
        self._stop = threading.Event()
        self.alive = True  # until the thread returns (cheaper to read than is_alive(), per run)
        self._thread = threading.Thread(target=self._run, name="crucible-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._watch()
        finally:
            self.alive = False

    def stop(self) -> None:
        self._stop.set()

    @property
    def active_runs(self) -> int:
        return len(self._runs)

    # --- observer hooks (called on the loop thread, in the run's task) ----------------------
    def on_run_start(self, *, run: RunStart) -> None:
        if run.live is not None:
            self._runs[asyncio.current_task()] = run.live

    def on_run_end(self, *, run: RunEnd) -> None:
        self._runs.pop(asyncio.current_task(), None)
        self.last_active = time.monotonic()

    def _running_now(self) -> AttemptStart | None:
        """The attempt of the task the loop is executing (read from the watchdog thread)."""
        live = self._runs.get(asyncio.current_task(self.loop))
        if live is None and len(self._runs) == 1:  # e.g. a task the stage spawned
            live = next(iter(self._runs.values()), None)
        return live.attempt if live is not None else None

    def _watch(self) -> None:
        interval = min(self.threshold_s / 2, 0.25)
        while not self._stop.is_set():
            if self.loop.is_closed():
                return
            if self.active_runs == 0 and time.monotonic() - self.last_active > _IDLE_STOP_S:
                return
            self._ack.clear()
            sent = time.monotonic()
            try:
                self.loop.call_soon_threadsafe(self._ack.set)
            except RuntimeError:  # loop closed
                return
            if self._ack.wait(self.threshold_s):
                self._stop.wait(interval)
                continue
            att = self._running_now()
            while not self._ack.wait(1.0):  # the episode ends when the loop answers again
                if self.loop.is_closed() or self._stop.is_set():
                    return
            report = BlockReport(
                time.monotonic() - sent,
                att.stage if att else None,
                att.run.experiment.id if att else None,
                att.run.run_id if att else None,
                att.trace_id if att else None,
                att.span_id if att else None,
            )
            self.reports.append(report)
            stage = report.stage
            _log.warning(
                "event loop blocked" + (f" by stage {stage!r}" if stage else ""),
                blocked_s=round(report.seconds, 3),
                stage=stage,
                experiment_id=report.experiment_id,
                run_id=report.run_id,
                trace_id=report.trace_id,
                span_id=report.span_id,
                hint="use `await anyio.to_thread.run_sync(...)` or a sync stage for CPU work",
            )


_watchdogs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopWatchdog] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()
_last: tuple[asyncio.AbstractEventLoop, LoopWatchdog] | None = None


def watchdog_for_current_loop(threshold_s: float) -> LoopWatchdog | None:
    """The running loop's watchdog, started if needed (None outside an asyncio loop)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    last = _last
    if (
        last is not None
        and last[0] is loop
        and last[1].alive
        and last[1].threshold_s == threshold_s
    ):
        return last[1]
    with _lock:
        dog = _watchdogs.get(loop)
        if dog is None or not dog.alive or dog.threshold_s != threshold_s:
            if dog is not None:
                dog.stop()
            dog = LoopWatchdog(loop, threshold_s)
            _watchdogs[loop] = dog
        _remember(loop, dog)
    return dog


def _remember(loop: asyncio.AbstractEventLoop, dog: LoopWatchdog) -> None:
    global _last
    _last = (loop, dog)  # one-entry fast path: most processes run one loop
