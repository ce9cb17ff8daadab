"""The ``crucible`` command: run, batch and validate experiments, list stages, inspect runs.

Exit codes: 0 success, 1 a stage failed (or an unexpected error), 2 bad input (file, options,
``--set``, unknown stage or run id), 130 interrupted with Ctrl-C.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, NoReturn, TextIO, cast

import anyio
import typer
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

from crucible import logging as crucible_logging
from crucible.batch import (
    DEFAULT_TRACE_CHILDREN,
    BatchItem,
    BatchProgress,
    RunOutcome,
    expand_matrix,
    run_batch,
    summarize,
)
from crucible.context import Context
from crucible.engine import PlannedStage, plan, run
from crucible.errors import CrucibleError, ExperimentFileError, InvalidPipeline, StageFailed
from crucible.experiment import Experiment, load_with_overrides
from crucible.registry import ENTRY_POINT_GROUP, Registry, default_registry
from crucible.serialize import to_jsonable
from crucible.stage import StageSpec
from crucible.store import RunInfo, RunStatus, RunStore, normalize_url
from crucible.telemetry import spans as tel
from crucible.telemetry.setup import TelemetryHandle, configure

__all__ = ["app", "main"]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
DEFAULT_JAEGER_URL = "http://localhost:16686"
DEFAULT_EXPORTER = "file"
SHUTDOWN_TIMEOUT_S = 5.0
DEFAULT_CONCURRENCY = 8
_VALUE_WIDTH = 80
_PLAIN_WIDTH = 200


class LogLevel(enum.StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


@dataclass
class _State:
    """Global options and the lazily built consoles (stdout, stderr)."""

    debug: bool = False
    log_level: LogLevel = LogLevel.warning
    consoles: dict[bool, Console] = field(default_factory=dict)


_STATE = _State()


class CliError(Exception):
    """A user-facing error: ``message`` (and detail ``lines``) to stderr, then exit ``code``."""

    def __init__(self, message: str, *, lines: Sequence[str] = (), code: int = EXIT_USAGE):
        super().__init__(message)
        self.message = message
        self.lines = tuple(lines)
        self.code = code


# --- output helpers ------------------------------------------------------------------------


def _console(stderr: bool = False) -> Console:
    """The stdout or stderr console; wide when not a terminal so piped lines do not wrap."""
    con = _STATE.consoles.get(stderr)
    if con is None:
        con = Console(stderr=stderr, highlight=False)
        if not con.is_terminal and "COLUMNS" not in os.environ:
            con.width = _PLAIN_WIDTH
        _STATE.consoles[stderr] = con
    return con


def _say(text: str | Text = "", *, style: str | None = None) -> None:
    """Print one line of plain text (no markup interpretation) to stdout."""
    _console().print(text, style=style, markup=False, soft_wrap=True)


def _warn(text: str, *, style: str = "yellow") -> None:
    _console(stderr=True).print(text, style=style, markup=False, soft_wrap=True)


def _error(text: str) -> None:
    _warn(f"error: {text}", style="red")


class _StderrProxy:
    """A stream that writes to whatever ``sys.stderr`` is now (rich's Live swaps it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _configure_logging(*, json_logs: bool) -> None:
    level = _STATE.log_level.value
    crucible_logging.configure(json=json_logs, level=level, stream=cast(TextIO, _StderrProxy()))


@contextmanager
def _guard() -> Iterator[None]:
    """Turn errors into messages and exit codes; tracebacks only with ``--debug``."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except CliError as err:
        _error(err.message)
        for line in err.lines:
            _warn(f"  {line}", style="red")
        raise typer.Exit(err.code) from None
    except ExperimentFileError as err:
        for line in str(err).splitlines():
            _error(line)
        raise typer.Exit(EXIT_USAGE) from None
    except CrucibleError as err:
        _error(str(err))
        raise typer.Exit(EXIT_USAGE) from None
    except KeyboardInterrupt:
        _error("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as err:
        if _STATE.debug:
            traceback.print_exc()
        hint = "" if _STATE.debug else " (run with --debug for the traceback)"
        _error(f"unexpected {type(err).__name__}: {err}{hint}")
        raise typer.Exit(EXIT_FAILED) from None


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}m {secs:04.1f}s"


def _rounded(value: Any) -> Any:
    """Floats to 6 significant digits for display (0.6313000000000001 -> 0.6313)."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _short(value: Any, width: int = _VALUE_WIDTH) -> str:
    """A JSON rendering of ``value`` (floats rounded for display), cut to ``width`` characters."""
    try:
        shown = _rounded(to_jsonable(value))
        text = json.dumps(shown, ensure_ascii=False, separators=(", ", ": "))
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def flatten_metrics(
    metrics: Mapping[str, Any], prefix: str = "", *, max_depth: int | None = None
) -> list[tuple[str, Any]]:
    """Nested metric mappings as ``(dotted.key, value)`` pairs, in insertion order.

    Below ``max_depth`` levels a mapping stays whole (shown as truncated JSON).
    """
    out: list[tuple[str, Any]] = []
    for key, value in metrics.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        deeper = max_depth is None or name.count(".") + 1 < max_depth
        if isinstance(value, Mapping) and value and deeper:
            out.extend(flatten_metrics(value, name, max_depth=max_depth))
        else:
            out.append((name, value))
    return out


def _metrics_table(metrics: Mapping[str, Any], title: str) -> RenderableType:
    # Three levels keep the summary short (bench.test_results.ttest stays one row); the
    # report and `crucible runs show --json` have everything.
    rows = sorted(flatten_metrics(metrics, max_depth=3), key=lambda kv: kv[0])
    if not rows:
        return Text(f"{title}: (none)")
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("metric", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in rows:
        table.add_row(Text(key), Text(_short(value)))
    return table


def _jaeger_link(base: str, trace_id: str | None) -> str | None:
    return f"{base.rstrip('/')}/trace/{trace_id}" if trace_id else None


def _trace_id_of(ctx: Context | None) -> str | None:
    return ctx.trace.trace_id if ctx is not None and ctx.trace is not None else None


# --- experiments and --set -----------------------------------------------------------------


def preflight(
    experiment: Experiment, registry: Registry, *, allow_imports: bool, source: str
) -> list[PlannedStage]:
    """Resolve and validate every stage; a bad pipeline becomes a CliError listing problems."""
    try:
        return plan(experiment, registry, allow_imports=allow_imports)
    except InvalidPipeline as err:
        n = len(err.problems)
        lines = [f"{source}: {p}" for p in err.problems]
        if not allow_imports and any(sd.module and sd.enabled for sd in experiment.pipeline):
            lines.append(
                "hint: this experiment names code to import (module: ...); "
                "pass --allow-imports if you trust it"
            )
        raise CliError(
            f"{source}: invalid pipeline ({n} problem{'s' if n != 1 else ''}); nothing was run",
            lines=lines,
        ) from None


# --- live stage status -------------------------------------------------------------------


_STATUS_STYLES = {
    "pending": "dim",
    "disabled": "dim",
    "running": "yellow",
    "success": "green",
    "skip": "dim",
    "failure": "red",
    "error": "red",
    "timeout": "red",
    "cancellation": "magenta",
}


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
            line += f" {_fmt_duration(row.duration_s)}"
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
            shown = "" if status in ("pending", "disabled", "skip") else _fmt_duration(duration)
            table.add_row(
                str(index), Text(name), Text(label, style=_STATUS_STYLES.get(status, "")), shown
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


# --- the app -------------------------------------------------------------------------------

app = typer.Typer(
    name="crucible",
    help="Run experiment pipelines with OpenTelemetry traces and a run store.",
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
runs_app = typer.Typer(help="Inspect runs recorded in the run store.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="STAGE.OPTION=VALUE",
        help="Set an option on every pipeline entry named STAGE; VALUE is read as YAML. "
        "Repeatable.",
    ),
]
AllowImportsOption = Annotated[
    bool,
    typer.Option("--allow-imports", help="Allow the experiment to import code it names."),
]
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="CRUCIBLE_STORE_URL",
        help="Run store URL or SQLite path (default: .crucible/runs.db).",
        show_default=False,
    ),
]
JaegerOption = Annotated[
    str,
    typer.Option("--jaeger-url", envvar="CRUCIBLE_JAEGER_URL", help="Jaeger UI base URL."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
ExporterOption = Annotated[
    str | None,
    typer.Option(
        "--exporter",
        help="Where spans go: otlp, console, file or none "
        "(default: $OTEL_TRACES_EXPORTER, else file = ./traces.jsonl).",
        show_default=False,
    ),
]
JsonLogsOption = Annotated[bool, typer.Option("--json-logs", help="Log JSON lines.")]
TimeoutOption = Annotated[
    float | None, typer.Option("--timeout", help="Run deadline in seconds.", show_default=False)
]
FileArgument = Annotated[
    Path, typer.Argument(help="Experiment file (.yaml, .yml, .json or .toml).", show_default=False)
]


@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks of unexpected errors.")
    ] = False,
    log_level: Annotated[
        LogLevel, typer.Option("--log-level", help="Lowest log level written to stderr.")
    ] = LogLevel.warning,
) -> None:
    """Run experiment pipelines with OpenTelemetry traces and a run store."""
    _STATE.debug = debug
    _STATE.log_level = log_level
    _configure_logging(json_logs=False)
    if ctx.invoked_subcommand is None:  # bare ``crucible``: show the commands, succeed
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


# --- crucible run ----------------------------------------------------------------------------


@dataclass
class _Outcome:
    context: Context | None = None
    failure: StageFailed | None = None


async def _run_async(
    experiment: Experiment,
    *,
    run_id: str,
    store_url: str | None,
    registry: Registry,
    handle: TelemetryHandle,
    run_timeout: float | None,
    allow_imports: bool,
) -> _Outcome:
    store = RunStore(store_url)
    try:
        await store.open()
        if await store.get_run(run_id) is not None:
            raise CliError(f"--run-id {run_id!r}: a run with this id is already in {store.url}")
        try:
            ctx = await run(
                experiment,
                run_id=run_id,
                registry=registry,
                store=store,
                tracer_provider=handle.tracer_provider,
                meter_provider=handle.meter_provider,
                timeout=run_timeout,
                allow_imports=allow_imports,
            )
        except StageFailed as err:
            return _Outcome(failure=err)
        return _Outcome(context=ctx)
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()


def _print_where(
    run_id: str, trace_id: str | None, handle: TelemetryHandle, jaeger_url: str
) -> None:
    _say(f"trace:    {_trace_destination(handle)}")
    _say(f"run id:   {run_id}")
    _say(f"trace id: {trace_id or '-'}")
    link = _jaeger_link(jaeger_url, trace_id)
    if link:
        _say(f"jaeger:   {link}")


def _print_artifacts(ctx: Context) -> None:
    if not ctx.artifacts:
        return
    _say("reports:")
    for name, artifact in ctx.artifacts.items():
        if isinstance(artifact, Mapping):
            where = artifact.get("location", artifact.get("path", _short(artifact)))
            fmt = artifact.get("format")
            _say(f"  {name}: {where}" + (f" ({fmt})" if fmt else ""))
        else:
            _say(f"  {name}: {artifact}")


def _report_outcome(
    outcome: _Outcome,
    *,
    run_id: str,
    board: StageBoard,
    handle: TelemetryHandle,
    jaeger_url: str,
    elapsed: float,
) -> int:
    out = _console()
    if outcome.context is not None:
        ctx = outcome.context
        n = len(ctx.experiment.pipeline)
        _say()
        _say(
            f"run {run_id} completed in {_fmt_duration(elapsed)} "
            f"(experiment {ctx.experiment_id}, {n} stage{'s' if n != 1 else ''})",
            style="green",
        )
        out.print(_metrics_table(ctx.metrics, "metrics"))
        _print_artifacts(ctx)
        _print_where(run_id, _trace_id_of(ctx) or board.trace_id, handle, jaeger_url)
        return 0
    failure = outcome.failure
    assert failure is not None
    cause = failure.cause
    verb = "timed out" if failure.result == "timeout" else "failed"
    _error(
        f"run {run_id} {verb}: stage {failure.stage!r} ended with {failure.result}: "
        f"{type(cause).__name__}: {cause}"
    )
    last = failure.context
    _say()
    if last is not None:
        out.print(_metrics_table(last.metrics, "last good metrics"))
        _print_artifacts(last)
    _print_where(run_id, _trace_id_of(last) or board.trace_id, handle, jaeger_url)
    return EXIT_FAILED


def _setup_telemetry(exporter: str | None) -> TelemetryHandle:
    """Configure (and install globally) the providers for ``--exporter`` or the environment."""
    chosen = exporter or os.environ.get("OTEL_TRACES_EXPORTER", "").strip() or DEFAULT_EXPORTER
    try:
        handle = configure(exporter=chosen, set_global=True)
    except ValueError as err:
        raise CliError(f"--exporter: {err}") from None
    # The CLI reports lost spans itself; keep the library's duplicate warning quiet.
    logging.getLogger("crucible.telemetry.setup").setLevel(logging.ERROR)
    return handle


def _trace_destination(handle: TelemetryHandle) -> str:
    """Where the spans went, with file paths made absolute."""
    if not handle.exporters:
        return "not exported (exporter none)"
    parts = handle.destination.split(", ")
    return ", ".join(p if "://" in p or p == "console" else str(Path(p).resolve()) for p in parts)


def _shutdown_telemetry(handle: TelemetryHandle) -> None:
    report = handle.shutdown(SHUTDOWN_TIMEOUT_S)
    if not report.completed:
        _warn(f"warning: telemetry shutdown did not finish within {SHUTDOWN_TIMEOUT_S:g} s")
    if report.lost:
        _warn(
            f"warning: {report.lost} of {report.ended} spans were not exported to "
            f"{handle.destination} (failed {report.failed}, dropped {report.dropped}, "
            f"unexported {report.unexported})"
        )


@app.command("run")
def run_command(
    file: FileArgument,
    set_: SetOption = None,
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Run id (default: a new UUID).")
    ] = None,
    store: StoreOption = None,
    exporter: ExporterOption = None,
    json_logs: JsonLogsOption = False,
    timeout: TimeoutOption = None,
    allow_imports: AllowImportsOption = False,
    jaeger_url: JaegerOption = DEFAULT_JAEGER_URL,
) -> None:
    """Run an experiment: pre-flight, run every stage, store the run, print where it went."""
    with _guard():
        if timeout is not None and timeout <= 0:
            raise CliError(f"--timeout must be a positive number of seconds, got {timeout:g}")
        experiment = load_with_overrides(file, set_ or [])
        registry = default_registry()
        planned = preflight(experiment, registry, allow_imports=allow_imports, source=file.name)
        if json_logs:
            _configure_logging(json_logs=True)
        rid = run_id or str(uuid.uuid4())
        handle = _setup_telemetry(exporter)
        out = _console()
        board = StageBoard(planned, out, live=out.is_interactive)
        handle.tracer_provider.add_span_processor(board)
        code = EXIT_FAILED
        try:
            started = time.perf_counter()
            try:
                with board.display():
                    outcome = asyncio.run(
                        _run_async(
                            experiment,
                            run_id=rid,
                            store_url=store,
                            registry=registry,
                            handle=handle,
                            run_timeout=timeout,
                            allow_imports=allow_imports,
                        )
                    )
            except KeyboardInterrupt:
                _error(f"run {rid} cancelled (interrupted); it is recorded as cancelled")
                _print_where(rid, board.trace_id, handle, jaeger_url)
                code = EXIT_INTERRUPTED
            else:
                code = _report_outcome(
                    outcome,
                    run_id=rid,
                    board=board,
                    handle=handle,
                    jaeger_url=jaeger_url,
                    elapsed=time.perf_counter() - started,
                )
        finally:
            _shutdown_telemetry(handle)
    raise typer.Exit(code)


