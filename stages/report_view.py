"""What a report shows, format-neutral: the document snapshot and the tables made from it.

Numbers are rounded for reading (4 significant digits) and every cell keeps its exact value, so
each format can offer both (HTML in a ``title``, markdown and JSON in full).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crucible.context import Context
from crucible.flatten import flatten, is_number
from crucible.headline import headlines, is_headline_key
from crucible.serialize import to_jsonable
from crucible.ui.display import full_value, number

__all__ = [
    "Cell",
    "Document",
    "FlaggedRows",
    "Group",
    "build_document",
    "cell",
    "flagged_rows",
    "group_rows",
    "metric_rows",
    "output_table",
    "pretty",
]

MAX_OUTPUT_COLUMNS = 12
OTHER_COLUMN = "other fields"


@dataclass(frozen=True, slots=True)
class Document:
    """Everything a report shows, already JSON-safe (secret-looking values redacted)."""

    experiment_id: str
    run_id: str
    generated_at: str
    metrics: dict[str, Any]
    outputs: list[Any]
    stages: list[dict[str, Any]]

    @property
    def headlines(self) -> list[tuple[str, str]]:
        return headlines(self.metrics)

    def as_json(self) -> dict[str, Any]:
        return {
            "experiment_id": self.experiment_id,
            "run_id": self.run_id,
            "generated_at": self.generated_at,
            "headlines": dict(self.headlines),
            "metrics": self.metrics,
            "outputs": self.outputs,
            "stages": self.stages,
        }


def _timing_rows(ctx: Context) -> list[dict[str, Any]]:
    """One row per finished stage attempt recorded in ``ctx.trace``."""
    if ctx.trace is None:
        return []
    rows = []
    for span in ctx.trace.spans:
        error = span.error_type
        if error is not None and span.error_message:
            error = f"{error}: {span.error_message}"
        rows.append(
            {
                "stage": span.stage,
                "attempt": span.attempt,
                "result": span.result,
                "duration_ms": round((span.end_ns - span.start_ns) / 1e6, 3),
                "error": error,
            }
        )
    return rows


def build_document(ctx: Context) -> Document:
    """Snapshot the context as JSON-safe data (secret-looking values redacted)."""
    metrics = to_jsonable(ctx.metrics)
    outputs = to_jsonable(ctx.outputs)
    return Document(
        experiment_id=ctx.experiment_id,
        run_id=ctx.run_id,
        generated_at=dt.datetime.now(dt.UTC).isoformat(),
        metrics=metrics if isinstance(metrics, dict) else {},
        outputs=outputs if isinstance(outputs, list) else [],
        stages=to_jsonable(_timing_rows(ctx)),
    )


@dataclass(frozen=True, slots=True)
class Cell:
    """A value as read (rounded) and as it is (exact); ``numeric`` aligns it right."""

    text: str
    full: str
    numeric: bool = False


def _readable(value: Any) -> str:
    """Numbers at 4 significant digits, also inside lists and mappings; strings as they are."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if is_number(value):
        return number(value)
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_readable(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(_readable(v) for v in value) + "]"
    return str(value)


def cell(value: Any) -> Cell:
    """One table cell for ``value``."""
    return Cell(_readable(value), full_value(value), is_number(value))


def metric_rows(metrics: Mapping[str, Any]) -> list[tuple[str, Cell]]:
    """Flattened metrics (``bench.effect_size.value``) in recorded order, headlines left out
    (they are shown above the table)."""
    return [(k, cell(v)) for k, v in flatten(metrics).items() if not is_headline_key(k)]


def output_table(outputs: Sequence[Any]) -> tuple[list[str], list[list[Cell]]]:
    """Outputs as columns (keys in first-seen order, at most MAX_OUTPUT_COLUMNS; the rest go
    to one ``other fields`` cell) and one row per output; a non-mapping output is a ``value``."""
    keys: dict[str, None] = {}
    for item in outputs:
        if isinstance(item, Mapping):
            keys.update(dict.fromkeys(str(k) for k in item))
        else:
            keys["value"] = None
    columns = list(keys)[:MAX_OUTPUT_COLUMNS]
    extra = len(keys) > MAX_OUTPUT_COLUMNS
    rows: list[list[Cell]] = []
    for item in outputs:
        data = (
            {str(k): v for k, v in item.items()} if isinstance(item, Mapping) else {"value": item}
        )
        row = [cell(data[c]) if c in data else Cell("", "") for c in columns]
        if extra:
            rest = {k: v for k, v in data.items() if k not in columns}
            row.append(cell(rest) if rest else Cell("", ""))
        rows.append(row)
    return columns + ([OTHER_COLUMN] if extra else []), rows


@dataclass(frozen=True, slots=True)
class Group:
    """One compared group of the bench result: size, mean and its confidence interval."""

    name: str
    n: int
    mean: float
    low: float | None
    high: float | None


def group_rows(metrics: Mapping[str, Any]) -> tuple[list[Group], float | None]:
    """The groups ``bench`` compared (from its ``group_stats``) and their confidence level."""
    bench = metrics.get("bench")
    if not isinstance(bench, Mapping) or not isinstance(bench.get("group_stats"), list):
        return [], None
    groups = []
    for entry in bench["group_stats"]:
        if not isinstance(entry, Mapping) or not is_number(entry.get("mean")):
            continue
        ci = entry.get("confidence_interval")
        low, high = (ci[0], ci[1]) if isinstance(ci, list) and len(ci) == 2 else (None, None)
        groups.append(
            Group(
                str(entry.get("group")),
                int(entry.get("n") or 0),
                float(entry["mean"]),
                float(low) if is_number(low) else None,
                float(high) if is_number(high) else None,
            )
        )
    level = bench.get("confidence_level")
    return groups, float(level) if is_number(level) else None


@dataclass(frozen=True, slots=True)
class FlaggedRows:
    """The examples ``data_checks`` flagged: the first few by index, and how many in all."""

    rows: list[dict[str, Any]]
    total: int
    examples: int


def flagged_rows(metrics: Mapping[str, Any]) -> FlaggedRows | None:
    """What ``metrics["data_checks"]`` says was flagged; None when nothing was."""
    checks = metrics.get("data_checks")
    if not isinstance(checks, Mapping) or not checks.get("missing_required"):
        return None
    rows = [dict(r) for r in checks.get("flagged") or [] if isinstance(r, Mapping)]
    return FlaggedRows(rows, int(checks["missing_required"]), int(checks.get("total") or 0))


def pretty(value: Any) -> str:
    """Indented, strictly valid JSON."""
    return json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False)
