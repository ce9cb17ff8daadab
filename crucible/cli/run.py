"""``crucible run``: pre-flight, run the stages on a live board, store the run, show where it is."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from crucible.cli.app import (
    DEFAULT_JAEGER_URL,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    AllowImportsOption,
    AllowReadOption,
    AllowWriteOption,
    CheckpointOption,
    CliError,
    ExporterOption,
    FileArgument,
    JaegerOption,
    JsonLogsOption,
    RunIdOption,
    SetOption,
    StoreOption,
    TimeoutOption,
    check_run_id,
    check_timeout,
    configure_logging,
    guard,
)
from crucible.cli.journal import warn_if_journaled
from crucible.cli.output import (
    console,
    error,
    format_duration,
    headlines_table,
    metrics_table,
    print_json,
    say,
    short,
    warn,
)
from crucible.cli.preflight import file_access_for, preflight
from crucible.cli.signals import EXIT_TERMINATED, Terminated, run_cancellable, when_stopping
from crucible.cli.terminal import inline
from crucible.cli.tracing import (
    run_url,
    setup_telemetry,
    shutdown_telemetry,
    trace_destination,
    trace_link,
)

if TYPE_CHECKING:
    from crucible.cli.boards import StageBoard
    from crucible.context import Context
    from crucible.errors import StageFailed
    from crucible.experiment import Experiment
    from crucible.files import FileAccess
    from crucible.registry import Registry
    from crucible.telemetry.setup import TelemetryHandle


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
    board: StageBoard,
    url: str | None,
    access: FileAccess,
    extra: Mapping[str, Any],
) -> _Outcome:

    import anyio

    from crucible.engine import run
    from crucible.errors import StageFailed
    from crucible.store import RunStore

    store = RunStore(store_url)
    when_stopping(store.hurry)
    try:
        store.warm_up()
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
                observers=[board],
                url=url,
                file_access=access,
                **extra,
            )
        except StageFailed as err:
            return _Outcome(failure=err)
        return _Outcome(context=ctx)
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()
        warn_if_journaled(store)


def _trace_id_of(ctx: Context | None) -> str | None:
    return ctx.trace.trace_id if ctx is not None and ctx.trace is not None else None


def _print_where(trace_id: str | None, handle: TelemetryHandle, jaeger_url: str) -> None:
    """Where the trace went (the run id is on the summary's first line, once)."""
    say(f"trace:    {trace_destination(handle)}")
    say(f"trace id: {trace_id or '-'}")
    link = trace_link(handle, jaeger_url, trace_id)
    if link:
        say(f"jaeger:   {link}")


def _print_artifacts(ctx: Context) -> None:

    from crucible.artifact import Artifact

    if not ctx.artifacts:
        return
    say("reports:")
    for name, value in ctx.artifacts.items():
        art = Artifact.from_value(name, value)
        where = _relative(art.location) if art.location is not None else short(value)
        say("  " + inline(f"{name}: {where}" + (f" ({art.format})" if art.format else "")))


def _relative(location: str) -> str:
    """A file path under the working directory as a short relative path; others unchanged."""
    path = Path(location)
    if path.is_absolute() and path.is_relative_to(Path.cwd()):
        return str(path.relative_to(Path.cwd()))
    return location


def _print_results(ctx: Context, title: str) -> None:
    """Headline results first, then the metric table."""
    out = console()
    table = headlines_table(ctx.metrics)
    if table is not None:
        out.print(table)
        say()
    out.print(metrics_table(ctx.metrics, title))


def _run_json(
    outcome: _Outcome, *, run_id: str, trace_id: str | None, jaeger: str | None, elapsed: float
) -> dict[str, Any]:
    """The ``--json`` document: the run's status, headlines, full metrics and artifacts."""
    from crucible.headline import headlines

    ctx = outcome.context or (outcome.failure.context if outcome.failure else None)
    failure = outcome.failure
    status = "completed"
    if failure is not None:
        status = {"timeout": "timed_out", "cancellation": "cancelled"}.get(failure.result, "failed")
    metrics = dict(ctx.metrics) if ctx is not None else {}
    return {
        "run_id": run_id,
        "experiment_id": ctx.experiment_id if ctx is not None else None,
        "status": status,
        "duration_s": elapsed,
        "trace_id": trace_id,
        "jaeger_url": jaeger,
        "headlines": dict(headlines(metrics)),
        "metrics": metrics,
        "artifacts": dict(ctx.artifacts) if ctx is not None else {},
        "error": None
        if failure is None
        else {
            "stage": failure.stage,
            "result": failure.result,
            "type": type(failure.cause).__name__,
            "message": str(failure.cause),
        },
    }


def _report_outcome(
    outcome: _Outcome,
    *,
    run_id: str,
    board: StageBoard,
    handle: TelemetryHandle,
    jaeger_url: str,
    elapsed: float,
    json_: bool = False,
) -> int:
    last = outcome.context or (outcome.failure.context if outcome.failure else None)
    trace_id = _trace_id_of(last) or board.trace_id
    code = 0 if outcome.context is not None else EXIT_FAILED
    if json_:
        if outcome.failure is not None:
            stopped = outcome.failure
            rid = inline(run_id)
            error(f"run {rid} failed: stage {stopped.stage!r} ended with {stopped.result}")
        link = trace_link(handle, jaeger_url, trace_id)
        print_json(
            _run_json(outcome, run_id=run_id, trace_id=trace_id, jaeger=link, elapsed=elapsed)
        )
        return code
    if outcome.context is not None:
        ctx = outcome.context
        n = len(ctx.experiment.pipeline)
        say()
        say(
            inline(
                f"run {run_id} completed in {format_duration(elapsed)} "
                f"(experiment {ctx.experiment_id}, {n} stage{'s' if n != 1 else ''})"
            ),
            style="green",
        )
        say()
        _print_results(ctx, "metrics")
        _print_artifacts(ctx)
        _print_where(trace_id, handle, jaeger_url)
        return code
    failure = outcome.failure
    assert failure is not None
    cause = failure.cause
    verb = "timed out" if failure.result == "timeout" else "failed"
    error(
        f"run {inline(run_id)} {verb}: stage {failure.stage!r} ended with {failure.result}: "
        f"{type(cause).__name__}: {cause}"
    )
    say()
    if last is not None:
        _print_results(last, "last good metrics")
        _print_artifacts(last)
    _print_where(trace_id, handle, jaeger_url)
    return code


def run_command(
    file: FileArgument,
    set_: SetOption = None,
    run_id: RunIdOption = None,
    store: StoreOption = None,
    exporter: ExporterOption = None,
    json_logs: JsonLogsOption = False,
    timeout: TimeoutOption = None,
    allow_imports: AllowImportsOption = False,
    allow_read: AllowReadOption = None,
    allow_write: AllowWriteOption = None,
    checkpoint: CheckpointOption = False,
    jaeger_url: JaegerOption = DEFAULT_JAEGER_URL,
    json_: Annotated[
        bool,
        typer.Option(
            "--json",
            metavar="",
            help="Print the finished run (full metrics) as JSON; progress to stderr.",
        ),
    ] = False,
) -> None:
    """Run an experiment: pre-flight, run every stage, store the run, print where it went."""
    from crucible.experiment import load_with_overrides

    with guard():
        check_timeout(timeout)
        check_run_id(run_id)
        experiment = load_with_overrides(file, set_ or [])
        if experiment.matrix:
            warn(
                "warning: crucible run does not expand the file's matrix (it runs the pipeline "
                f"once as written); crucible batch {file.name} runs every point"
            )
        if checkpoint:
            experiment = experiment.model_copy(update={"checkpoint": True})
        code = execute_run(
            experiment, source=file.name, run_id=run_id, store=store, exporter=exporter,
            json_logs=json_logs, timeout=timeout, allow_imports=allow_imports,
            jaeger_url=jaeger_url, access=file_access_for(file, allow_read, allow_write),
            json_=json_,
        )  # fmt: skip
    raise typer.Exit(code)


def execute_run(
    experiment: Experiment,
    *,
    source: str,
    run_id: str | None,
    store: str | None,
    exporter: str | None,
    json_logs: bool,
    timeout: float | None,
    allow_imports: bool,
    jaeger_url: str,
    access: FileAccess,
    extra: Mapping[str, Any] | None = None,
    json_: bool = False,
) -> int:
    """Pre-flight, then run ``experiment`` on a live board; the exit code (0, 1, 130 or 143).

    ``access`` says where stages may read and write; ``extra`` goes to ``crucible.run`` as
    keyword arguments (a rerun's or resume's links); ``json_`` prints the finished run as JSON
    on stdout and the progress on stderr.
    """
    from crucible import scrub
    from crucible.cli.boards import StageBoard  # rich.live and the observers: not for --help
    from crucible.engine.plan import plan_secrets
    from crucible.registry import default_registry
    from crucible.runids import new_run_id

    registry = default_registry()
    resumed = (extra or {}).get("resume_from")
    planned = preflight(
        experiment, registry, allow_imports=allow_imports, source=source, access=access,
        restored=0 if resumed is None else resumed.start,
    )  # fmt: skip
    # The run's secret values are scrubbed from everything printed, also after it ended.
    token = scrub.activate(scrub.for_run(plan_secrets(planned), None))
    try:
        if json_logs:
            configure_logging(json_logs=True)
        rid = run_id or new_run_id()  # minted here: the store need not confirm it is new
        handle = setup_telemetry(exporter)
        out = console(stderr=json_)  # keep stdout clean for --json
        board = StageBoard(planned, out, live=out.is_interactive)
        code = EXIT_FAILED
        try:
            started = time.perf_counter()
            try:
                with board.display():
                    outcome = run_cancellable(
                        _run_async(
                            experiment,
                            run_id=rid,
                            store_url=store,
                            registry=registry,
                            handle=handle,
                            run_timeout=timeout,
                            allow_imports=allow_imports,
                            board=board,
                            url=run_url(handle, jaeger_url),
                            access=access,
                            extra=extra or {},
                        )
                    )
            except (KeyboardInterrupt, Terminated) as stop:
                why = "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"
                error(f"run {inline(rid)} cancelled ({why}); it is recorded as cancelled")
                _print_where(board.trace_id, handle, jaeger_url)
                code = EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED
            else:
                code = _report_outcome(
                    outcome, run_id=rid, board=board, handle=handle, jaeger_url=jaeger_url,
                    elapsed=time.perf_counter() - started, json_=json_,
                )  # fmt: skip
        finally:
            shutdown_telemetry(handle)
        return code
    finally:
        scrub.deactivate(token)
