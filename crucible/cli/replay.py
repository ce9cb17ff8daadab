"""``crucible runs rerun`` and ``crucible runs resume``: run a stored run again, as a new run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from crucible.cli.app import (
    DEFAULT_JAEGER_URL,
    AllowImportsOption,
    AllowReadOption,
    AllowWriteOption,
    CheckpointOption,
    CliError,
    ExporterOption,
    JaegerOption,
    JsonLogsOption,
    JsonOption,
    RunIdOption,
    SetOption,
    StoreOption,
    TimeoutOption,
    check_run_id,
    check_timeout,
    guard,
)
from crucible.cli.journal import reading
from crucible.cli.lookup import resolve_run_id
from crucible.cli.output import say, warn
from crucible.cli.runs import store_missing
from crucible.cli.terminal import inline

if TYPE_CHECKING:
    from crucible.reproduce import Replay


RunIdArgument = Annotated[
    str,
    typer.Argument(
        help="The stored run's id, or its first characters.", metavar="RUN_ID", show_default=False
    ),
]
Prepare = Callable[..., Awaitable["Replay"]]


def _prepare(prepare: Prepare, store_url: str | None, run_id: str, sets: Sequence[str]) -> Replay:
    """Read the stored run and make it ready to run again (ReplayError explains a refusal)."""
    import asyncio

    if store_missing(store_url):
        raise CliError(f"unknown run id {run_id!r}: no run store at {store_url or 'the default'}")

    async def go() -> Replay:
        async with reading(store_url) as store:
            return await prepare(store, await resolve_run_id(store, run_id), overrides=sets)

    return asyncio.run(go())


def _execute(
    replay: Replay,
    *,
    allow_read: Sequence[Path] | None,
    allow_write: Sequence[Path] | None,
    checkpoint: bool = False,
    **options: Any,
) -> int:

    from crucible.cli.run import execute_run
    from crucible.files import FileAccess

    experiment = replay.experiment
    if checkpoint:
        experiment = experiment.model_copy(update={"checkpoint": True})
    folder = experiment.source.parent if experiment.source is not None else None
    access = FileAccess.default(
        experiment_dir=folder, allow_read=allow_read or (), allow_write=allow_write or ()
    )
    return execute_run(
        experiment, source=f"run {replay.source.run_id}", extra=replay.run_kwargs(),
        access=access, **options,
    )  # fmt: skip


def _note(text: str, *, json_: bool) -> None:
    """What is about to run: on stdout, or on stderr when stdout is for ``--json``."""
    if json_:
        warn(text, style="")
    else:
        say(text)


def rerun_command(
    source: RunIdArgument,
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
    json_: JsonOption = False,
) -> None:
    """Run a stored run's configuration again as a new run, linked to the original.

    Secret options were redacted when the run was stored: pass each again with --set.
    """
    from crucible.reproduce import prepare_rerun

    with guard():
        check_timeout(timeout)
        check_run_id(run_id)
        replay = _prepare(prepare_rerun, store, source, set_ or [])
        _note(inline(f"rerun of {replay.source.run_id} (experiment {replay.experiment.id})"),
              json_=json_)  # fmt: skip
        code = _execute(
            replay, checkpoint=checkpoint, run_id=run_id, store=store, exporter=exporter,
            json_logs=json_logs, timeout=timeout, allow_imports=allow_imports,
            jaeger_url=jaeger_url, allow_read=allow_read, allow_write=allow_write, json_=json_,
        )  # fmt: skip
    raise typer.Exit(code)


def resume_command(
    source: RunIdArgument,
    set_: SetOption = None,
    run_id: RunIdOption = None,
    store: StoreOption = None,
    exporter: ExporterOption = None,
    json_logs: JsonLogsOption = False,
    timeout: TimeoutOption = None,
    allow_imports: AllowImportsOption = False,
    allow_read: AllowReadOption = None,
    allow_write: AllowWriteOption = None,
    jaeger_url: JaegerOption = DEFAULT_JAEGER_URL,
    json_: JsonOption = False,
) -> None:
    """Continue a failed, cancelled or abandoned run from its first unfinished stage.

    Needs the run's checkpoints (checkpoint: true, or --checkpoint when it ran). The stages
    before the resume point are not run again: they show as skip, restored.
    """
    from crucible.reproduce import prepare_resume

    with guard():
        check_timeout(timeout)
        check_run_id(run_id)
        replay = _prepare(prepare_resume, store, source, set_ or [])
        point = replay.resume_from
        assert point is not None
        stages = replay.experiment.pipeline
        where = f"stage {stages[point.start].name!r}" if point.start < len(stages) else "the end"
        _note(
            inline(
                f"resuming {replay.source.run_id} from {where} ({point.start} stage(s) restored)"
            ),
            json_=json_,
        )
        code = _execute(
            replay, run_id=run_id, store=store, exporter=exporter, json_logs=json_logs,
            timeout=timeout, allow_imports=allow_imports, jaeger_url=jaeger_url,
            allow_read=allow_read, allow_write=allow_write, json_=json_,
        )  # fmt: skip
    raise typer.Exit(code)