# --- crucible batch --------------------------------------------------------------------------

_OUTCOME_STYLES = {
    "completed": "green",
    "failed": "red",
    "timed_out": "red",
    "cancelled": "magenta",
}
_MATRIX_WIDTH = 60
_METRICS_SHOWN = 3
_METRICS_WIDTH = 48
_SHORT_TRACE = 8


def _value_text(value: Any, width: int = 40) -> str:
    """A value for a table cell: strings as they are, anything else as compact JSON."""
    if isinstance(value, str):
        return value if len(value) <= width else value[: width - 1] + "…"
    return _short(value, width)


def _point_of(item: BatchItem) -> Mapping[str, Any]:
    point = (item.assigns or {}).get("matrix")
    return point if isinstance(point, Mapping) else {}


def point_text(point: Mapping[str, Any]) -> str:
    """A matrix point as ``stage.option=value, ...``."""
    return ", ".join(f"{key}={_value_text(value)}" for key, value in point.items())


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def expand_file_matrix(experiment: Experiment, *, source: str) -> list[BatchItem]:
    """The experiment's matrix as batch items; a bad matrix is a CliError naming the file."""
    try:
        return expand_matrix(experiment)
    except CrucibleError as err:
        raise CliError(f"{source}: {err}; nothing was run") from None


