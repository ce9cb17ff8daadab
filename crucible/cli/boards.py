"""Live displays that follow a run or a batch: StageBoard, BatchBoard and the batch span watcher.

Each is self-contained: it gets what it shows from span starts/ends or the batch progress callback.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry.context import Context as OtelContext
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
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
from rich.table import Table
from rich.text import Text

from crucible.batch import BatchProgress
from crucible.cli.output import STATUS_STYLES, format_duration
from crucible.engine import PlannedStage
from crucible.telemetry import spans as tel


@dataclass
class _Row:
    index: int
    name: str
    status: str = "pending"
    attempt: int = 0
    started: float | None = None
    duration_s: float | None = None
    error_type: str | None = None


class StageBoard(SpanProcessor):
    """Follows the run's spans to show each stage's status: a rich Live table or plain lines.

    The engine has no callbacks, so this span processor (added to the CLI's tracer provider)
    watches ``RUN ...`` and ``stage ...`` spans start and end.
    """

    def __init__(self, planned: Sequence[PlannedStage], console: Console, *, live: bool) -> None:
        self._console = console
        self._live = live
        self._lock = threading.Lock()
        self._rows = {
            p.index: _Row(p.index, p.definition.name, "pending" if p.spec else "disabled")
            for p in planned
        }
        self._run_span_id: int | None = None
        self.trace_id: str | None = None

    # SpanProcessor interface (called from the event loop thread)
    def on_start(self, span: Span, parent_context: OtelContext | None = None) -> None:
        sc = span.get_span_context()
        if span.name.startswith("RUN ") and self._run_span_id is None:
            self._run_span_id = sc.span_id
            self.trace_id = f"{sc.trace_id:032x}"
            return
        row = self._row_for(span)
        if row is None:
            return
        attrs = span.attributes or {}
        with self._lock:
            row.status = "running"
            row.attempt = int(attrs.get("crucible.stage.attempt", 0) or 0)  # type: ignore[arg-type]
            row.started = time.monotonic()
            row.duration_s = None

    def on_end(self, span: ReadableSpan) -> None:
        row = self._row_for(span)
        if row is None:
            return
        attrs = span.attributes or {}
        result = str(attrs.get(tel.TASK_RUN_RESULT, "success"))
        error_type = attrs.get(tel.ERROR_TYPE)
        duration = None
        if span.start_time is not None and span.end_time is not None:
            duration = (span.end_time - span.start_time) / 1e9
        with self._lock:
            row.status = result
            row.duration_s = duration
            row.error_type = str(error_type) if error_type is not None else None
        if not self._live:
            self._console.print(self._plain_line(row), markup=False, soft_wrap=True)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def _row_for(self, span: ReadableSpan) -> _Row | None:
        if not span.name.startswith("stage ") or self._run_span_id is None:
            return None
        if span.parent is None or span.parent.span_id != self._run_span_id:
            return None  # a span a stage opened itself, or another run's
        index = (span.attributes or {}).get("crucible.stage.index")
        return self._rows.get(index) if isinstance(index, int) else None

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
        table = Table(box=box.SIMPLE_HEAD, show_edge=False)
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
                str(index), Text(name), Text(label, style=STATUS_STYLES.get(status, "")), shown
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


class BatchBoard:
    """Shows run_batch's progress: a rich progress bar on a terminal, else sparse plain lines."""

    def __init__(self, name: str, total: int, console: Console, *, live: bool) -> None:
        self._console = console
        self._total = total
        self._printed_bucket = 0
        self.last = BatchProgress(total=total)
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
                escape(f"batch {name}"), total=total, failed=0, running=0
            )

    def update(self, state: BatchProgress) -> None:
        """The ``progress`` callback: called on the event loop as runs start and finish."""
        self.last = replace(state)
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


class BatchSpanWatcher(SpanProcessor):
    """Notes the trace id of this batch's ``BATCH`` span (run_batch does not return it)."""

    def __init__(self, batch_id: str) -> None:
        self._batch_id = batch_id
        self.trace_id: str | None = None

    def on_start(self, span: Span, parent_context: OtelContext | None = None) -> None:
        ours = (span.attributes or {}).get("crucible.batch.id") == self._batch_id
        if self.trace_id is None and ours and span.name.startswith("BATCH "):
            self.trace_id = f"{span.get_span_context().trace_id:032x}"

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
