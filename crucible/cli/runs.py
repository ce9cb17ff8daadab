"""``crucible runs list`` and ``crucible runs show``: read runs back from the run store.

``runs diff``, ``runs rerun`` and ``runs resume`` live in their own modules (diff, replay).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.text import Text

from crucible.cli.app import (
    DEFAULT_JAEGER_URL,
    CliError,
    JaegerOption,
    JsonOption,
    StoreOption,
    guard,
)
from crucible.cli.journal import reading
from crucible.cli.lookup import resolve_run_id, unknown
from crucible.cli.output import (
    STATUS_STYLES,
    SafeTable,
    cell,
    console,
    format_duration,
    headlines_table,
    jaeger_link,
    metrics_table,
    print_json,
    say,
    value_text,
    warn,
)
from crucible.cli.terminal import inline
from crucible.flatten import flatten, is_number
from crucible.headline import is_headline_key
from crucible.status import RunStatus
from crucible.ui.display import number

if TYPE_CHECKING:
    from crucible.store import RunInfo


_SHORT_ID = 8

runs_app = typer.Typer(help="Inspect runs recorded in the run store.", no_args_is_help=True)


def store_missing(url: str | None) -> bool:
    """True when the store is a SQLite file that does not exist and no records of it wait in
    its journal (so no run was ever stored); reading it would only create an empty file."""
    from crucible.store import RunStore, normalize_url
    from crucible.store.urls import sqlite_path

    path = sqlite_path(normalize_url(url))
    if path is None or path.exists():
        return False
    return RunStore(url).journal_pending() == 0  # records waiting: opening replays them


async def _show(url: str | None, text: str) -> RunInfo | None:
    """The run ``text`` names (a whole id or a unique prefix), with attempts and artifacts."""
    async with reading(url) as store:
        return await store.get_run(await resolve_run_id(store, text))


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "-"


def _trace_link(jaeger_url: str, info: RunInfo) -> str | None:
    """The run's Jaeger page; None when its spans were never exported (an untraced run)."""
    return None if info.trace_exported is False else jaeger_link(jaeger_url, info.trace_id)


def _run_json(info: RunInfo, jaeger_url: str) -> dict[str, Any]:
    data = info.to_dict()
    data["jaeger_url"] = _trace_link(jaeger_url, info)
    return data


def _run_style(status: str) -> str:
    return {"completed": "green", "running": "yellow"}.get(status, "red")


async def _list_runs(url: str | None, *, batch: str | None, **filters: Any) -> list[RunInfo]:
    """Runs matching the filters; ``batch`` is a whole batch id or, failing that, its start."""
    async with reading(url) as store:
        found: list[RunInfo] = await store.list_runs(batch_id=batch, **filters)
        if batch is not None and not found:
            found = await store.list_runs(batch_prefix=batch, **filters)
        return found