def preflight_batch(
    items: Sequence[BatchItem], registry: Registry, *, allow_imports: bool, source: str
) -> None:
    """Resolve and validate every variant before any runs; problems name their matrix point."""
    found: dict[str, list[str]] = {}
    bad_variants = 0
    for item in items:
        experiment = cast(Experiment, item.experiment)
        try:
            plan(experiment, registry, allow_imports=allow_imports)
        except InvalidPipeline as err:
            bad_variants += 1
            where = point_text(_point_of(item))
            for problem in err.problems:
                found.setdefault(str(problem), []).append(where)
    if not found:
        return
    lines: list[str] = []
    for text, points in found.items():
        if len(items) > 1 and len(points) == len(items):
            lines.append(f"{source} [every matrix point]: {text}")
        else:
            lines.extend(f"{source} [{p}]: {text}" if p else f"{source}: {text}" for p in points)
    first = cast(Experiment, items[0].experiment)
    if not allow_imports and any(sd.module and sd.enabled for sd in first.pipeline):
        lines.append(
            "hint: this experiment names code to import (module: ...); "
            "pass --allow-imports if you trust it"
        )
    scope = f" in {bad_variants} of {len(items)} matrix points" if len(items) > 1 else ""
    raise CliError(f"{source}: invalid pipeline{scope}; nothing was run", lines=lines)


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
            line += f", {state.running} running, ETA {_fmt_duration(eta)}"
        return line + f" ({_fmt_duration(elapsed)} elapsed)"

    def display(self) -> AbstractContextManager[Any]:
        """A context manager showing the bar while the batch goes (no-op in plain mode)."""
        return self._progress if self._progress is not None else nullcontext()


