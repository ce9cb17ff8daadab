"""What the CLI prints: the stdout/stderr consoles, value and duration formatting, metric tables.

Everything goes out literally: no rich markup or emoji codes are read from printed text, and
control characters are escaped (crucible.cli.terminal), since stored runs hold untrusted text.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO, cast

from rich import box
from rich.console import Console, RenderableType
from rich.style import StyleType
from rich.table import Table
from rich.text import Text

from crucible.cli.terminal import inline, json_safe, multiline, safe_text
from crucible.headline import headlines, is_headline_key
from crucible.scrub import active as active_scrubber
from crucible.scrub import scrub_text
from crucible.serialize import to_jsonable

_VALUE_WIDTH = 80
_PLAIN_WIDTH = 200

# Stage-attempt results (span results plus the board's own pending/disabled/running) to styles.
STATUS_STYLES = {
    "pending": "dim",
    "disabled": "dim",
    "running": "yellow",
    "success": "green",
    "skip": "dim",
    "failure": "red",
    "error": "red",
    "timeout": "red",
    "cancellation": "magenta",
}

_consoles: dict[bool, Console] = {}


class _Scrubbed:
    """sys.stdout or sys.stderr (looked up on each use), with the secret values of the running
    run and of the environment scrubbed from everything written (crucible.scrub)."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr

    def _stream(self) -> TextIO:
        return sys.stderr if self._stderr else sys.stdout

    def write(self, text: str) -> int:
        return self._stream().write(scrub_text(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream(), name)


def console(stderr: bool = False) -> Console:
    """The stdout or stderr console; wide when not a terminal so piped lines do not wrap."""
    con = _consoles.get(stderr)
    if con is None:
        con = Console(
            file=cast("TextIO", _Scrubbed(stderr)), highlight=False, markup=False, emoji=False
        )
        if not con.is_terminal and "COLUMNS" not in os.environ:
            con.width = _PLAIN_WIDTH
        _consoles[stderr] = con
    return con


def say(text: str | Text = "", *, style: str | None = None) -> None:
    """Print plain text (no markup, controls but newline and tab escaped) to stdout."""
    shown = multiline(text) if isinstance(text, str) else safe_text(text, lines=True)
    console().print(shown, style=style, markup=False, soft_wrap=True)


def warn(text: str, *, style: str = "yellow") -> None:
    """Print plain text (no markup, controls but newline and tab escaped) to stderr."""
    console(stderr=True).print(multiline(text), style=style, markup=False, soft_wrap=True)


def error(text: str) -> None:
    """Print ``error: text`` to stderr, in red."""
    warn(f"error: {text}", style="red")


def print_json(data: Any) -> None:
    """Write ``data`` as indented JSON to stdout, bypassing rich (so it is never wrapped)."""
    text = json.dumps(to_jsonable(data), indent=2, ensure_ascii=False)
    sys.stdout.write(json_safe(active_scrubber().encoded().text(text)) + "\n")


def cell(text: str, style: StyleType = "") -> Text:
    """``text`` as a table cell, shown literally: every control character escaped.

    Escape before building a Text: rich's Text drops some controls (BEL, CR) silently.
    """
    return Text(inline(text), style=style)


def _literal(value: RenderableType | None) -> RenderableType | None:
    """A string or Text cell with every control character escaped; other renderables as is."""
    if isinstance(value, str):
        return cell(value)
    if isinstance(value, Text):
        return safe_text(value)
    return value


class SafeTable(Table):
    """A rich Table whose string and Text cells and headers are shown literally (``cell``);
    every table the CLI prints is one."""

    def add_column(
        self, header: RenderableType = "", footer: RenderableType = "", **options: Any
    ) -> None:
        super().add_column(_literal(header) or "", _literal(footer) or "", **options)

    def add_row(
        self,
        *renderables: RenderableType | None,
        style: StyleType | None = None,
        end_section: bool = False,
    ) -> None:
        super().add_row(*map(_literal, renderables), style=style, end_section=end_section)


def format_duration(seconds: float | None) -> str:
    """``850 ms``, ``2.50 s`` or ``3m 04.2s``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}m {secs:04.1f}s"


def _rounded(value: Any) -> Any:
    """Floats to 4 significant digits for display (0.07669999999999999 -> 0.0767)."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def cut(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, ending in an ellipsis when cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


def elide(text: str, width: int) -> str:
    """``text`` shortened to about ``width`` characters at a token boundary, ending ``…``.

    JSON items (``", "``) are kept whole where possible, then words; a single token longer
    than ``width`` is kept whole (the table wraps it) rather than cut through the middle.
    """
    if len(text) <= width:
        return text
    room = max(1, width - 2)  # space for " …"
    for sep in (", ", " "):
        at = text.rfind(sep, 0, room + 1)
        if at > 0:
            return text[:at].rstrip(",:") + " …"
    first = text.find(" ")
    return text if first < 0 else text[:first].rstrip(",:") + " …"


def short(value: Any, width: int = _VALUE_WIDTH) -> str:
    """A JSON rendering of ``value`` (floats rounded for display), elided at a token boundary."""
    try:
        shown = _rounded(to_jsonable(value))
        text = json.dumps(shown, ensure_ascii=False, separators=(", ", ": "))
    except (TypeError, ValueError):
        text = repr(value)
    return elide(text, width)


def value_text(value: Any, width: int = 40) -> str:
    """A value for a table cell: strings as they are, anything else as compact JSON."""
    if isinstance(value, str):
        return elide(value, width)
    return short(value, width)


def flatten_metrics(
    metrics: Mapping[str, Any], prefix: str = "", *, max_depth: int | None = None
) -> list[tuple[str, Any]]:
    """Nested metric mappings as ``(dotted.key, value)`` pairs, in insertion order.

    Below ``max_depth`` levels a mapping stays whole (shown as elided JSON).
    """
    out: list[tuple[str, Any]] = []
    for key, value in metrics.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        deeper = max_depth is None or name.count(".") + 1 < max_depth
        if isinstance(value, Mapping) and value and deeper:
            out.extend(flatten_metrics(value, name, max_depth=max_depth))
        else:
            out.append((name, value))
    return out


def headlines_table(metrics: Mapping[str, Any]) -> Table | None:
    """The metrics' one-line results (see ``crucible.headline``), wrapped at word boundaries."""
    lines = headlines(metrics)
    if not lines:
        return None
    table = SafeTable(title="results", title_justify="left", box=None, show_header=False)
    table.add_column("metric", no_wrap=True, style="bold")
    table.add_column("result", overflow="fold")
    for name, line in lines:
        table.add_row(cell(name), cell(line))
    return table


def metrics_table(
    metrics: Mapping[str, Any], title: str, *, width: int | None = None
) -> RenderableType:
    """Metrics as a two-column table sorted by dotted key; ``title: (none)`` when empty.

    Values longer than the line allows are elided at a token boundary (the store and
    ``--json`` keep them whole); headlines are left out, ``headlines_table`` shows them.
    """
    # Three levels keep the summary short (bench.test_results.ttest stays one row).
    rows = sorted(
        ((k, v) for k, v in flatten_metrics(metrics, max_depth=3) if not is_headline_key(k)),
        key=lambda kv: kv[0],
    )
    if not rows:
        return Text(f"{title}: (none)")
    key_width = max(len(k) for k, _ in rows)
    room = max(24, (width or console().width) - key_width - 6)
    table = SafeTable(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("metric", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in rows:
        table.add_row(cell(key), cell(short(value, room)))
    return table


def jaeger_link(base: str, trace_id: str | None) -> str | None:
    """The Jaeger UI page of ``trace_id`` under ``base``; None without a trace id."""
    return f"{base.rstrip('/')}/trace/{trace_id}" if trace_id else None
