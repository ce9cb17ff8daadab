"""The ``report`` stage: render metrics, outputs and stage timings per ``experiment.outputs``.

Formats: markdown (.md), json (.json) and html (.html, one self-contained page). Sinks: ``file``
(atomic writes inside ``out_dir``, recorded as artifacts) and ``stdout``. Every spec is checked
before anything is written, so a bad spec leaves no partial reports behind.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field, field_validator

from crucible.context import Context
from crucible.errors import CrucibleError
from crucible.experiment import OutputSpec
from crucible.files import DEFAULT_WRITE_DIR, WriteDir, current_access
from crucible.serialize import to_jsonable
from crucible.stage import stage

__all__ = ["EXTENSIONS", "ReportError", "ReportOptions", "build_document", "render", "report"]

EXTENSIONS: dict[str, str] = {"markdown": ".md", "json": ".json", "html": ".html"}
"""Supported formats and the file extension each is written with."""

SINKS: tuple[str, ...] = ("file", "stdout")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class ReportError(CrucibleError):
    """A report cannot be produced: unknown format or sink, path outside out_dir, write error."""


class ReportOptions(BaseModel):
    """Options of the ``report`` stage; what to render comes from ``experiment.outputs``."""

    model_config = ConfigDict(extra="forbid")

    out_dir: WriteDir = Field(
        default=DEFAULT_WRITE_DIR,
        validate_default=True,
        description="Folder for file reports (inside the folders the run may write); spec "
        "paths must stay inside it.",
    )

    @field_validator("out_dir", mode="before")
    @classmethod
    def _not_blank(cls, v: Any) -> Any:
        if isinstance(v, str) and not v.strip():
            raise ValueError("out_dir must not be empty")
        return v


# --- the document ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Document:
    """Everything a report shows, already JSON-safe."""

    experiment_id: str
    run_id: str
    generated_at: str
    metrics: dict[str, Any]
    outputs: list[Any]
    stages: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {
            "experiment_id": self.experiment_id,
            "run_id": self.run_id,
            "generated_at": self.generated_at,
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


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False)


def _fence(body: str) -> str:
    """A backtick fence longer than any backtick run inside ``body``."""
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    return "`" * max(3, longest + 1)


def _md_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def render_markdown(doc: Document) -> str:
    """Markdown: heading, run facts, metrics and outputs as JSON blocks, a timing table."""
    parts = [
        f"# Experiment {doc.experiment_id}",
        "",
        f"- Run: `{doc.run_id}`",
        f"- Generated: {doc.generated_at}",
        "",
    ]
    for title, value in (("Metrics", doc.metrics), ("Outputs", doc.outputs)):
        body = _pretty(value)
        fence = _fence(body)
        parts += [f"## {title}", "", f"{fence}json", body, fence, ""]
    parts += ["## Stage timings", ""]
    if doc.stages:
        parts += [
            "| Stage | Attempt | Result | Duration (ms) | Error |",
            "| --- | ---: | --- | ---: | --- |",
        ]
        for row in doc.stages:
            cells = (row["stage"], row["attempt"], row["result"], row["duration_ms"], row["error"])
            parts.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    else:
        parts.append("No stage has finished before this report.")
    return "\n".join(parts) + "\n"


def render_json(doc: Document) -> str:
    """JSON: the whole document, strictly valid (no NaN), pretty-printed."""
    return _pretty(doc.as_json()) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1b1f24;
background:#fff;line-height:1.45}
h1{font-size:1.5rem;margin-bottom:.25rem}h2{font-size:1.15rem;margin-top:2rem}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dt{font-weight:600}
table{border-collapse:collapse;margin:.5rem 0;min-width:40%}
th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f6f8fa;padding:.6rem;overflow:auto;margin:0;font-size:.85rem}
.success{color:#1a7f37}.failure,.error,.timeout,.cancellation{color:#cf222e}.skip{color:#6e7781}
""".strip()


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def render_html(doc: Document) -> str:
    """HTML: one self-contained page (inline CSS, no scripts or external assets), all escaped."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Experiment {_esc(doc.experiment_id)} — run {_esc(doc.run_id)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Experiment {_esc(doc.experiment_id)}</h1>",
        "<dl>",
        f"<dt>Experiment</dt><dd>{_esc(doc.experiment_id)}</dd>",
        f"<dt>Run</dt><dd>{_esc(doc.run_id)}</dd>",
        f"<dt>Generated</dt><dd>{_esc(doc.generated_at)}</dd>",
        "</dl>",
        "<h2>Metrics</h2>",
    ]
    if doc.metrics:
        out.append("<table><thead><tr><th>Metric</th><th>Value</th></tr></thead><tbody>")
        for key, value in doc.metrics.items():
            shown = value if isinstance(value, str) else _pretty(value)
            out.append(f"<tr><td>{_esc(key)}</td><td><pre>{_esc(shown)}</pre></td></tr>")
        out.append("</tbody></table>")
    else:
        out.append("<p>No metrics.</p>")
    out += [
        "<h2>Outputs</h2>",
        f"<pre>{_esc(_pretty(doc.outputs))}</pre>",
        "<h2>Stage timings</h2>",
    ]
    if doc.stages:
        out.append(
            "<table><thead><tr><th>Stage</th><th>Attempt</th><th>Result</th>"
            "<th>Duration (ms)</th><th>Error</th></tr></thead><tbody>"
        )
        for row in doc.stages:
            result = _esc(row["result"])
            out.append(
                f'<tr><td>{_esc(row["stage"])}</td><td class="num">{_esc(row["attempt"])}</td>'
                f'<td class="{result}">{result}</td>'
                f'<td class="num">{_esc(row["duration_ms"])}</td><td>{_esc(row["error"])}</td></tr>'
            )
        out.append("</tbody></table>")
    else:
        out.append("<p>No stage has finished before this report.</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


RENDERERS: dict[str, Callable[[Document], str]] = {
    "markdown": render_markdown,
    "json": render_json,
    "html": render_html,
}


def render(doc: Document, fmt: str) -> str:
    """Render ``doc`` in one of EXTENSIONS' formats."""
    return RENDERERS[fmt](doc)


