"""``crucible runs list`` and ``crucible runs show``: read runs back from the run store.

``runs diff``, ``runs rerun`` and ``runs resume`` live in their own modules (diff, replay).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from crucible.cli.app import (
    DEFAULT_JAEGER_URL,
    CliError,
    JaegerOption,
    JsonOption,
    StoreOption,
    guard,
)
from crucible.cli.output import (
    STATUS_STYLES,
    console,
    format_duration,
    jaeger_link,
    metrics_table,
    print_json,
    say,
)
from crucible.status import RunStatus

if TYPE_CHECKING:
    from crucible.store import RunInfo


runs_app = typer.Typer(help="Inspect runs recorded in the run store.", no_args_is_help=True)


def store_missing(url: str | None) -> bool:

    from crucible.store import normalize_url

    """True when the store is a SQLite file that does not exist (so no run was ever stored)."""
    parsed = normalize_url(url)
    db = parsed.database
    if parsed.get_backend_name() != "sqlite" or not db or db == ":memory:":
        return False
    return not db.startswith("file:") and not Path(db).exists()


async def _with_store(url: str | None, op: str, **kwargs: Any) -> Any:

    from crucible.store import RunStore

    store = RunStore(url)
    try:
        return await getattr(store, op)(**kwargs)
    finally:
        await store.close()


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "-"


def _run_json(info: RunInfo, jaeger_url: str) -> dict[str, Any]:
    data = info.to_dict()
    data["jaeger_url"] = jaeger_link(jaeger_url, info.trace_id)
    return data


def _run_style(status: str) -> str:
    return {"completed": "green", "running": "yellow"}.get(status, "red")


@runs_app.command("list")
def runs_list_command(
    store: StoreOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Most runs to show.")] = 20,
    experiment: Annotated[
        str | None, typer.Option("--experiment", help="Only runs of this experiment id.")
    ] = None,
    status: Annotated[
        RunStatus | None, typer.Option("--status", help="Only runs with this status.")
    ] = None,
    json_: JsonOption = False,
    jaeger_url: JaegerOption = DEFAULT_JAEGER_URL,
) -> None:
    """List stored runs, newest first."""
    with guard():
        runs: list[RunInfo] = []
        if not store_missing(store):
            runs = asyncio.run(
                _with_store(
                    store, "list_runs", limit=limit, experiment_id=experiment, status=status
                )
            )
        if json_:
            print_json([_run_json(r, jaeger_url) for r in runs])
            return
        if not runs:
            say("no runs recorded")
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
                format_duration(r.duration_s),
                r.trace_id or "-",
                jaeger_link(jaeger_url, r.trace_id) or "-",
            )
        console().print(table)


@runs_app.command("show")
def runs_show_command(
    run_id: Annotated[str, typer.Argument(help="The run id.", show_default=False)],
    store: StoreOption = None,
    json_: JsonOption = False,
    jaeger_url: JaegerOption = DEFAULT_JAEGER_URL,
) -> None:
    """Show one stored run: status, times, trace, metrics, stage attempts and artifacts."""
    with guard():
        info: RunInfo | None = None
        if not store_missing(store):
            info = asyncio.run(_with_store(store, "get_run", run_id=run_id))
        if info is None:
            raise CliError(f"unknown run id {run_id!r}")
        if json_:
            print_json(_run_json(info, jaeger_url))
            return
        _show_run(info, jaeger_url)


def _show_run(info: RunInfo, jaeger_url: str) -> None:
    out = console()
    fields = [
        ("run", info.run_id),
        ("experiment", info.experiment_id),
        ("status", info.status),
        ("started", _when(info.started_at)),
        ("finished", _when(info.finished_at)),
        ("duration", format_duration(info.duration_s)),
        ("trace id", info.trace_id or "-"),
        ("jaeger", jaeger_link(jaeger_url, info.trace_id) or "-"),
    ]
    if info.batch_id:
        fields.append(("batch", info.batch_id))
    for label, value in (("rerun of", info.rerun_of), ("resumed from", info.resumed_from)):
        if value:
            fields.append((label, value))
    if info.git_commit:
        dirty = {True: " (uncommitted changes)", False: "", None: " (state unknown)"}
        fields.append(("git", info.git_commit + dirty[info.git_dirty]))
    if info.versions:
        fields.append(("versions", ", ".join(f"{k} {v}" for k, v in info.versions.items())))
    if info.failure_stage or info.failure_message:
        fields.append(
            (
                "failure",
                f"stage {info.failure_stage!r}: {info.error_type or 'error'}: "
                f"{info.failure_message or ''}",
            )
        )
    for key, value in fields:
        say(f"{key + ':':<11} {value}")
    say()
    out.print(metrics_table(info.metrics, "metrics"))
    say()
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
                Text(a.result, style=STATUS_STYLES.get(a.result, "")),
                format_duration(a.duration_s),
                Text(error),
            )
        out.print(table)
    else:
        say("stage attempts: (none)")
    say()
    if info.artifacts:
        table = Table(title="artifacts", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
        for col in ("name", "type", "format", "location"):
            table.add_column(col, overflow="fold")
        for art in info.artifacts:
            table.add_row(Text(art.name), art.type, art.format or "-", Text(art.location or "-"))
        out.print(table)
    else:
        say("artifacts: (none)")