def _metric_cell(metrics: dict[str, Any], name: str) -> Text:
    if name not in metrics:
        return Text("-", style="dim")
    value = metrics[name]
    if is_headline_key(name) and isinstance(value, str):
        return cell(value)  # whole: the table wraps it between words
    return cell(number(value) if is_number(value) else value_text(value, 60))


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
    batch: Annotated[
        str | None,
        typer.Option(
            "--batch", metavar="ID", help="Only runs of this batch (its id, or the id's start)."
        ),
    ] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option(
            "--metric",
            metavar="NAME",
            help="Add a column with this metric (flattened key, e.g. bench.headline); repeatable.",
        ),
    ] = None,
    json_: JsonOption = False,
    jaeger_url: JaegerOption = DEFAULT_JAEGER_URL,
) -> None:
    """List stored runs, newest first."""
    import asyncio

    with guard():
        if batch is not None and not batch.strip():
            raise CliError("--batch must not be empty")
        names = list(dict.fromkeys(n.strip() for n in metric or [] if n.strip()))
        runs: list[RunInfo] = []
        if not store_missing(store):
            runs = asyncio.run(
                _list_runs(store, batch=batch, limit=limit, experiment_id=experiment, status=status)
            )
        flat = [flatten(r.metrics) for r in runs]
        if json_:
            rows = [_run_json(r, jaeger_url) for r in runs]
            for row in rows:  # a listing reads no attempts or artifacts: no empty lists claiming so
                del row["attempts"], row["artifacts"]
            if names:
                for row, values in zip(rows, flat, strict=True):
                    row["selected_metrics"] = {n: values.get(n) for n in names}
            print_json(rows)
            return
        if not runs:
            say("no runs recorded" if batch is None else f"no runs recorded for batch {batch!r}")
            return
        # Ids are never broken across lines; metric columns take the Jaeger link's place
        # (runs show and --json have it).
        table = SafeTable(box=box.SIMPLE_HEAD, show_edge=False)
        table.add_column("run id", no_wrap=True)
        for col in ("experiment", "batch", "status", "started", "duration", *names):
            table.add_column(col, overflow="fold")
        table.add_column("trace id", no_wrap=True)
        if not names:
            table.add_column("jaeger", overflow="fold")
        for r, values in zip(runs, flat, strict=True):
            table.add_row(
                cell(r.run_id),
                cell(r.experiment_id),
                cell(r.batch_id[:_SHORT_ID] if r.batch_id else "-"),
                cell(r.status, style=_run_style(r.status)),
                _when(r.started_at),
                format_duration(r.duration_s),
                *(_metric_cell(values, n) for n in names),
                r.trace_id or "-",
                *([] if names else [_trace_link(jaeger_url, r) or "-"]),
            )
        console().print(table)
        missing = [n for n in names if not any(n in v for v in flat)]
        for name in missing:
            warn(f"warning: --metric {name!r}: none of these runs has this metric")


@runs_app.command("show")
def runs_show_command(
    run_id: Annotated[
        str,
        typer.Argument(
            help="The run id, or its first characters (4 or more) if no other id starts so.",
            metavar="RUN_ID",
            show_default=False,
        ),
    ],
    store: StoreOption = None,
    json_: JsonOption = False,
    jaeger_url: JaegerOption = DEFAULT_JAEGER_URL,
) -> None:
    """Show one stored run: status, times, trace, metrics, stage attempts and artifacts."""
    import asyncio

    with guard():
        info: RunInfo | None = None
        if not store_missing(store):
            info = asyncio.run(_show(store, run_id))
        if info is None:
            raise unknown(run_id)
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
        ("jaeger", _trace_link(jaeger_url, info) or "-"),
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
        say(f"{key + ':':<11} {inline(value)}")  # one line each, whatever the value holds
    say()
    results = headlines_table(info.metrics)
    if results is not None:
        out.print(results)
        say()
    out.print(metrics_table(info.metrics, "metrics"))
    say()
    if info.attempts:
        table = SafeTable(
            title="stage attempts", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False
        )
        for col in ("#", "stage", "attempt", "result", "duration", "error"):
            table.add_column(col, overflow="fold")
        for a in info.attempts:
            error = f"{a.error_type}: {a.error_message}" if a.error_type else ""
            table.add_row(
                "-" if a.stage_index is None else str(a.stage_index),
                cell(a.stage),
                str(a.attempt),
                cell(a.result, style=STATUS_STYLES.get(a.result, "")),
                format_duration(a.duration_s),
                cell(error),
            )
        out.print(table)
    else:
        say("stage attempts: (none)")
    say()
    if info.artifacts:
        table = SafeTable(
            title="artifacts", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False
        )
        for col in ("name", "type", "format", "location"):
            table.add_column(col, overflow="fold")
        for art in info.artifacts:
            table.add_row(cell(art.name), art.type, art.format or "-", cell(art.location or "-"))
        out.print(table)
    else:
        say("artifacts: (none)")
