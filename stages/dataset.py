"""The ``load_examples`` stage: read a small data set (JSON Lines, JSON or CSV) into assigns.

Later stages find the rows in ``ctx.assigns["examples"]`` (``data_checks``, ``guardrails``);
with ``as_outputs`` each row is also appended to the outputs, where ``bench`` groups scores by
``prompt``. A relative ``path`` starts at the experiment file's folder (the working directory
for experiments built in Python) and must stay inside the folders the run may read (see
``crucible.files``); pre-flight refuses a path outside them or a file that does not exist.
Reading happens in a worker thread so the event loop stays free.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field

from crucible.context import Context
from crucible.errors import CrucibleError
from crucible.files import ReadFile, current_access
from crucible.stage import stage

__all__ = ["DatasetError", "LoadExamplesOptions", "load_examples", "parse_examples"]


class DatasetError(CrucibleError):
    """The data set could not be read; the message names the file and the line."""


class LoadExamplesOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: ReadFile = Field(description="File to read (relative to the experiment file's folder).")
    format: Literal["auto", "jsonl", "json", "csv"] = Field(
        default="auto", description="File format; auto picks it from the extension."
    )
    into: str = Field(default="examples", min_length=1, description="Assign key for the rows.")
    as_outputs: bool = Field(default=False, description="Also append every row to the outputs.")
    limit: int | None = Field(default=None, ge=1, description="Keep only the first N rows.")


def _format_of(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".json", ".csv"):
        return suffix[1:]
    raise DatasetError(f"{path}: cannot tell the format from {suffix or 'no extension'!r}; "
                       "set format: jsonl, json or csv")  # fmt: skip


def parse_examples(text: str, fmt: str, source: str) -> list[Any]:
    """Parse the file's text into a list of rows, with errors naming ``source`` and the line."""
    if fmt == "jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DatasetError(f"{source}: line {number}: invalid JSON: {err.msg}") from None
        return rows
    if fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{source}: line {err.lineno}: invalid JSON: {err.msg}") from None
        if not isinstance(data, list):
            raise DatasetError(f"{source}: expected a JSON list of rows, got {type(data).__name__}")
        return data
    return [dict(row) for row in csv.DictReader(io.StringIO(text))]


@stage(
    "load_examples",
    description="Load a data set (JSONL, JSON or CSV) into assigns",
    version="1.0",
    register=False,  # the crucible.stages entry point registers it, as the other built-ins
)
async def load_examples(ctx: Context, opts: LoadExamplesOptions) -> Context:
    path = current_access().readable(opts.path, option="path")  # again: it may have moved
    fmt = _format_of(path, opts.format)
    try:
        text = await anyio.Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read: {err}") from None
    rows = await anyio.to_thread.run_sync(parse_examples, text, fmt, str(path))
    if opts.limit is not None:
        rows = rows[: opts.limit]
    shown = _shown(path, current_access().read_base)
    ctx = ctx.assign(opts.into, rows).put_metric("dataset", {"path": shown, "rows": len(rows)})
    if opts.as_outputs:
        ctx = ctx.add_outputs(rows)
    return ctx.record_event("dataset.loaded", path=str(path), rows=len(rows), format=fmt)


def _shown(path: Path, base: Path) -> str:
    """``path`` relative to where relative paths start, when it is inside; else absolute."""
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)
