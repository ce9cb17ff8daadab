"""``crucible run``: pre-flight, run the stages on a live board, store the run, show where it is."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
    check_timeout,
    configure_logging,
    guard,
)
from crucible.cli.boards import StageBoard
from crucible.cli.journal import warn_if_journaled
from crucible.cli.output import console, error, format_duration, metrics_table, say, short
from crucible.cli.preflight import file_access_for, preflight
from crucible.cli.signals import EXIT_TERMINATED, Terminated, run_cancellable
from crucible.cli.tracing import (
    run_url,
    setup_telemetry,
    shutdown_telemetry,
    trace_destination,
    trace_link,
)

if TYPE_CHECKING:
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


def _print_where(
    run_id: str, trace_id: str | None, handle: TelemetryHandle, jaeger_url: str
) -> None:
    say(f"trace:    {trace_destination(handle)}")
    say(f"run id:   {run_id}")
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
        where = art.location if art.location is not None else short(value)
        say(f"  {name}: {where}" + (f" ({art.format})" if art.format else ""))


def _report_outcome(
    outcome: _Outcome,
    *,
    run_id: str,
    board: StageBoard,
    handle: TelemetryHandle,
    jaeger_url: str,
    elapsed: float,
) -> int:
    out = console()
    if outcome.context is not None:
        ctx = outcome.context
        n = len(ctx.experiment.pipeline)
        say()
        say(
            f"run {run_id} completed in {format_duration(elapsed)} "
            f"(experiment {ctx.experiment_id}, {n} stage{'s' if n != 1 else ''})",
            style="green",
        )
        out.print(metrics_table(ctx.metrics, "metrics"))
        _print_artifacts(ctx)
        _print_where(run_id, _trace_id_of(ctx) or board.trace_id, handle, jaeger_url)
        return 0
    failure = outcome.failure
    assert failure is not None
    cause = failure.cause
    verb = "timed out" if failure.result == "timeout" else "failed"
    error(
        f"run {run_id} {verb}: stage {failure.stage!r} ended with {failure.result}: "
        f"{type(cause).__name__}: {cause}"
    )
    last = failure.context
    say()
    if last is not None:
        out.print(metrics_table(last.metrics, "last good metrics"))
        _print_artifacts(last)
    _print_where(run_id, _trace_id_of(last) or board.trace_id, handle, jaeger_url)
    return EXIT_FAILED


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
) -> None:

    from crucible.experiment import load_with_overrides

    """Run an experiment: pre-flight, run every stage, store the run, print where it went."""
    with guard():
        check_timeout(timeout)
        experiment = load_with_overrides(file, set_ or [])
        if checkpoint:
            experiment = experiment.model_copy(update={"checkpoint": True})
        code = execute_run(
            experiment, source=file.name, run_id=run_id, store=store, exporter=exporter,
            json_logs=json_logs, timeout=timeout, allow_imports=allow_imports,
            jaeger_url=jaeger_url, access=file_access_for(file, allow_read, allow_write),
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
) -> int:

    from crucible.registry import default_registry

    """Pre-flight, then run ``experiment`` on a live board; the exit code (0, 1, 130 or 143).

    ``access`` says where stages may read and write; ``extra`` goes to ``crucible.run`` as
    keyword arguments (a rerun's or resume's links).
    """
    registry = default_registry()
    planned = preflight(
        experiment, registry, allow_imports=allow_imports, source=source, access=access
    )
    if json_logs:
        configure_logging(json_logs=True)
    rid = run_id or str(uuid.uuid4())
    handle = setup_telemetry(exporter)
    out = console()
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
            error(f"run {rid} cancelled ({why}); it is recorded as cancelled")
            _print_where(rid, board.trace_id, handle, jaeger_url)
            code = EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED
        else:
            code = _report_outcome(
                outcome, run_id=rid, board=board, handle=handle, jaeger_url=jaeger_url,
                elapsed=time.perf_counter() - started,
            )  # fmt: skip
    finally:
        shutdown_telemetry(handle)
    return code
