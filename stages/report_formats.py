"""The report formats: markdown, JSON and one self-contained HTML page (inline CSS and SVG).

Each shows, in order: the run's headlines, the groups ``bench`` compared (HTML adds a plot of
their means with confidence intervals), the examples ``data_checks`` flagged, the metrics and
outputs as tables with rounded numbers, and the stage timings.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from typing import Any

from crucible.ui.charts import BarCI, bar_ci
from crucible.ui.display import number
from stages.report_view import (
    Cell,
    Document,
    FlaggedRows,
    Group,
    flagged_rows,
    group_rows,
    metric_rows,
    output_table,
    pretty,
)

__all__ = ["RENDERERS", "render", "render_html", "render_json", "render_markdown"]

_NO_STAGES = "No stage has finished before this report."
_FLAG_COLUMNS = ("#", "id", "missing", "problem")


def _level_text(level: float | None) -> str:
    return f"{(level or 0.95) * 100:g} % CI"


def _ci_text(g: Group) -> str:
    return "" if g.low is None or g.high is None else f"[{number(g.low)}, {number(g.high)}]"


def _flag_cells(row: dict[str, Any]) -> list[str]:
    missing = row.get("missing")
    return [
        str(row.get("index", "")),
        str(row.get("id", "")),
        ", ".join(map(str, missing)) if isinstance(missing, list) else "",
        str(row.get("error") or row.get("issue") or ""),
    ]


def _flag_note(flags: FlaggedRows) -> str:
    shown = f"; the first {len(flags.rows)} are listed" if len(flags.rows) < flags.total else ""
    return (
        f"{flags.total} of {flags.examples} examples were flagged by data_checks{shown} "
        "(row numbers count from 0; every issue is in assigns['data_issues'])."
    )


# --- markdown ----------------------------------------------------------------------------------


def _fence(body: str) -> str:
    """A backtick fence longer than any backtick run inside ``body``."""
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    return "`" * max(3, longest + 1)


def _md(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]], right: set[int]) -> list[str]:
    align = ["---:" if i in right else "---" for i in range(len(header))]
    out = ["| " + " | ".join(_md(h) for h in header) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return [*out, ""]


def _md_json(summary: str, value: Any) -> list[str]:
    body = pretty(value)
    fence = _fence(body)
    return ["<details><summary>" + summary + "</summary>", "", f"{fence}json", body, fence, "",
            "</details>", ""]  # fmt: skip


def render_markdown(doc: Document) -> str:
    """Markdown: run facts, headlines, groups, flagged rows, metric/output/timing tables."""
    parts = [f"# Experiment {doc.experiment_id}", "", f"- Run: `{doc.run_id}`",
             f"- Generated: {doc.generated_at}", ""]  # fmt: skip
    if doc.headlines:
        parts += ["## Results", ""]
        parts += [f"- **{_md(name)}**: {_md(line)}" for name, line in doc.headlines] + [""]
    groups, level = group_rows(doc.metrics)
    if groups:
        rows = [(g.name, g.n, number(g.mean), _ci_text(g)) for g in groups]
        parts += ["## Compared groups", ""]
        parts += _md_table(("Group", "n", "Mean", _level_text(level)), rows, {1, 2})
    flags = flagged_rows(doc.metrics)
    if flags is not None:
        parts += ["## Flagged examples", "", _flag_note(flags), ""]
        parts += _md_table(_FLAG_COLUMNS, [_flag_cells(r) for r in flags.rows], {0})
    parts += ["## Metrics", ""]
    metrics = metric_rows(doc.metrics)
    if metrics:
        parts += _md_table(("Metric", "Value"), [(k, c.text) for k, c in metrics], set())
        parts += ["Numbers are rounded to 4 significant digits; full values:", ""]
        parts += _md_json("Metrics as JSON", doc.metrics)
    else:
        parts += ["No metrics.", ""]
    parts += ["## Outputs", ""]
    if doc.outputs:
        columns, cells = output_table(doc.outputs)
        rows_md = [[str(i), *(c.text for c in row)] for i, row in enumerate(cells)]
        parts += _md_table(["#", *columns], rows_md, {0})
        parts += _md_json("Outputs as JSON", doc.outputs)
    else:
        parts += ["No outputs.", ""]
    parts += ["## Stage timings", ""]
    if doc.stages:
        timings = [(r["stage"], r["attempt"], r["result"], r["duration_ms"], r["error"])
                   for r in doc.stages]  # fmt: skip
        parts += _md_table(
            ("Stage", "Attempt", "Result", "Duration (ms)", "Error"), timings, {1, 3}
        )
    else:
        parts.append(_NO_STAGES)
    return "\n".join(parts).rstrip("\n") + "\n"


def render_json(doc: Document) -> str:
    """JSON: the whole document with full values, strictly valid (no NaN), pretty-printed."""
    return pretty(doc.as_json()) + "\n"


# --- HTML --------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1b1f24;
background:#fff;line-height:1.45}
h1{font-size:1.5rem;margin-bottom:.25rem}h2{font-size:1.15rem;margin-top:2rem}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dt{font-weight:600}
table{border-collapse:collapse;margin:.5rem 0;min-width:40%}
th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
td[title]{cursor:help}ul.headlines{padding-left:1.2rem}ul.headlines li{margin:.2rem 0}
ul.headlines b{font-weight:600}.hint{color:#57606a;font-size:.85rem}
.success{color:#1a7f37}.failure,.error,.timeout,.cancellation{color:#cf222e}.skip{color:#6e7781}
""".strip()


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _td(c: Cell, *, align: bool = True) -> str:
    """A cell showing the rounded text, with the exact value in its title when they differ."""
    title = f' title="{_esc(c.full)}"' if c.full != c.text else ""
    cls = ' class="num"' if c.numeric and align else ""
    return f"<td{cls}{title}>{_esc(c.text)}</td>"