class _BatchSpanWatcher(SpanProcessor):
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


async def _batch_async(
    items: Sequence[BatchItem],
    *,
    store: RunStore,
    registry: Registry,
    handle: TelemetryHandle,
    concurrency: int,
    batch_id: str,
    name: str,
    board: BatchBoard,
    run_timeout: float | None,
    allow_imports: bool,
) -> list[RunOutcome]:
    try:
        await store.open()
        return await run_batch(
            items,
            max_concurrency=concurrency,
            batch_id=batch_id,
            name=name,
            progress=board.update,
            store=store,
            tracer_provider=handle.tracer_provider,
            meter_provider=handle.meter_provider,
            registry=registry,
            timeout=run_timeout,
            allow_imports=allow_imports,
        )
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()


def _error_json(err: BaseException | None) -> dict[str, Any] | None:
    if err is None:
        return None
    if isinstance(err, StageFailed):
        cause = err.cause
        return {"stage": err.stage, "result": err.result, "type": type(cause).__name__,
                "message": str(cause)}  # fmt: skip
    return {"stage": None, "result": None, "type": type(err).__name__, "message": str(err)}


def _error_text(err: BaseException | None) -> str:
    if isinstance(err, StageFailed):
        cause = err.cause
        return f"stage {err.stage!r} ended with {err.result}: {type(cause).__name__}: {cause}"
    if err is None:
        return "cancelled before it started"
    return f"{type(err).__name__}: {err}"


