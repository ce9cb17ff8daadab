"""``crucible batch --export FILE``: one CSV row per run of the batch, written atomically."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crucible.cli.app import CliError
from crucible.cli.batch_summary import flat_metrics
from crucible.cli.output import error, warn
from crucible.flatten import is_number
from crucible.scrub import active as active_scrubber
from crucible.serialize import to_jsonable

if TYPE_CHECKING:
    from crucible.batch import RunOutcome

__all__ = ["check_export_path", "export_runs", "runs_csv", "write_export"]

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_FIXED = ("index", "run_id", "status", "duration_s", "trace_id")


def check_export_path(path: Path) -> Path:
    """Refuse, before anything runs, a path the CSV could not be written to."""
    target = path.expanduser().resolve()
    if target.suffix.lower() in (".json", ".jsonl"):
        raise CliError(
            f"--export {str(path)!r}: --export writes CSV; name the file .csv, or use --json "
            "(the runs as JSON on stdout)"
        )
    if target.is_dir():
        raise CliError(f"--export {str(path)!r} is a directory; give a file name such as runs.csv")
    if not target.parent.is_dir():
        raise CliError(f"--export {str(path)!r}: the folder {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK):
        raise CliError(f"--export {str(path)!r}: the folder {target.parent} is not writable")
    return target


def _cell(value: Any) -> Any:
    """A CSV cell: numbers as they are, containers as JSON, formula-like text quoted with '."""
    if value is None:
        return ""
    if is_number(value):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return "'" + text if text.startswith(_FORMULA_START) else text


def runs_csv(
    outcomes: Sequence[RunOutcome],
    points: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None,
) -> str:
    """The CSV text: ids, status, each matrix parameter (``matrix.<key>``: a stage may record
    the same name as a metric), then ``columns`` (all metric keys, sorted, when None), then the
    error; full ids and full-precision numbers."""
    metrics = [flat_metrics(o) for o in outcomes]
    params = list(dict.fromkeys(k for p in points for k in p))
    keys = list(columns) if columns else sorted({k for m in metrics for k in m})
    out = io.StringIO()
    writer = csv.writer(out)
    # A metric named like another column (status, error, matrix.x) gets "metric." before its
    # name, so that no header repeats and no reader keeps one value for both.
    taken = {*_FIXED, *(f"matrix.{k}" for k in params), "error"}
    headers = [f"metric.{k}" if k in taken else k for k in keys]
    # Metric names come from the runs too: a header cell is quoted like any other text.
    writer.writerow([*_FIXED, *(f"matrix.{k}" for k in params), *map(_cell, headers), "error"])
    for o, flat in zip(outcomes, metrics, strict=True):
        point = to_jsonable(dict(points[o.index]))
        error = f"{type(o.error).__name__}: {o.error}" if o.error is not None else ""
        fixed = (o.index, o.run_id, o.status, o.duration_s, o.trace_id)
        writer.writerow(
            [_cell(v) for v in fixed]
            + [_cell(point.get(k)) for k in params]
            + [_cell(flat.get(k)) for k in keys]
            + [_cell(error)]
        )
    return out.getvalue()


def write_export(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` through a temporary file and an atomic rename."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(active_scrubber().encoded().text(text))  # the runs' secrets never land
        os.replace(tmp, target)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise CliError(f"--export: cannot write {target}: {err}") from err


def export_runs(
    target: Path,
    outcomes: Sequence[RunOutcome],
    points: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None,
) -> bool:
    """Write the batch's CSV and say where (on stderr, so ``--json`` stays clean); False,
    with the reason printed, when the file could not be written (the runs stay stored)."""
    try:
        write_export(target, runs_csv(outcomes, points, columns))
    except CliError as err:
        error(f"{err} (the runs are in the store: crucible runs list --batch ID)")
        return False
    warn(f"exported: {target} ({len(outcomes)} run{'s' if len(outcomes) != 1 else ''})")
    return True
