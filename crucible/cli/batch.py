"""``crucible batch``: every point of an experiment's matrix as one batch, with a progress board."""

from __future__ import annotations

import dataclasses
import importlib.util
import time
import uuid
from collections.abc import Sequence
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
    JsonOption,
    SetOption,
    StoreOption,
    TimeoutOption,
    check_timeout,
    configure_logging,
    guard,
    log_level,
)
from crucible.cli.batch_summary import (
    SUMMARY_ROWS,
    BatchReport,
    OutcomesAtEnd,
    batch_json,
    parse_show,
    print_batch_summary,
)
from crucible.cli.export import check_export_path, export_runs
from crucible.cli.journal import warn_if_journaled
from crucible.cli.output import console, error, print_json, warn
from crucible.cli.preflight import (
    expand_file_matrix,
    file_access_for,
    point_of,
    preflight_batch,
    warn_matrix_overrides,
)
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
    from crucible.batch import (
        BatchItem,
        RunOutcome,
    )
    from crucible.cli.boards import BatchBoard
    from crucible.files import FileAccess
    from crucible.observers import RunObserver
    from crucible.registry import Registry
    from crucible.store import RunStore
    from crucible.telemetry.setup import TelemetryHandle


DEFAULT_CONCURRENCY = 8


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
    url: str | None,
    access: FileAccess,
    ray: RaySettings | None = None,
    ending: RunObserver | None = None,
) -> list[RunOutcome]:

    import anyio

    from crucible.batch import run_batch

    executor: Any = None
    if ray is not None:
        from crucible.executors import RayExecutor

        exporters = ",".join(handle.exporters) or "none"
        logs = {"CRUCIBLE_WORKER_LOG_JSON": "1" if ray.json_logs else "0",
                "CRUCIBLE_WORKER_LOG_LEVEL": ray.log_level}  # fmt: skip
        executor = RayExecutor(ray.address, actors=ray.actors, exporter=exporters, env=logs)
    try:
        await store.open()
        return await run_batch(
            items,
            max_concurrency=concurrency,
            batch_id=batch_id,
            name=name,
            # Ray runs report to the driver as their chunks return, not run by run: the board
            # follows the batch's progress there and takes only the batch's start from observing.
            observers=[
                board if executor is None else _batch_start_of(board),
                *([ending] if ending is not None else []),
            ],
            progress=board.progress if executor is not None else None,
            executor=executor,
            store=store,
            tracer_provider=handle.tracer_provider,
            meter_provider=handle.meter_provider,
            registry=registry,
            timeout=run_timeout,
            allow_imports=allow_imports,
            url=url,
            file_access=access,
        )
    finally:
        with anyio.CancelScope(shield=True):
            if executor is not None:
                await executor.shutdown()
            await store.close()
        warn_if_journaled(store)


def _batch_start_of(board: BatchBoard) -> RunObserver:
    """An observer passing only ``on_batch_start`` to the board (Ray runs are not observed)."""
    from crucible.observers import BatchStart, RunObserver

    class BatchStartOnly(RunObserver):
        def on_batch_start(self, *, batch: BatchStart) -> None:
            board.on_batch_start(batch=batch)

    return BatchStartOnly()


@dataclass(frozen=True)
class RaySettings:
    """``--executor ray``: the cluster address and how many actors run the runs."""

    address: str | None
    actors: int
    json_logs: bool = False
    log_level: str = "info"


