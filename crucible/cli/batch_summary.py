"""A finished batch, shown: the per-run summary table and totals, or the ``--json`` document."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from rich import box
from rich.text import Text

from crucible.cli.output import (
    SafeTable,
    cell,
    console,
    elide,
    format_duration,
    say,
    value_text,
    warn,
)
from crucible.cli.terminal import inline
from crucible.errors import StageFailed
from crucible.flatten import flatten, is_number
from crucible.headline import is_headline_key
from crucible.serialize import to_jsonable
from crucible.ui.display import number

SUMMARY_ROWS = 50  # runs the summary lists by default

if TYPE_CHECKING:
    from crucible.batch import RunOutcome
    from crucible.observers import RunObserver


_OUTCOME_STYLES = {
    "completed": "green",
    "failed": "red",
    "timed_out": "red",
    "cancelled": "magenta",
}
_MATRIX_WIDTH = 60
_METRICS_SHOWN = 3
_METRICS_WIDTH = 48
_SHORT_ID = 8
_SUGGESTED = 8


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


def flat_metrics(outcome: RunOutcome) -> dict[str, Any]:
    """A run's metrics as flat ``a.b`` keys, secret-looking values redacted."""
    metrics = to_jsonable(dict(_outcome_metrics(outcome)))
    return flatten(metrics) if isinstance(metrics, dict) else {}


def default_columns(flat: Sequence[Mapping[str, Any]]) -> list[str]:
    """The runs' headlines when they have any, else their first few numeric metrics."""
    seen: dict[str, None] = {}
    for metrics in flat:
        seen.update(dict.fromkeys(k for k in metrics if is_headline_key(k)))
    if seen:
        return list(seen)
    for metrics in flat:
        seen.update(dict.fromkeys(k for k, v in metrics.items() if is_number(v)))
    return list(seen)[:_METRICS_SHOWN]


def parse_show(values: Sequence[str] | None) -> list[str] | None:
    """``--show a,b --show c`` as ``[a, b, c]``; None when not given."""
    if not values:
        return None
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return list(dict.fromkeys(names)) or None


def _suggest(key: str, known: Sequence[str]) -> str:
    """``; did you mean ...`` for near names, else a few of the names there are."""
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    if close:
        return f"; did you mean {', '.join(close)}?"
    if not known:
        return ""
    more = f", … ({len(known)} in all)" if len(known) > _SUGGESTED else ""
    return f"; metrics include {', '.join(known[:_SUGGESTED])}{more}"


def _cell(metrics: Mapping[str, Any], key: str) -> Text:
    if key not in metrics:
        return Text("-", style="dim")
    value = metrics[key]
    if is_number(value):
        return cell(number(value))
    if is_headline_key(key) and isinstance(value, str):
        return cell(value)  # whole: the table wraps it between words
    return cell(value_text(value, _METRICS_WIDTH))


def batch_json(outcomes: Sequence[RunOutcome], report: BatchReport) -> dict[str, Any]:
    """The ``--json`` document of a finished batch."""
    from crucible.batch import summarize

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


def _runs_table(
    outcomes: Sequence[RunOutcome], report: BatchReport, columns: Sequence[str]
) -> SafeTable:
    table = SafeTable(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("#", justify="right")
    table.add_column("matrix", overflow="fold")
    table.add_column("status")
    table.add_column("duration", justify="right")
    for key in columns:
        table.add_column(key, overflow="fold", justify="left" if is_headline_key(key) else "right")
    table.add_column("run id", no_wrap=True)
    table.add_column("trace id", no_wrap=True)
    for o in outcomes:
        metrics = flat_metrics(o)
        table.add_row(
            str(o.index),
            cell(elide(point_text(report.points[o.index]), _MATRIX_WIDTH) or "-"),
            cell(o.status, style=_OUTCOME_STYLES.get(o.status, "")),
            format_duration(o.duration_s),
            *(_cell(metrics, key) for key in columns),
            cell(o.run_id[:_SHORT_ID]),
            (o.trace_id or "-")[:_SHORT_ID],
        )
    return table


def print_batch_summary(
    outcomes: Sequence[RunOutcome],
    report: BatchReport,
    show: Sequence[str] | None = None,
    *,
    rows: int = SUMMARY_ROWS,
) -> None:
    """The table of runs (``show``: its metric columns), the failures, the totals and where
    the batch's trace and runs went. Run and trace ids are cut to 8 characters here; ``--json``
    and ``--export`` have them whole. At most ``rows`` runs and failures are listed (0: all):
    thousands of table lines would take seconds to draw and no one reads them."""
    from crucible.batch import summarize

    flat = [flat_metrics(o) for o in outcomes]
    columns = list(show) if show else default_columns(flat)
    known = sorted({k for m in flat for k in m})
    for key in columns:
        if key not in known:
            warn(f"warning: --show {key!r}: no run has this metric{_suggest(key, known)}")
    say()
    limit = rows or None  # 0: all
    listed = outcomes[:limit]
    console().print(_runs_table(listed, report, columns))
    if len(listed) < len(outcomes):
        say(f"  ... {len(outcomes) - len(listed)} more runs not listed (--rows 0 lists all; "
            "--export FILE.csv writes every run)", style="dim")  # fmt: skip
    failures = [o for o in outcomes if not o.ok]
    if failures:
        say("failures:")
        shown = failures[:limit]
        for o in shown:
            where = point_text(report.points[o.index])
            # One line per failure: a message's own newlines are shown as \n.
            line = (f" [{where}]" if where else "") + f": {_error_text(o.error)}"
            say(f"  #{o.index}{inline(line)}")
        if len(shown) < len(failures):
            more = len(failures) - len(shown)
            say(f"  ... {more} more failures (--rows 0 lists all)", style="dim")
    counts = summarize(outcomes)
    totals = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    n = len(outcomes)
    say()
    say(
        f"totals:   {totals or 'no runs'} ({n} run{'s' if n != 1 else ''} in "
        f"{format_duration(report.elapsed)})",
        style="green" if counts["completed"] == n else "red",
    )
    say(inline(f"batch:    {report.batch_id} (experiment {report.experiment_id})"))
    say(f"trace:    {report.destination}")
    if report.trace_id:
        how = "runs are its children" if report.as_children else "each run links to it"
        say(f"trace id: {report.trace_id} (BATCH span; {how})")
        if report.jaeger_link:
            say(f"jaeger:   {report.jaeger_link}")
    say(f"store:    {report.store_url}")


class OutcomesAtEnd:
    """Keeps the outcomes ``on_batch_end`` reports, so an interrupted batch still has every
    run (the cancelled ones included) for ``--json`` and ``--export``."""

    def __init__(self) -> None:
        self.outcomes: list[RunOutcome] = []
        self.trace_ids: dict[str, str] = {}  # a run cancelled mid-stage reports none of its own

    def observer(self) -> RunObserver:
        from crucible.observers import BatchEnd, RunObserver, RunStart

        kept = self

        class OnBatchEnd(RunObserver):
            def on_run_start(self, *, run: RunStart) -> None:
                if run.trace_id:
                    kept.trace_ids[run.run_id] = run.trace_id

            def on_batch_end(self, *, batch: BatchEnd) -> None:
                ids = kept.trace_ids
                kept.outcomes = sorted(
                    (o if o.trace_id or o.run_id not in ids else replace(o, trace_id=ids[o.run_id])
                     for o in batch.outcomes),
                    key=lambda o: o.index,
                )  # fmt: skip

        return OnBatchEnd()
