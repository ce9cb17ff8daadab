"""The ``report`` stage: render metrics, outputs and stage timings per ``experiment.outputs``.

Formats: markdown (.md), json (.json) and html (.html, one self-contained page); what they
show is in ``stages.report_view`` and how in ``stages.report_formats``. Sinks: ``file``
(atomic writes inside ``out_dir``, recorded as artifacts) and ``stdout``. Every spec is checked
before anything is written, so a bad spec leaves no partial reports behind.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio
from pydantic import BaseModel, ConfigDict, Field, field_validator

from crucible.context import Context
from crucible.errors import CrucibleError
from crucible.experiment import OutputSpec
from crucible.files import DEFAULT_WRITE_DIR, WriteDir, current_access
from crucible.scrub import active as active_scrubber
from crucible.stage import stage
from stages.report_view import Document, build_document

if TYPE_CHECKING:
    from stages.report_formats import render

__all__ = [
    "EXTENSIONS",
    "Document",
    "OutputProblem",
    "ReportError",
    "ReportOptions",
    "build_document",
    "chosen_paths",
    "output_problems",
    "render",
    "report",
]

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


class OutputProblem(NamedTuple):
    """Why one output spec cannot be produced: its position, the field at fault, the message."""

    spec_index: int
    field: str  # "name", "formats", "sink" or "options.path"
    message: str


class _Refused(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _inside(base: Path, raw: str | os.PathLike[str], spec_name: str, show_paths: bool) -> Path:
    """Resolve ``raw`` against ``base``; refuse anything that lands outside it."""
    try:
        target = (base / raw).resolve()
    except (OSError, ValueError, RuntimeError) as err:  # a NUL, too long, a symlink loop
        raise _Refused(
            "options.path", f"output {spec_name!r}: path {str(raw)!r} is not a usable path ({err})"
        ) from None
    if target == base or not target.is_relative_to(base):
        where = " is outside the reports folder (out_dir)"
        if show_paths:
            where = f" resolves to {target}, outside the reports folder {base}"
        raise _Refused(
            "options.path", f"output {spec_name!r}: path {str(raw)!r}{where}; give a path inside it"
        )
    return target


def _formats(spec: OutputSpec) -> list[str]:
    formats = list(dict.fromkeys(f.strip().lower() for f in spec.formats))
    if not formats:
        raise _Refused(
            "formats", f"output {spec.name!r} lists no formats; use {', '.join(EXTENSIONS)}"
        )
    for fmt in formats:
        if fmt not in EXTENSIONS:
            raise _Refused(
                "formats",
                f"output {spec.name!r}: unsupported format {fmt!r}; "
                f"supported: {', '.join(EXTENSIONS)}",
            )
    return formats


def _spec_targets(
    spec: OutputSpec, stem: str, base: Path, claimed: dict[Path, str], show_paths: bool
) -> list[_Target]:
    """The targets of one spec (claiming their paths); _Refused names what is wrong."""
    formats = _formats(spec)
    sink = spec.sink.strip().lower()
    if sink not in SINKS:
        raise _Refused(
            "sink",
            f"output {spec.name!r}: unsupported sink {spec.sink!r}; supported: {', '.join(SINKS)}",
        )
    if sink == "stdout":
        return [_Target(spec, fmt, sink, None) for fmt in formats]
    custom = (spec.options or {}).get("path")
    if custom is not None and not isinstance(custom, str):
        raise _Refused("options.path", f"output {spec.name!r}: options.path must be a string")
    targets: list[_Target] = []
    for fmt in formats:
        if custom is None:
            path = _inside(base, stem + EXTENSIONS[fmt], spec.name, show_paths)
        elif len(formats) == 1:
            path = _inside(base, custom, spec.name, show_paths)
        else:
            try:
                named = Path(custom).with_suffix(EXTENSIONS[fmt])
            except ValueError:  # "", "." or "/": no file name to give each format's suffix
                raise _Refused(
                    "options.path",
                    f"output {spec.name!r}: path {custom!r} names no file for its formats",
                ) from None
            path = _inside(base, named, spec.name, show_paths)
        if path in claimed:
            shown = path if show_paths else path.relative_to(base)
            raise _Refused(
                "options.path",
                f"output {spec.name!r} ({fmt}) would overwrite {shown}, already written by "
                f"{claimed[path]}",
            )
        targets.append(_Target(spec, fmt, sink, path))
    for t in targets:
        claimed[t.path or base] = f"output {spec.name!r} ({t.fmt})"
    return targets


def _plan(
    ids: tuple[str, str], specs: list[OutputSpec], out_dir: str | os.PathLike[str], show_paths: bool
) -> tuple[list[_Target], list[OutputProblem]]:
    base = Path(out_dir).expanduser().resolve()
    targets: list[_Target] = []
    problems: list[OutputProblem] = []
    claimed: dict[Path, str] = {}
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        if spec.name in seen:
            message = f"two outputs are named {spec.name!r}; output names must be unique"
            problems.append(OutputProblem(i, "name", message))
            continue
        seen.add(spec.name)
        stem = "-".join(_safe_component(p) for p in (*ids, spec.name))
        try:
            targets += _spec_targets(spec, stem, base, claimed, show_paths)
        except _Refused as err:
            problems.append(OutputProblem(i, err.field, str(err)))
    return targets, problems


def plan_targets(
    ctx: Context, specs: list[OutputSpec], out_dir: str | os.PathLike[str]
) -> list[_Target]:
    """Every (spec, format) to produce, with its file path; raises ReportError on any problem."""
    show_paths = current_access().show_paths
    targets, problems = _plan((ctx.experiment_id, ctx.run_id), specs, out_dir, show_paths)
    if problems:
        raise ReportError(problems[0].message)
    return targets


def output_problems(
    experiment_id: str,
    run_id: str,
    specs: list[OutputSpec],
    out_dir: str | os.PathLike[str],
    *,
    show_paths: bool = True,
) -> list[OutputProblem]:
    """Everything ``report`` would refuse in ``specs`` for this run, checked before it runs
    (a service's pre-flight); ``show_paths=False`` keeps this machine's folders out of it."""
    return _plan((experiment_id, run_id), specs, out_dir, show_paths)[1]


def chosen_paths(
    experiment_id: str, run_id: str, specs: list[OutputSpec], out_dir: str | os.PathLike[str]
) -> list[tuple[int, Path]]:
    """(index of the spec, file) of every file target whose name the spec chose itself
    (``options.path``), as ``report`` would resolve it; specs with problems are left out."""
    targets, _ = _plan((experiment_id, run_id), specs, out_dir, False)
    index = {id(spec): i for i, spec in enumerate(specs)}
    return [
        (index[id(t.spec)], t.path)
        for t in targets
        if t.path is not None and (t.spec.options or {}).get("path") is not None
    ]


# --- writing -----------------------------------------------------------------------------------


class ReportExists(OSError):
    """``write_atomic(..., overwrite=False)`` found a file at its path already."""


def write_atomic(path: Path, text: str, *, overwrite: bool = True) -> int:
    """Write ``text`` to ``path`` via a temp file in the same folder; bytes written.

    The temp file replaces ``path`` (``os.replace``), or with ``overwrite=False`` is linked
    to it only if nothing is there yet: ReportExists, whoever wrote it first (another run of a
    shared service, even one finishing at the same moment).
    """
    data = text.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _create_new(tmp, path, data)
            Path(tmp).unlink()
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(data)


def _create_new(tmp: str, path: Path, data: bytes) -> None:
    """``path`` made from the written ``tmp`` only if it does not exist (ReportExists)."""
    try:
        try:
            os.link(tmp, path)  # atomic, and fails when path exists
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links: create it exclusively instead
            with path.open("xb") as out:
                out.write(data)
    except FileExistsError:
        raise ReportExists(path) from None


def _produce(ctx: Context, targets: list[_Target]) -> list[tuple[_Target, str, int]]:
    """Render each format once and write the file targets (runs in a worker thread)."""
    # The renderers (and their SVG charts) load here, on report's first run, in its worker
    # thread: listing stages or validating options does not pay for them.
    from stages.report_formats import render

    doc = build_document(ctx)
    access = current_access()
    scrubber = active_scrubber().encoded()  # the run's secret values, as each format writes them
    bodies: dict[str, str] = {}
    done: list[tuple[_Target, str, int]] = []
    for t in targets:
        body = bodies.get(t.fmt)
        if body is None:
            body = bodies[t.fmt] = scrubber.text(render(doc, t.fmt))
        size = 0
        if t.path is not None:
            try:
                size = write_atomic(t.path, body, overwrite=access.overwrite)
            except ReportExists:
                shown = t.path if access.show_paths else t.path.name
                raise ReportError(
                    f"output {t.spec.name!r}: a {t.fmt} report already exists at {shown}; "
                    "this run does not overwrite it"
                ) from None
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


def __getattr__(name: str) -> Any:
    """``render`` stays importable from here; it loads on first use (PEP 562)."""
    if name == "render":
        from stages.report_formats import render

        return render
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