def ray_settings(executor: str, address: str | None, actors: int | None) -> RaySettings | None:
    """Check the executor options; None for the local executor."""
    name = executor.strip().lower()
    if name not in ("local", "ray"):
        raise CliError(f"--executor must be 'local' or 'ray', got {executor!r}")
    if name == "local":
        for flag, value in (("--ray-address", address), ("--ray-actors", actors)):
            if value is not None:
                raise CliError(f"{flag} needs --executor ray")
        return None
    if importlib.util.find_spec("ray") is None:
        raise CliError(
            "--executor ray needs Ray: pip install 'crucible-pipelines[ray]'; nothing was run"
        )
    return RaySettings(address or None, actors or 2)


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
    allow_read: AllowReadOption = None,
    allow_write: AllowWriteOption = None,
    timeout: TimeoutOption = None,
    checkpoint: CheckpointOption = False,
    batch_id: Annotated[
        str | None, typer.Option("--batch-id", help="Batch id (default: a new UUID).")
    ] = None,
    json_: JsonOption = False,
    jaeger_url: JaegerOption = DEFAULT_JAEGER_URL,
    show: Annotated[
        list[str] | None,
        typer.Option(
            "--show",
            metavar="METRIC[,METRIC]",
            help="Metric columns of the summary (flattened keys such as bench.headline); "
            "default: the runs' headlines, else their first numeric metrics.",
        ),
    ] = None,
    rows: Annotated[
        int,
        typer.Option(
            "--rows",
            min=0,
            help=f"Most runs (and failures) the summary lists (default {SUMMARY_ROWS}; 0: all). "
            "--export and --json always have every run.",
        ),
    ] = SUMMARY_ROWS,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            metavar="FILE.csv",
            help="Also write one CSV row per run: ids, status, matrix values, metrics "
            "(the --show ones, else all).",
        ),
    ] = None,
    executor: Annotated[
        str,
        typer.Option(
            "--executor",
            metavar="local|ray",
            help="Where the runs execute: local (this process) or ray (Ray actors; needs the "
            "ray extra).",
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            metavar="ADDR",
            help="Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: start or join a "
            "local Ray instance).",
        ),
    ] = None,
    ray_actors: Annotated[
        int | None,
        typer.Option("--ray-actors", min=1, help="Ray actors running the runs (default 2)."),
    ] = None,
) -> None:
    """Run every point of the experiment's matrix as one batch; print a summary per run."""
    from crucible import scrub
    from crucible.batch import DEFAULT_TRACE_CHILDREN
    from crucible.cli.boards import BatchBoard  # rich.live and the observers: not for --help
    from crucible.experiment import load_with_overrides
    from crucible.registry import default_registry
    from crucible.store import RunStore

    with guard(), scrub.Scope() as hide:
        check_timeout(timeout)
        if batch_id is not None and not batch_id.strip():
            raise CliError("--batch-id must not be empty")
        columns = parse_show(show)
        ray = ray_settings(executor, ray_address, ray_actors)
        if ray is not None:  # the workers log as this command does
            ray = dataclasses.replace(ray, json_logs=json_logs, log_level=log_level())
        export_to = check_export_path(export) if export is not None else None
        experiment = load_with_overrides(file, set_ or [])
        if checkpoint:
            experiment = experiment.model_copy(update={"checkpoint": True})
        warn_matrix_overrides(experiment, set_ or [])
        items = expand_file_matrix(experiment, source=file.name)
        registry = default_registry()
        access = file_access_for(file, allow_read, allow_write)
        secrets = preflight_batch(
            items, registry, allow_imports=allow_imports, source=file.name, access=access
        )
        # Every variant's secret values are scrubbed from what the command prints.
        hide.use(scrub.for_run(secrets, None))
        run_store = RunStore(store)
        run_store.warm_up()  # its writer process starts while the batch gets ready
        if json_logs:
            configure_logging(json_logs=True)
        bid = batch_id or str(uuid.uuid4())
        handle = setup_telemetry(exporter)
        shown_on = console(stderr=json_)  # keep stdout clean for --json
        board = BatchBoard(experiment.id, len(items), shown_on, live=shown_on.is_interactive)
        if not shown_on.is_interactive:
            n = len(items)
            shown_on.print(
                inline(
                    f"batch {bid}: {n} run{'s' if n != 1 else ''} of {experiment.id}, "
                    f"at most {concurrency} at once"
                    + (f", on Ray ({ray.actors} actors)" if ray is not None else "")
                ),
                markup=False,
                soft_wrap=True,
            )
        code = EXIT_FAILED
        ended = OutcomesAtEnd()

        def report() -> BatchReport:
            return BatchReport(
                batch_id=bid,
                experiment_id=experiment.id,
                points=[point_of(item) for item in items],
                trace_id=board.trace_id,
                as_children=len(items) <= DEFAULT_TRACE_CHILDREN,
                destination=trace_destination(handle),
                store_url=run_store.url,
                elapsed=time.perf_counter() - started,
                jaeger_link=trace_link(handle, jaeger_url, board.trace_id),
            )

        try:
            started = time.perf_counter()
            when_stopping(run_store.hurry)
            try:
                with board.display():
                    outcomes = run_cancellable(
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
                            url=run_url(handle, jaeger_url),
                            access=access,
                            ray=ray,
                            ending=ended.observer(),
                        )
                    )
            except (KeyboardInterrupt, Terminated) as stop:
                last = board.last
                rest = last.total - last.done
                why = "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"
                error(
                    f"batch {bid} cancelled ({why}): {last.completed} completed, "
                    f"{last.failed} failed, {rest} recorded as cancelled"
                )
                warn(f"trace:    {trace_destination(handle)}", style="red")
                warn(f"trace id: {board.trace_id or '-'}", style="red")
                warn(f"store:    {run_store.url}", style="red")
                code = EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED
                # Every run, the cancelled ones included, as a finished batch has them.
                got = report()
                if json_:
                    print_json({**batch_json(ended.outcomes, got), "cancelled": why})
                if export_to:
                    export_runs(export_to, ended.outcomes, got.points, columns)
            else:
                got = report()
                if json_:
                    print_json(batch_json(outcomes, got))
                else:
                    print_batch_summary(outcomes, got, columns, rows=rows)
                code = 0 if all(o.ok for o in outcomes) else EXIT_FAILED
                if export_to and not export_runs(export_to, outcomes, got.points, columns):
                    code = EXIT_FAILED
        finally:
            shutdown_telemetry(handle)
    raise typer.Exit(code)