def _outcome_metrics(outcome: RunOutcome) -> Mapping[str, Any]:
    return outcome.context.metrics if outcome.context is not None else {}


def _metrics_cell(metrics: Mapping[str, Any]) -> str:
    pairs = flatten_metrics(metrics)
    text = ", ".join(f"{k}={_value_text(v, 20)}" for k, v in pairs[:_METRICS_SHOWN])
    if len(pairs) > _METRICS_SHOWN:
        text += f", … (+{len(pairs) - _METRICS_SHOWN})"
    return _cut(text, _METRICS_WIDTH) or "-"


@dataclass(frozen=True, slots=True)
class _BatchReport:
    """What the summary (table or JSON) needs besides the outcomes."""

    batch_id: str
    experiment_id: str
    points: Sequence[Mapping[str, Any]]
    trace_id: str | None
    as_children: bool
    destination: str
    store_url: str
    elapsed: float
    jaeger_url: str


def batch_json(outcomes: Sequence[RunOutcome], report: _BatchReport) -> dict[str, Any]:
    """The ``--json`` document of a finished batch."""
    return {
        "batch_id": report.batch_id,
        "experiment_id": report.experiment_id,
        "total": len(outcomes),
        "counts": summarize(outcomes),
        "duration_s": report.elapsed,
        "trace": {
            "destination": report.destination,
            "trace_id": report.trace_id,
            "runs_are_children": report.as_children,
            "jaeger_url": _jaeger_link(report.jaeger_url, report.trace_id),
        },
        "store": report.store_url,
        "runs": [
            {
                "index": o.index,
                "matrix": to_jsonable(dict(report.points[o.index])),
                "status": o.status,
                "run_id": o.run_id,
                "trace_id": o.trace_id,
                "duration_s": o.duration_s,
                "metrics": to_jsonable(dict(_outcome_metrics(o))),
                "error": _error_json(o.error),
            }
            for o in outcomes
        ],
    }


def _print_batch_summary(outcomes: Sequence[RunOutcome], report: _BatchReport) -> None:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("#", justify="right")
    table.add_column("matrix", overflow="fold")
    table.add_column("status")
    table.add_column("duration", justify="right")
    table.add_column("metrics", overflow="fold")
    table.add_column("run id", no_wrap=True)
    table.add_column("trace id", no_wrap=True)
    for o in outcomes:
        table.add_row(
            str(o.index),
            Text(_cut(point_text(report.points[o.index]), _MATRIX_WIDTH) or "-"),
            Text(o.status, style=_OUTCOME_STYLES.get(o.status, "")),
            _fmt_duration(o.duration_s),
            Text(_metrics_cell(_outcome_metrics(o))),
            Text(o.run_id),
            (o.trace_id or "-")[:_SHORT_TRACE],
        )
    _say()
    _console().print(table)
    failures = [o for o in outcomes if not o.ok]
    if failures:
        _say("failures:")
        for o in failures:
            where = point_text(report.points[o.index])
            _say(f"  #{o.index}" + (f" [{where}]" if where else "") + f": {_error_text(o.error)}")
    counts = summarize(outcomes)
    totals = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    n = len(outcomes)
    _say()
    _say(
        f"totals:   {totals or 'no runs'} ({n} run{'s' if n != 1 else ''} in "
        f"{_fmt_duration(report.elapsed)})",
        style="green" if counts["completed"] == n else "red",
    )
    _say(f"batch:    {report.batch_id} (experiment {report.experiment_id})")
    _say(f"trace:    {report.destination}")
    if report.trace_id:
        how = "runs are its children" if report.as_children else "each run links to it"
        _say(f"trace id: {report.trace_id} (BATCH span; {how})")
        link = _jaeger_link(report.jaeger_url, report.trace_id)
        if link:
            _say(f"jaeger:   {link}")
    _say(f"store:    {report.store_url}")


