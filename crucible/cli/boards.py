"""Live displays that follow a run or a batch: StageBoard and BatchBoard, both run observers.

The engine tells them when runs and stage attempts start and end (see crucible.observers);
they only format what they hear. Hooks run on the event loop; the rich refresh thread reads
the rows under a lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from crucible.cli.output import STATUS_STYLES, SafeTable, cell, format_duration
from crucible.cli.terminal import inline
from crucible.observers import AttemptStart, BatchStart, RunEnd, RunObserver, RunStart
from crucible.status import RunStatus

if TYPE_CHECKING:
    from crucible.batch import BatchProgress
    from crucible.engine import PlannedStage
    from crucible.trace import SpanRecord


@dataclass
class _Row:
    index: int
    name: str
    status: str = "pending"
    attempt: int = 0
    started: float | None = None
    duration_s: float | None = None
    error_type: str | None = None


class StageBoard(RunObserver):
    """Shows each stage's status as the run goes: a rich Live table, or one plain line each."""

    def __init__(self, planned: Sequence[PlannedStage], console: Console, *, live: bool) -> None:
        self._console = console
        self._live = live
        self._lock = threading.Lock()
        self._rows = {
            p.index: _Row(p.index, p.definition.name, "pending" if p.spec else "disabled")
            for p in planned
        }
        self.trace_id: str | None = None

    def on_run_start(self, *, run: RunStart) -> None:
        self.trace_id = run.trace_id

    def on_attempt_start(self, *, attempt: AttemptStart) -> None:
        row = self._rows.get(attempt.stage_index)
        if row is None or attempt.attempt == 0:
            return
        with self._lock:
            row.status = "running"
            row.attempt = attempt.attempt
            row.started = time.monotonic()
            row.duration_s = None

    def on_attempt_end(self, *, attempt: AttemptStart, record: SpanRecord) -> None:
        row = self._rows.get(attempt.stage_index)
        if row is None:
            return
        with self._lock:
            row.status = record.result
            row.duration_s = record.duration_s
            row.error_type = record.error_type
        if not self._live:
            self._console.print(inline(self._plain_line(row)), markup=False, soft_wrap=True)

    @staticmethod
    def _plain_line(row: _Row) -> str:
        line = f"stage {row.name} ... {row.status}"
        if row.status != "skip":
            line += f" {format_duration(row.duration_s)}"
        if row.attempt > 1:
            line += f" (attempt {row.attempt})"
        if row.error_type:
            line += f" ({row.error_type})"
        return line

    def render(self) -> RenderableType:
        """The status table, recomputed on every refresh (running stages show elapsed time)."""
        table = SafeTable(box=box.SIMPLE_HEAD, show_edge=False)
        table.add_column("#", justify="right")
        table.add_column("stage")
        table.add_column("status")
        table.add_column("time", justify="right")
        now = time.monotonic()
        with self._lock:
            rows = [
                (r.index, r.name, r.status, r.attempt, r.started, r.duration_s)
                for r in self._rows.values()
            ]
        for index, name, status, attempt, started, duration in rows:
            label = status if attempt <= 1 else f"{status} (attempt {attempt})"
            if status == "running" and started is not None:
                duration = now - started
            shown = "" if status in ("pending", "disabled", "skip") else format_duration(duration)
            table.add_row(
                str(index), cell(name), cell(label, style=STATUS_STYLES.get(status, "")), shown
            )
        return table

    def display(self) -> AbstractContextManager[Any]:
        """A context manager showing the live table while the run goes (no-op in plain mode)."""
        if not self._live:
            return nullcontext()
        return Live(
            get_renderable=self.render,
            console=self._console,
            refresh_per_second=8,
            transient=False,
        )


class BatchBoard(RunObserver):
    """Shows a batch's progress: a rich progress bar on a terminal, else sparse plain lines.

    It counts the runs it hears start and end; a run cancelled before its slot (reported with
    no trace) is not counted as done: the interrupted summary calls those "cancelled".
    """

    def __init__(self, name: str, total: int, console: Console, *, live: bool) -> None:
        self._console = console
        self._total = total
        self._printed_bucket = 0
        from crucible.batch import BatchProgress

        self.last = BatchProgress(total=total)
        self.trace_id: str | None = None
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if live:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("[red]{task.fields[failed]} failed"),
                TextColumn("[yellow]{task.fields[running]} running"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
            )
            self._task = self._progress.add_task(
                escape(inline(f"batch {name}")), total=total, failed=0, running=0
            )

    def on_batch_start(self, *, batch: BatchStart) -> None:
        self.trace_id = batch.trace_id

    def progress(self, state: BatchProgress) -> None:
        """A ``run_batch`` progress callback: show the batch's own counts."""
        self.last = state
        self._show()

    def on_run_start(self, *, run: RunStart) -> None:
        if run.trace_id is not None:
            self.last.running += 1
            self._show()

    def on_run_end(self, *, run: RunEnd) -> None:
        if run.run.trace_id is None:
            return
        self.last.running -= 1
        if run.status is RunStatus.COMPLETED:
            self.last.completed += 1
        elif run.status is not RunStatus.CANCELLED:  # cancelled runs are not "done"
            self.last.failed += 1
        self._show()

    def _show(self) -> None:
        """Show the counts: the bar, or a plain line every tenth of the batch."""
        state = self.last
        if self._progress is not None and self._task is not None:
            self._progress.update(
                self._task, completed=state.done, failed=state.failed, running=state.running
            )
            return
        if state.done == 0 or self._total == 0:
            return
        bucket = state.done * 10 // self._total  # a line every 10%; 10 only when all are done
        if bucket > self._printed_bucket:
            self._printed_bucket = bucket
            self._console.print(self.plain_line(state), markup=False, soft_wrap=True)

    @staticmethod
    def plain_line(state: BatchProgress) -> str:
        elapsed = time.monotonic() - state.started_at
        line = f"progress: {state.done}/{state.total} done, {state.failed} failed"
        if state.done < state.total:
            eta = elapsed / state.done * (state.total - state.done) if state.done else None
            line += f", {state.running} running, ETA {format_duration(eta)}"
        return line + f" ({format_duration(elapsed)} elapsed)"

    def display(self) -> AbstractContextManager[Any]:
        """A context manager showing the bar while the batch goes (no-op in plain mode)."""
        return self._progress if self._progress is not None else nullcontext()