# --- planning: check every spec before writing anything ----------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    spec: OutputSpec
    fmt: str
    sink: str
    path: Path | None


def _safe_component(text: str) -> str:
    """A file-name-safe version of an id (no separators, no leading dots)."""
    cleaned = _UNSAFE_NAME.sub("_", text).lstrip(".")
    return cleaned or "_"


def _inside(base: Path, raw: str | os.PathLike[str], spec_name: str) -> Path:
    """Resolve ``raw`` against ``base``; refuse anything that lands outside it."""
    target = (base / raw).resolve()
    if target == base or not target.is_relative_to(base):
        raise ReportError(
            f"output {spec_name!r}: path {str(raw)!r} resolves to {target}, outside the "
            f"reports folder {base}; give a path inside it"
        )
    return target


def _formats(spec: OutputSpec) -> list[str]:
    formats = list(dict.fromkeys(f.strip().lower() for f in spec.formats))
    if not formats:
        raise ReportError(f"output {spec.name!r} lists no formats; use {', '.join(EXTENSIONS)}")
    for fmt in formats:
        if fmt not in EXTENSIONS:
            raise ReportError(
                f"output {spec.name!r}: unsupported format {fmt!r}; "
                f"supported: {', '.join(EXTENSIONS)}"
            )
    return formats


