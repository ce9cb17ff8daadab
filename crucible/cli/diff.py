"""``crucible runs diff A B``: what differs between two stored runs, as tables or JSON."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from crucible.cli.app import CliError, JsonOption, StoreOption, guard
from crucible.cli.output import console, print_json, say, value_text
from crucible.cli.runs import store_missing
from crucible.compare import Change, RunDiff, diff_runs
from crucible.store import RunInfo, RunStore

_MISSING_TEXT = "-"


async def _read(url: str | None, run_ids: Sequence[str]) -> list[RunInfo | None]:
    store = RunStore(url)
    try:
        return [await store.get_run(rid) for rid in run_ids]
    finally:
        await store.close()


def _cell(value: Any, present: bool) -> Text:
    return Text(value_text(value) if present else _MISSING_TEXT)


def _changes_table(title: str, changes: Sequence[Change], what: str) -> Table | Text:
    if not changes:
        return Text(f"{title}: same")
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    for col in (what, "a", "b"):
        table.add_column(col, overflow="fold")
    for c in changes:
        table.add_row(Text(c.path), _cell(c.a, c.change != "added"),
                      _cell(c.b, c.change != "removed"))  # fmt: skip
    return table


def _metrics_table(diff: RunDiff) -> Table | Text:
    if not diff.metrics:
        return Text("metrics: (none)")
    table = Table(title="metrics", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    for col in ("metric", "a", "b", "b - a"):
        table.add_column(col, overflow="fold")
    for m in diff.metrics:
        delta = _MISSING_TEXT if m.difference is None else value_text(m.difference)
        style = "" if m.change == "same" else "yellow"
        table.add_row(Text(m.name, style=style), _cell(m.a, m.change != "added"),
                      _cell(m.b, m.change != "removed"), Text(delta))  # fmt: skip
    return table


def _show(diff: RunDiff, a: RunInfo, b: RunInfo) -> None:
    out = console()
    say(f"a: {a.run_id} (experiment {a.experiment_id}, {a.status})")
    say(f"b: {b.run_id} (experiment {b.experiment_id}, {b.status})")
    status = (
        diff.status_a if diff.status_a == diff.status_b else f"{diff.status_a} -> {diff.status_b}"
    )
    say(f"status: {status}")
    say()
    out.print(_changes_table("configuration", diff.config, "option"))
    say()
    out.print(_changes_table("versions", diff.versions, "package"))
    say()
    out.print(_metrics_table(diff))


def diff_command(
    a: Annotated[str, typer.Argument(help="The first run id.", show_default=False)],
    b: Annotated[str, typer.Argument(help="The second run id.", show_default=False)],
    store: StoreOption = None,
    json_: JsonOption = False,
) -> None:
    """Show what differs between two stored runs: configuration, versions, status, metrics."""
    with guard():
        found: list[RunInfo | None] = [None, None]
        if not store_missing(store):
            found = asyncio.run(_read(store, [a, b]))
        unknown = [rid for rid, info in zip((a, b), found, strict=True) if info is None]
        if unknown:
            raise CliError(f"unknown run id {', '.join(repr(u) for u in unknown)}")
        info_a, info_b = found
        assert info_a is not None and info_b is not None
        diff = diff_runs(info_a, info_b)
        if json_:
            print_json(diff.to_dict())
            return
        _show(diff, info_a, info_b)
