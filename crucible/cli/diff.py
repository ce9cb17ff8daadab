"""``crucible runs diff A B``: what differs between stored runs, as tables or JSON.

The comparison is :func:`crucible.compare.diff_runs`, the same one ``crucible ui`` shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.text import Text

from crucible.cli.app import CliError, JsonOption, StoreOption, guard
from crucible.cli.journal import reading
from crucible.cli.lookup import UnknownRunId, resolve_run_id
from crucible.cli.output import SafeTable, cell, console, print_json, say, value_text
from crucible.cli.runs import store_missing
from crucible.cli.terminal import inline

if TYPE_CHECKING:
    from crucible.compare import DiffRow, RunDiff
    from crucible.store import RunInfo


_MISSING_TEXT = "-"


async def _read(url: str | None, given: Sequence[str]) -> tuple[list[RunInfo], list[Any]]:
    """The runs ``given`` names (whole ids or unique prefixes) and their configurations."""
    from crucible.compare import run_configuration

    async with reading(url) as store:
        run_ids: list[str] = []
        unknown_ids: list[str] = []
        for text in given:
            try:
                run_ids.append(await resolve_run_id(store, text))
            except UnknownRunId:  # all of them named at once; an ambiguous one goes up as is
                unknown_ids.append(text)
        if unknown_ids:
            raise CliError(f"unknown run id {', '.join(repr(u) for u in unknown_ids)}")
        if len(set(run_ids)) != len(run_ids):
            raise CliError("give two or more different run ids")
        infos: list[RunInfo] = []
        configs = []
        for rid in run_ids:
            info = await store.get_run(rid)
            if info is None:  # removed meanwhile
                raise CliError(f"unknown run id {rid!r}")
            exp = None
            if info.config is None:  # stored before runs kept their own
                exp = await store.get_experiment(info.experiment_id)
            infos.append(info)
            configs.append(run_configuration(info, exp))
        return infos, configs


def _cell(row: DiffRow, run_id: str) -> Text:
    return cell(value_text(row.values[run_id]) if run_id in row.values else _MISSING_TEXT)


def _table(title: str, rows: Sequence[DiffRow], ids: Sequence[str], what: str) -> SafeTable | Text:
    if not rows:
        return Text(f"{title}: same")
    table = SafeTable(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column(what, overflow="fold")
    letters = [chr(ord("a") + i) for i in range(len(ids))]
    for letter in letters:
        table.add_column(letter, overflow="fold")
    with_deltas = title == "metrics"
    if with_deltas:
        for letter in letters[1:]:
            table.add_column(f"{letter} - a", overflow="fold")
    for row in rows:
        cells = [cell(row.key, style="yellow" if row.differs else "")]
        cells += [_cell(row, rid) for rid in ids]
        if with_deltas:
            cells += [
                cell(value_text(row.deltas[rid]) if rid in row.deltas else _MISSING_TEXT)
                for rid in ids[1:]
            ]
        table.add_row(*cells)
    return table


def _show(diff: RunDiff) -> None:
    out = console()
    ids = [r.run_id for r in diff.runs]
    for letter, head in zip("abcdefghijklmnopqrstuvwxyz", diff.runs, strict=False):
        say(inline(f"{letter}: {head.run_id} (experiment {head.experiment_id}, {head.status})"))
    statuses = [r.status for r in diff.runs]
    say(f"status: {' -> '.join(statuses) if diff.status_differs else statuses[0]}")
    say()
    out.print(_table("configuration", diff.configuration, ids, "option"))
    say()
    out.print(_table("versions", diff.versions, ids, "package"))
    say()
    out.print(_table("metrics", diff.metrics, ids, "metric") if diff.metrics
              else Text("metrics: (none)"))  # fmt: skip


def diff_command(
    runs: Annotated[
        list[str],
        typer.Argument(
            help="Two or more run ids (or their first characters); the first is the baseline.",
            metavar="RUN_ID",
        ),
    ],
    store: StoreOption = None,
    json_: JsonOption = False,
) -> None:
    """Show what differs between stored runs: configuration, versions, status, metrics."""
    import asyncio

    from crucible.compare import diff_runs

    with guard():
        if len(runs) < 2 or len(set(runs)) != len(runs):
            raise CliError("give two or more different run ids")
        if store_missing(store):
            raise CliError(f"unknown run id {', '.join(repr(u) for u in runs)}")
        infos, configs = asyncio.run(_read(store, runs))
        diff = diff_runs(infos, configs)
        if json_:
            print_json(diff.to_dict())
            return
        _show(diff)