def plan_targets(
    ctx: Context, specs: list[OutputSpec], out_dir: str | os.PathLike[str]
) -> list[_Target]:
    """Every (spec, format) to produce, with its file path; raises ReportError on any problem."""
    base = Path(out_dir).expanduser().resolve()
    targets: list[_Target] = []
    claimed: dict[Path, str] = {}
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ReportError(f"two outputs are named {spec.name!r}; output names must be unique")
        seen.add(spec.name)
        formats = _formats(spec)
        sink = spec.sink.strip().lower()
        if sink not in SINKS:
            raise ReportError(
                f"output {spec.name!r}: unsupported sink {spec.sink!r}; supported: "
                f"{', '.join(SINKS)}"
            )
        if sink == "stdout":
            targets += [_Target(spec, fmt, sink, None) for fmt in formats]
            continue
        custom = (spec.options or {}).get("path")
        if custom is not None and not isinstance(custom, str):
            raise ReportError(f"output {spec.name!r}: options.path must be a string")
        for fmt in formats:
            if custom is None:
                stem = "-".join(
                    _safe_component(p) for p in (ctx.experiment_id, ctx.run_id, spec.name)
                )
                path = _inside(base, stem + EXTENSIONS[fmt], spec.name)
            elif len(formats) == 1:
                path = _inside(base, custom, spec.name)
            else:
                path = _inside(base, Path(custom).with_suffix(EXTENSIONS[fmt]), spec.name)
            if path in claimed:
                raise ReportError(
                    f"output {spec.name!r} ({fmt}) would overwrite {path}, already written by "
                    f"{claimed[path]}"
                )
            claimed[path] = f"output {spec.name!r} ({fmt})"
            targets.append(_Target(spec, fmt, sink, path))
    return targets


# --- writing -----------------------------------------------------------------------------------


def write_atomic(path: Path, text: str) -> int:
    """Write ``text`` to ``path`` via a temp file in the same folder and os.replace; bytes."""
    data = text.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(data)


def _produce(ctx: Context, targets: list[_Target]) -> list[tuple[_Target, str, int]]:
    """Render each format once and write the file targets (runs in a worker thread)."""
    doc = build_document(ctx)
    bodies: dict[str, str] = {}
    done: list[tuple[_Target, str, int]] = []
    for t in targets:
        body = bodies.get(t.fmt)
        if body is None:
            body = bodies[t.fmt] = render(doc, t.fmt)
        size = 0
        if t.path is not None:
            try:
                size = write_atomic(t.path, body)
            except OSError as err:
                raise ReportError(
                    f"output {t.spec.name!r}: cannot write {t.fmt} report to {t.path}: {err}"
                ) from err
        done.append((t, body, size))
    return done


@stage(
    "report",
    description=(
        "Render metrics, outputs and stage timings as markdown, JSON or HTML reports, "
        "per experiment.outputs, to files or stdout"
    ),
    register=False,
)
async def report(ctx: Context, opts: ReportOptions) -> Context:
    """Produce every report of ``experiment.outputs`` (none -> ctx unchanged)."""
    specs = list(ctx.experiment.outputs or [])
    if not specs:
        return ctx
    out_dir = current_access().writable(opts.out_dir, option="out_dir")  # again, as it runs
    targets = plan_targets(ctx, specs, out_dir)
    produced = await anyio.to_thread.run_sync(_produce, ctx, targets)

    rendered: dict[str, list[dict[str, Any]]] = {spec.name: [] for spec in specs}
    out = ctx
    for t, body, size in produced:
        if t.path is None:
            print(f"===== report {t.spec.name} ({t.fmt}) =====", file=sys.stdout)
            print(body, end="" if body.endswith("\n") else "\n", file=sys.stdout)
            rendered[t.spec.name].append({"format": t.fmt, "sink": "stdout", "body": body})
            continue
        location = str(t.path)
        rendered[t.spec.name].append({"format": t.fmt, "path": location})
        out = out.put_artifact(
            f"report.{t.spec.name}.{t.fmt}",
            {"location": location, "format": t.fmt, "type": "file"},
        ).record_event(
            "report.written", output=t.spec.name, format=t.fmt, path=location, bytes=size
        )
    sys.stdout.flush()
    return out.add_outputs({"name": name, "rendered": items} for name, items in rendered.items())