@app.command("batch")
def batch_command(
    file: FileArgument,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, help="Most runs at once.")
    ] = DEFAULT_CONCURRENCY,
    set_: SetOption = None,
    store: StoreOption = None,
    exporter: ExporterOption = None,
    json_logs: JsonLogsOption = False,
    allow_imports: AllowImportsOption = False,
    timeout: TimeoutOption = None,
    batch_id: Annotated[
        str | None, typer.Option("--batch-id", help="Batch id (default: a new UUID).")
    ] = None,
    json_: JsonOption = False,
    jaeger_url: JaegerOption = DEFAULT_JAEGER_URL,
) -> None:
    """Run every point of the experiment's matrix as one batch; print a summary per run."""
    with _guard():
        if timeout is not None and timeout <= 0:
            raise CliError(f"--timeout must be a positive number of seconds, got {timeout:g}")
        if batch_id is not None and not batch_id.strip():
            raise CliError("--batch-id must not be empty")
        experiment = load_with_overrides(file, set_ or [])
        for raw in set_ or []:
            key = raw.partition("=")[0].strip()
            if key in (experiment.matrix or {}):
                _warn(f"warning: --set {raw!r} is overridden by the matrix key {key!r}")
        items = expand_file_matrix(experiment, source=file.name)
        registry = default_registry()
        preflight_batch(items, registry, allow_imports=allow_imports, source=file.name)
        run_store = RunStore(store)
        if json_logs:
            _configure_logging(json_logs=True)
        bid = batch_id or str(uuid.uuid4())
        handle = _setup_telemetry(exporter)
        watcher = _BatchSpanWatcher(bid)
        handle.tracer_provider.add_span_processor(watcher)
        shown_on = _console(stderr=json_)  # keep stdout clean for --json
        board = BatchBoard(experiment.id, len(items), shown_on, live=shown_on.is_interactive)
        if not shown_on.is_interactive:
            n = len(items)
            shown_on.print(
                f"batch {bid}: {n} run{'s' if n != 1 else ''} of {experiment.id}, "
                f"at most {concurrency} at once",
                markup=False,
                soft_wrap=True,
            )
        code = EXIT_FAILED
        try:
            started = time.perf_counter()
            try:
                with board.display():
                    outcomes = asyncio.run(
                        _batch_async(
                            items,
                            store=run_store,
                            registry=registry,
                            handle=handle,
                            concurrency=concurrency,
                            batch_id=bid,
                            name=experiment.id,
                            board=board,
                            run_timeout=timeout,
                            allow_imports=allow_imports,
                        )
                    )
            except KeyboardInterrupt:
                last = board.last
                rest = last.total - last.done
                _error(
                    f"batch {bid} cancelled (interrupted): {last.completed} completed, "
                    f"{last.failed} failed, {rest} recorded as cancelled"
                )
                _warn(f"trace:    {_trace_destination(handle)}", style="red")
                _warn(f"trace id: {watcher.trace_id or '-'}", style="red")
                _warn(f"store:    {run_store.url}", style="red")
                code = EXIT_INTERRUPTED
            else:
                report = _BatchReport(
                    batch_id=bid,
                    experiment_id=experiment.id,
                    points=[_point_of(item) for item in items],
                    trace_id=watcher.trace_id,
                    as_children=len(items) <= DEFAULT_TRACE_CHILDREN,
                    destination=_trace_destination(handle),
                    store_url=run_store.url,
                    elapsed=time.perf_counter() - started,
                    jaeger_url=jaeger_url,
                )
                if json_:
                    _print_json(batch_json(outcomes, report))
                else:
                    _print_batch_summary(outcomes, report)
                code = 0 if all(o.ok for o in outcomes) else EXIT_FAILED
        finally:
            _shutdown_telemetry(handle)
    raise typer.Exit(code)


# --- crucible validate -------------------------------------------------------------------------


@app.command("validate")
def validate_command(
    file: FileArgument,
    set_: SetOption = None,
    allow_imports: AllowImportsOption = False,
) -> None:
    """Check an experiment file without running it: stages resolve, options validate."""
    with _guard():
        experiment = load_with_overrides(file, set_ or [])
        preflight(experiment, default_registry(), allow_imports=allow_imports, source=file.name)
        n = len(experiment.pipeline)
        disabled = sum(1 for sd in experiment.pipeline if not sd.enabled)
        extra = f", {disabled} disabled" if disabled else ""
        _say(
            f"ok: {n} stage{'s' if n != 1 else ''}{extra} "
            f"(experiment {experiment.id!r}, {file.name})"
        )


# --- crucible stages -------------------------------------------------------------------------