def _html_table(header: Sequence[str], rows: Sequence[str], cls: str) -> list[str]:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    return [f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>', *rows,
            "</tbody></table>"]  # fmt: skip


def _html_groups(groups: list[Group], level: float | None) -> list[str]:
    rows = [
        f'<tr class="group"><td>{_esc(g.name)}</td><td class="num">{g.n}</td>'
        f'<td class="num" title="{g.mean!r}">{_esc(number(g.mean))}</td>'
        f'<td class="num">{_esc(_ci_text(g))}</td></tr>'
        for g in groups
    ]
    out = ["<h2>Compared groups</h2>"]
    out += _html_table(("Group", "n", "Mean", _level_text(level)), rows, "groups")
    bars = [BarCI(g.name, g.mean, g.low, g.high) for g in groups]
    label = f"mean with {_level_text(level)}"
    out.append(f'<figure class="groups-plot">{bar_ci(bars, y_label=label)}</figure>')
    return out


def _html_flags(flags: FlaggedRows) -> list[str]:
    rows = [
        "<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in _flag_cells(r)) + "</tr>"
        for r in flags.rows
    ]
    out = ["<h2>Flagged examples</h2>", f'<p class="hint">{_esc(_flag_note(flags))}</p>']
    return out + _html_table(_FLAG_COLUMNS, rows, "flagged")


def _html_timings(stages: list[dict[str, Any]]) -> list[str]:
    if not stages:
        return [f"<p>{_NO_STAGES}</p>"]
    rows = []
    for row in stages:
        result = _esc(row["result"])
        rows.append(
            f'<tr><td>{_esc(row["stage"])}</td><td class="num">{_esc(row["attempt"])}</td>'
            f'<td class="{result}">{result}</td>'
            f'<td class="num">{_esc(row["duration_ms"])}</td><td>{_esc(row["error"])}</td></tr>'
        )
    return _html_table(("Stage", "Attempt", "Result", "Duration (ms)", "Error"), rows, "stages")


def render_html(doc: Document) -> str:
    """HTML: one self-contained page (inline CSS and SVG, no scripts or external assets)."""
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
    ]
    if doc.headlines:
        out += ["<h2>Results</h2>", '<ul class="headlines">']
        out += [f"<li><b>{_esc(n)}</b>: {_esc(line)}</li>" for n, line in doc.headlines]
        out.append("</ul>")
    groups, level = group_rows(doc.metrics)
    if groups:
        out += _html_groups(groups, level)
    flags = flagged_rows(doc.metrics)
    if flags is not None:
        out += _html_flags(flags)
    out.append("<h2>Metrics</h2>")
    metrics = metric_rows(doc.metrics)
    if metrics:
        rows = [f"<tr><th>{_esc(k)}</th>{_td(c, align=False)}</tr>" for k, c in metrics]
        out += _html_table(("Metric", "Value"), rows, "metrics")
        out.append('<p class="hint">Numbers are rounded; hover a value for its full value.</p>')
    else:
        out.append("<p>No metrics.</p>")
    out.append("<h2>Outputs</h2>")
    if doc.outputs:
        columns, cells = output_table(doc.outputs)
        rows = [
            f'<tr><td class="num">{i}</td>' + "".join(_td(c) for c in row) + "</tr>"
            for i, row in enumerate(cells)
        ]
        out += _html_table(["#", *columns], rows, "outputs")
    else:
        out.append("<p>No outputs.</p>")
    out += ["<h2>Stage timings</h2>", *_html_timings(doc.stages), "</body></html>"]
    return "\n".join(out) + "\n"


RENDERERS: dict[str, Callable[[Document], str]] = {
    "markdown": render_markdown,
    "json": render_json,
    "html": render_html,
}


def render(doc: Document, fmt: str) -> str:
    """Render ``doc`` in one of the formats of ``RENDERERS``."""
    return RENDERERS[fmt](doc)
