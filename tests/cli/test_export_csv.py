"""``batch --export``'s CSV: run data that a spreadsheet would run as a formula stays text."""

from __future__ import annotations

import csv
import io

from crucible import Context, Experiment, Registry, StageDef, run_batch, stage
from crucible.cli.export import runs_csv


@stage("formulas", description="Records formula-like names and values", register=False)
async def formulas(ctx: Context) -> Context:
    return ctx.put_metric("=HYPERLINK(1)", "@SUM(A1)").put_metric("score", -2.5)


async def test_formula_like_names_and_values_are_quoted() -> None:
    exp = Experiment(id="csv", pipeline=[StageDef(name="formulas")])
    outcomes = await run_batch([exp], registry=Registry([formulas]))
    rows = list(csv.reader(io.StringIO(runs_csv(outcomes, [{}], None))))
    header, row = rows
    cells = dict(zip(header, row, strict=True))
    assert cells["'=HYPERLINK(1)"] == "'@SUM(A1)"
    assert cells["score"] == "-2.5"  # a number is a number, negative or not