def type_text(spec: Any) -> str:
    """Render a describe() type spec: ``list[string]``, ``map[string, any]``, ``enum(a|b)``."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, tuple | list) and spec:
        tag, *rest = spec
        if tag == "list" and len(rest) == 1:
            return f"list[{type_text(rest[0])}]"
        if tag == "map" and len(rest) == 2:
            return f"map[{type_text(rest[0])}, {type_text(rest[1])}]"
        if tag == "enum" and rest:
            return "enum(" + "|".join(_short(v, 40) for v in rest[0]) + ")"
        if tag == "union" and rest:
            return " | ".join(type_text(t) for t in rest[0])
        if tag == "tuple" and rest:
            return "tuple[" + ", ".join(type_text(t) for t in rest[0]) + "]"
        if tag == "function" and rest:
            return f"function/{rest[0]}"
        if tag == "struct" and rest:
            return f"struct {getattr(rest[0], '__name__', rest[0])}"
    return repr(spec)


def _option_summary(schema: Mapping[str, Any], key: str, *, with_default: bool) -> str:
    types_ = schema.get("types") or {}
    text = f"{key} ({type_text(types_[key])}" if key in types_ else f"{key} ((unspecified)"
    defaults = schema.get("defaults") or {}
    if with_default and key in defaults:
        text += f", default {_short(defaults[key], 40)}"
    return text + ")"


def _print_stage_list(specs: Sequence[StageSpec]) -> None:
    _say("Available stages:")
    for spec in specs:
        schema = spec.describe()
        _say()
        _say(Text.assemble((spec.name, "bold"), f"  ({spec.origin})"))
        _say(f"  Description: {schema.get('description') or '(none)'}")
        required = [_option_summary(schema, k, with_default=False) for k in schema["required"]]
        optional = [_option_summary(schema, k, with_default=True) for k in schema["optional"]]
        _say(f"  Required: {', '.join(required) or '(none)'}")
        _say(f"  Optional: {', '.join(optional) or '(none)'}")


def _option_table(schema: Mapping[str, Any], keys: Sequence[str], *, required: bool) -> Table:
    props = (schema.get("json_schema") or {}).get("properties") or {}
    types_ = schema.get("types") or {}
    defaults = schema.get("defaults") or {}
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("option", no_wrap=True)
    table.add_column("type")
    if not required:
        table.add_column("default")
    table.add_column("description", overflow="fold")
    for key in keys:
        kind = type_text(types_[key]) if key in types_ else "(unspecified)"
        desc = str((props.get(key) or {}).get("description", ""))
        cells = [Text(key), Text(kind)]
        if not required:
            cells.append(Text(_short(defaults[key], 40) if key in defaults else "-"))
        cells.append(Text(desc))
        table.add_row(*cells)
    return table


def _print_stage_detail(spec: StageSpec) -> None:
    schema = spec.describe()
    out = _console()
    _say(Text.assemble("Stage: ", (spec.name, "bold")))
    _say(f"Origin: {spec.origin}")
    if schema.get("version"):
        _say(f"Version: {schema['version']}")
    _say(f"Schema version: {schema.get('__schema_version__', '-')}")
    _say(f"Description: {schema.get('description') or '(none)'}")
    for title, keys, required in (
        ("Required options", schema["required"], True),
        ("Optional options", schema["optional"], False),
    ):
        _say()
        if not keys:
            _say(f"{title}: (none)")
            continue
        _say(f"{title}:")
        out.print(_option_table(schema, keys, required=required))
    if spec.extensions:
        _say()
        _say("Extensions:")
        for key, value in spec.extensions.items():
            _say(f"  {key}: {_short(value)}")


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(data), indent=2, ensure_ascii=False) + "\n")


@app.command("stages")
def stages_command(
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Show one stage in detail.")
    ] = None,
    json_: JsonOption = False,
) -> None:
    """List the registered stages (entry-point group crucible.stages) and their options."""
    with _guard():
        registry = default_registry()
        specs = registry.specs()
        if name is not None:
            if name not in registry:
                known = ", ".join(registry.names()) or "(none)"
                raise CliError(f"unknown stage {name!r}", lines=[f"known stages: {known}"])
            spec = registry.get(name)
            if json_:
                _print_json(spec.describe())
            else:
                _print_stage_detail(spec)
            return
        if json_:
            _print_json([s.describe() for s in specs])
            return
        if not specs:
            _say(
                "No stages registered. Install a package that declares stages in the "
                f"{ENTRY_POINT_GROUP!r} entry-point group, or use 'module:' with --allow-imports."
            )
            return
        _print_stage_list(specs)


# --- crucible runs list / show ---------------------------------------------------------------


def _store_missing(url: str | None) -> bool:
    """True when the store is a SQLite file that does not exist (so no run was ever stored)."""
    parsed = normalize_url(url)
    db = parsed.database
    if parsed.get_backend_name() != "sqlite" or not db or db == ":memory:":
        return False
    return not db.startswith("file:") and not Path(db).exists()


async def _with_store(url: str | None, op: str, **kwargs: Any) -> Any:
    store = RunStore(url)
    try:
        return await getattr(store, op)(**kwargs)
    finally:
        await store.close()


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "-"


def _run_json(info: RunInfo, jaeger_url: str) -> dict[str, Any]:
    data = info.to_dict()
    data["jaeger_url"] = _jaeger_link(jaeger_url, info.trace_id)
    return data


@runs_app.command("list")
def runs_list_command(
    store: StoreOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Most runs to show.")] = 20,
    experiment: Annotated[
        str | None, typer.Option("--experiment", help="Only runs of this experiment id.")
    ] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="Only runs with this status.")
    ] = None,
    json_: JsonOption = False,
    jaeger_url: JaegerOption = DEFAULT_JAEGER_URL,
) -> None:
    """List stored runs, newest first."""
    with _guard():
        statuses = [s.value for s in RunStatus]
        if status is not None and status not in statuses:
            raise CliError(f"--status {status!r}: expected one of {', '.join(statuses)}")
        runs: list[RunInfo] = []
        if not _store_missing(store):
            runs = asyncio.run(
                _with_store(
                    store, "list_runs", limit=limit, experiment_id=experiment, status=status
                )
            )
        if json_:
            _print_json([_run_json(r, jaeger_url) for r in runs])
            return
        if not runs:
            _say("no runs recorded")
            return
        table = Table(box=box.SIMPLE_HEAD, show_edge=False)
        for col in ("run id", "experiment", "status", "started", "duration", "trace id", "jaeger"):
            table.add_column(col, overflow="fold")
        for r in runs:
            table.add_row(
                Text(r.run_id),
                Text(r.experiment_id),
                Text(r.status, style=_run_style(r.status)),
                _when(r.started_at),
                _fmt_duration(r.duration_s),
                r.trace_id or "-",
                _jaeger_link(jaeger_url, r.trace_id) or "-",
            )
        _console().print(table)


def _run_style(status: str) -> str:
    return {"completed": "green", "running": "yellow"}.get(status, "red")


@runs_app.command("show")
def runs_show_command(
    run_id: Annotated[str, typer.Argument(help="The run id.", show_default=False)],
    store: StoreOption = None,
    json_: JsonOption = False,
    jaeger_url: JaegerOption = DEFAULT_JAEGER_URL,
) -> None:
    """Show one stored run: status, times, trace, metrics, stage attempts and artifacts."""
    with _guard():
        info: RunInfo | None = None
        if not _store_missing(store):
            info = asyncio.run(_with_store(store, "get_run", run_id=run_id))
        if info is None:
            raise CliError(f"unknown run id {run_id!r}")
        if json_:
            _print_json(_run_json(info, jaeger_url))
            return
        _show_run(info, jaeger_url)


def _show_run(info: RunInfo, jaeger_url: str) -> None:
    out = _console()
    fields = [
        ("run", info.run_id),
        ("experiment", info.experiment_id),
        ("status", info.status),
        ("started", _when(info.started_at)),
        ("finished", _when(info.finished_at)),
        ("duration", _fmt_duration(info.duration_s)),
        ("trace id", info.trace_id or "-"),
        ("jaeger", _jaeger_link(jaeger_url, info.trace_id) or "-"),
    ]
    if info.batch_id:
        fields.append(("batch", info.batch_id))
    if info.failure_stage or info.failure_message:
        fields.append(
            (
                "failure",
                f"stage {info.failure_stage!r}: {info.error_type or 'error'}: "
                f"{info.failure_message or ''}",
            )
        )
    for key, value in fields:
        _say(f"{key + ':':<12}{value}")
    _say()
    out.print(_metrics_table(info.metrics, "metrics"))
    _say()
    if info.attempts:
        table = Table(
            title="stage attempts", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False
        )
        for col in ("#", "stage", "attempt", "result", "duration", "error"):
            table.add_column(col, overflow="fold")
        for a in info.attempts:
            error = f"{a.error_type}: {a.error_message}" if a.error_type else ""
            table.add_row(
                "-" if a.stage_index is None else str(a.stage_index),
                Text(a.stage),
                str(a.attempt),
                Text(a.result, style=_STATUS_STYLES.get(a.result, "")),
                _fmt_duration(a.duration_s),
                Text(error),
            )
        out.print(table)
    else:
        _say("stage attempts: (none)")
    _say()
    if info.artifacts:
        table = Table(title="artifacts", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
        for col in ("name", "type", "format", "location"):
            table.add_column(col, overflow="fold")
        for art in info.artifacts:
            table.add_row(Text(art.name), art.type, art.format or "-", Text(art.location or "-"))
        out.print(table)
    else:
        _say("artifacts: (none)")


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console-script entry point: run the ``crucible`` app and exit with its status."""
    app(args=list(argv) if argv is not None else None, prog_name="crucible")
    raise SystemExit(0)  # pragma: no cover - typer always exits in standalone mode
