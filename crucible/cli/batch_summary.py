"""A finished batch, shown: the per-run summary table and totals, or the ``--json`` document."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich import box
from rich.table import Table
from rich.text import Text

from crucible.cli.output import console, cut, flatten_metrics, format_duration, say, value_text
from crucible.errors import StageFailed
from crucible.serialize import to_jsonable

if TYPE_CHECKING:
    from crucible.batch import RunOutcome


_OUTCOME_STYLES = {
    "completed": "green",
    "failed": "red",
    "timed_out": "red",
    "cancelled": "magenta",
}
_MATRIX_WIDTH = 60
_METRICS_SHOWN = 3
_METRICS_WIDTH = 48
_SHORT_TRACE = 8


def point_text(point: Mapping[str, Any]) -> str:
    """A matrix point as ``stage.option=value, ...``."""
    return ", ".join(f"{key}={value_text(value)}" for key, value in point.items())


@dataclass(frozen=True, slots=True)
class BatchReport:
    """What the summary (table or JSON) needs besides the outcomes."""

    batch_id: str
    experiment_id: str
    points: Sequence[Mapping[str, Any]]
    trace_id: str | None
    as_children: bool
    destination: str
    store_url: str
    elapsed: float
    jaeger_link: str | None


def _error_json(err: BaseException | None) -> dict[str, Any] | None:
    if err is None:
        return None
    if isinstance(err, StageFailed):
        cause = err.cause
        return {"stage": err.stage, "result": err.result, "type": type(cause).__name__,
                "message": str(cause)}  # fmt: skip
    return {"stage": None, "result": None, "type": type(err).__name__, "message": str(err)}


def _error_text(err: BaseException | None) -> str:
    if isinstance(err, StageFailed):
        cause = err.cause
        return f"stage {err.stage!r} ended with {err.result}: {type(cause).__name__}: {cause}"
    if err is None:
        return "cancelled before it started"
    return f"{type(err).__name__}: {err}"


def _outcome_metrics(outcome: RunOutcome) -> Mapping[str, Any]:
    return outcome.context.metrics if outcome.context is not None else {}


def _metrics_cell(metrics: Mapping[str, Any]) -> str:
    pairs = flatten_metrics(metrics)
    text = ", ".join(f"{k}={value_text(v, 20)}" for k, v in pairs[:_METRICS_SHOWN])
    if len(pairs) > _METRICS_SHOWN:
        text += f", … (+{len(pairs) - _METRICS_SHOWN})"
    return cut(text, _METRICS_WIDTH) or "-"


def batch_json(outcomes: Sequence[RunOutcome], report: BatchReport) -> dict[str, Any]:

    from crucible.batch import summarize

    """The ``--json`` document of a finished batch."""
    return {
        "batch_id": report.batch_id,
        "experiment_id": report.experiment_id,
        "total": len(outcomes),
        "counts": summarize(outcomes),
        "duration_s": report.elapsed,
        "trace": {
            "destination": report.destination,
            "trace_id": report.trace_id,
            "runs_are_children": report.as_children,
            "jaeger_url": report.jaeger_link,
        },
        "store": report.store_url,
        "runs": [
            {
                "index": o.index,
                "matrix": to_jsonable(dict(report.points[o.index])),
                "status": o.status,
                "run_id": o.run_id,
                "trace_id": o.trace_id,
                "duration_s": o.duration_s,
                "metrics": to_jsonable(dict(_outcome_metrics(o))),
                "error": _error_json(o.error),
            }
            for o in outcomes
        ],
    }


def _runs_table(outcomes: Sequence[RunOutcome], report: BatchReport) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("#", justify="right")
    table.add_column("matrix", overflow="fold")
    table.add_column("status")
    table.add_column("duration", justify="right")
    table.add_column("metrics", overflow="fold")
    table.add_column("run id", no_wrap=True)
    table.add_column("trace id", no_wrap=True)
    for o in outcomes:
        table.add_row(
            str(o.index),
            Text(cut(point_text(report.points[o.index]), _MATRIX_WIDTH) or "-"),
            Text(o.status, style=_OUTCOME_STYLES.get(o.status, "")),
            format_duration(o.duration_s),
            Text(_metrics_cell(_outcome_metrics(o))),
            Text(o.run_id),
            (o.trace_id or "-")[:_SHORT_TRACE],
        )
    return table


def print_batch_summary(outcomes: Sequence[RunOutcome], report: BatchReport) -> None:

    from crucible.batch import summarize

    """The table of runs, the failures, the totals and where the batch's trace and runs went."""
    say()
    console().print(_runs_table(outcomes, report))
    failures = [o for o in outcomes if not o.ok]
    if failures:
        say("failures:")
        for o in failures:
            where = point_text(report.points[o.index])
            say(f"  #{o.index}" + (f" [{where}]" if where else "") + f": {_error_text(o.error)}")
    counts = summarize(outcomes)
    totals = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    n = len(outcomes)
    say()
    say(
        f"totals:   {totals or 'no runs'} ({n} run{'s' if n != 1 else ''} in "
        f"{format_duration(report.elapsed)})",
        style="green" if counts["completed"] == n else "red",
    )
    say(f"batch:    {report.batch_id} (experiment {report.experiment_id})")
    say(f"trace:    {report.destination}")
    if report.trace_id:
        how = "runs are its children" if report.as_children else "each run links to it"
        say(f"trace id: {report.trace_id} (BATCH span; {how})")
        if report.jaeger_link:
            say(f"jaeger:   {report.jaeger_link}")
    say(f"store:    {report.store_url}")
