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


@stage("clashing", description="Records metrics named like the CSV's own columns", register=False)
async def clashing(ctx: Context) -> Context:
    return (ctx.put_metric("status", "metric-status").put_metric("error", "metric-error")
            .put_metric("run_id", "metric-run").put_metric("matrix.x", 999))  # fmt: skip


async def test_a_metric_named_like_another_column_keeps_its_own_column() -> None:
    exp = Experiment(id="csv", pipeline=[StageDef(name="clashing")])
    outcomes = await run_batch([exp], registry=Registry([clashing]))
    rows = list(csv.reader(io.StringIO(runs_csv(outcomes, [{"x": 1}], None))))
    header, row = rows
    assert len(header) == len(set(header))  # no header repeats
    cells = dict(zip(header, row, strict=True))
    assert (cells["status"], cells["run_id"], cells["matrix.x"]) == (
        "completed",
        outcomes[0].run_id,
        "1",
    )
    assert cells["metric.status"] == "metric-status" and cells["metric.matrix.x"] == "999"
    assert cells["metric.run_id"] == "metric-run" and cells["metric.error"] == "metric-error"
    assert cells["error"] == ""
