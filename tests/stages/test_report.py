"""The report stage: formats, timing table from a real run, paths, sinks, artifacts."""

from __future__ import annotations

import datetime as dt
import html
import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

import crucible
from crucible import Context, Experiment, OutputSpec, StageDef, StageFailed
from crucible.files import FileAccess, using_access
from crucible.stage import as_stage_spec
from crucible.testing import make_context, run_stage
from crucible.ui.display import number
from stages.bench import BenchOptions, bench
from stages.data_checks import DataChecksOptions, data_checks
from stages.report import OutputProblem, ReportError, ReportOptions, output_problems, report
from tests.support.schema import validate_schema

SVG_NS = "http://www.w3.org/2000/svg"


@pytest.fixture(autouse=True)
def tmp_is_writable(tmp_path: Path) -> Any:
    """Reports in these tests go to tmp_path: let them (the default write root is ./reports)."""
    with using_access(FileAccess.default(allow_write=[tmp_path])) as access:
        yield access


def ctx_for(*outputs: OutputSpec, **metrics: Any) -> Context:
    exp = Experiment(id="exp1", outputs=list(outputs) or None)
    return (
        make_context("exp1", "run1", experiment=exp)
        .merge_metrics(metrics)
        .add_output({"prompt": "p", "score": 0.5})
    )


async def produce(ctx: Context, tmp_path: Path) -> Context:
    out: Context = await report(ctx, ReportOptions(out_dir=str(tmp_path)))
    return out


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def test_no_outputs_leaves_ctx_unchanged(tmp_path: Path) -> None:
    ctx = ctx_for(accuracy=0.9)
    assert await produce(ctx, tmp_path) is ctx
    ctx = make_context(experiment=Experiment(id="e", outputs=[]))
    assert await produce(ctx, tmp_path) is ctx
    assert files(tmp_path) == []


async def test_markdown_default_path_content_and_artifact(tmp_path: Path) -> None:
    ctx = ctx_for(OutputSpec(name="summary"), accuracy=0.93)
    out = await produce(ctx, tmp_path)
    path = tmp_path / "exp1-run1-summary.md"
    assert files(tmp_path) == ["exp1-run1-summary.md"]
    text = path.read_text()
    assert text.startswith("# Experiment exp1")
    assert "`run1`" in text and '"accuracy": 0.93' in text and '"score": 0.5' in text
    assert "## Stage timings" in text
    assert out.get_artifact("report.summary.markdown") == {
        "location": str(path.resolve()),
        "format": "markdown",
        "type": "file",
    }
    assert out.outputs[-1] == {
        "name": "summary",
        "rendered": [{"format": "markdown", "path": str(path.resolve())}],
    }


async def test_json_is_valid_and_tuples_become_lists(tmp_path: Path) -> None:
    ctx = ctx_for(
        OutputSpec(name="r", formats=["json"]),
        ci=(0.1, 0.2),
        when=dt.datetime(2024, 1, 2, 3, 4, 5),
        bad=float("nan"),
        api_key="hunter2",
    )
    await produce(ctx, tmp_path)
    data = json.loads((tmp_path / "exp1-run1-r.json").read_text())
    assert data["experiment_id"] == "exp1" and data["run_id"] == "run1"
    assert data["metrics"]["ci"] == [0.1, 0.2]
    assert data["metrics"]["when"] == "2024-01-02T03:04:05"
    assert data["metrics"]["bad"] == "NaN"
    assert data["metrics"]["api_key"] != "hunter2"
    assert data["outputs"] == [{"prompt": "p", "score": 0.5}]
    assert data["stages"] == []


async def test_html_is_self_contained_and_escaped(tmp_path: Path) -> None:
    ctx = ctx_for(OutputSpec(name="page", formats=["html"]), note="<script>alert(1)</script>")
    await produce(ctx, tmp_path)
    page = (tmp_path / "exp1-run1-page.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page
    assert "http://" not in page and "https://" not in page and "<link" not in page


async def test_timing_table_from_a_real_run(tmp_path: Path) -> None:
    calls = {"n": 0}

    @crucible.stage("producer", description="Puts a metric; fails once", register=False)
    async def producer(ctx: Context) -> Context:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("transient | glitch")
        return ctx.put_metric("accuracy", 0.91)

    exp = Experiment(
        id="timed",
        pipeline=[
            StageDef(name="producer", retries=1, retry_backoff=0),
            StageDef(name="report", options={"out_dir": str(tmp_path)}),
        ],
        outputs=[OutputSpec(name="t", formats=["json", "markdown", "html"])],
    )
    out = await crucible.run(
        exp, run_id="r1", registry=crucible.Registry([producer, report]),
        file_access=FileAccess.default(allow_write=[tmp_path]),
    )  # fmt: skip
    data = json.loads((tmp_path / "timed-r1-t.json").read_text())
    rows = data["stages"]
    assert [(r["stage"], r["attempt"], r["result"]) for r in rows] == [
        ("producer", 1, "failure"),
        ("producer", 2, "success"),
    ]
    assert rows[0]["error"] == "RuntimeError: transient | glitch" and rows[1]["error"] is None
    assert all(isinstance(r["duration_ms"], float) and r["duration_ms"] >= 0 for r in rows)
    assert data["metrics"] == {"accuracy": 0.91}

    md = (tmp_path / "timed-r1-t.md").read_text()
    assert "| Stage | Attempt | Result | Duration (ms) | Error |" in md
    assert "| producer | 1 | failure |" in md and "transient \\| glitch" in md
    assert "| producer | 2 | success |" in md
    page = (tmp_path / "timed-r1-t.html").read_text()
    assert '<td class="failure">failure</td>' in page

    assert set(out.artifacts) == {"report.t.json", "report.t.markdown", "report.t.html"}
    assert out.trace is not None
    (report_span,) = [s for s in out.trace.spans if s.stage == "report"]
    written = [e for e in report_span.events if e.name == "report.written"]
    assert sorted(e.attributes["format"] for e in written) == ["html", "json", "markdown"]


async def test_custom_path_with_several_formats_keeps_each_file(tmp_path: Path) -> None:
    spec = OutputSpec(name="s", formats=["markdown", "json"], options={"path": "sub/summary.txt"})
    out = await produce(ctx_for(spec, x=1), tmp_path)
    assert files(tmp_path) == ["sub/summary.json", "sub/summary.md"]
    assert json.loads((tmp_path / "sub/summary.json").read_text())["metrics"] == {"x": 1}
    assert out.get_artifact("report.s.json")["location"] == str(
        (tmp_path / "sub/summary.json").resolve()
    )


async def test_custom_path_single_format_used_as_given(tmp_path: Path) -> None:
    target = tmp_path / "exact.txt"
    spec = OutputSpec(name="s", formats=["markdown"], options={"path": str(target)})
    await produce(ctx_for(spec), tmp_path)
    assert files(tmp_path) == ["exact.txt"]
    assert target.read_text().startswith("# Experiment exp1")


@pytest.mark.parametrize("bad", ["../x.md", "a/../../x.md", "/etc/crucible-x.md", ""])
async def test_paths_escaping_out_dir_are_refused(tmp_path: Path, bad: str) -> None:
    out_dir = tmp_path / "reports"
    ok = OutputSpec(name="first", formats=["json"])
    spec = OutputSpec(name="evil", formats=["markdown"], options={"path": bad})
    with pytest.raises(ReportError, match="outside the reports folder") as info:
        await report(ctx_for(ok, spec), ReportOptions(out_dir=str(out_dir)))
    assert "'evil'" in str(info.value)
    assert files(tmp_path) == []  # not even the valid first spec was written


async def test_absolute_path_outside_via_symlink_is_refused(tmp_path: Path) -> None:
    out_dir = tmp_path / "reports"
    out_dir.mkdir()
    (out_dir / "link").symlink_to(tmp_path)
    spec = OutputSpec(name="s", options={"path": str(out_dir / "link" / "x.md")})
    with pytest.raises(ReportError):
        await report(ctx_for(spec), ReportOptions(out_dir=str(out_dir)))
    assert not (tmp_path / "x.md").exists()


async def test_ids_cannot_traverse_through_the_default_name(tmp_path: Path) -> None:
    exp = Experiment(id="../up", outputs=[OutputSpec(name="a/b")])
    ctx = make_context("../up", "../../run", experiment=exp)
    await report(ctx, ReportOptions(out_dir=str(tmp_path / "r")))
    assert files(tmp_path) == ["r/_up-_.._run-a_b.md"]


async def test_unknown_format_and_sink_fail_before_writing(tmp_path: Path) -> None:
    good = OutputSpec(name="good", formats=["json"])
    bad_format = OutputSpec(name="pdfy", formats=["markdown", "pdf"])
    with pytest.raises(ReportError, match=r"output 'pdfy': unsupported format 'pdf'"):
        await produce(ctx_for(good, bad_format), tmp_path)
    bad_sink = OutputSpec(name="bucket", sink="s3")
    with pytest.raises(ReportError, match=r"output 'bucket': unsupported sink 's3'"):
        await produce(ctx_for(good, bad_sink), tmp_path)
    dup = OutputSpec(name="good", formats=["html"])
    with pytest.raises(ReportError, match="unique"):
        await produce(ctx_for(good, dup), tmp_path)
    clash = OutputSpec(name="other", formats=["json"], options={"path": "exp1-run1-good.json"})
    with pytest.raises(ReportError, match="would overwrite"):
        await produce(ctx_for(good, clash), tmp_path)
    assert files(tmp_path) == []


def test_output_problems_name_every_bad_spec_and_its_field_before_anything_runs(
    tmp_path: Path,
) -> None:
    specs = [
        OutputSpec(name="ok", formats=["json"]),
        OutputSpec(name="up", formats=["json"], options={"path": "../../a.json"}),
        OutputSpec(name="pdfy", formats=["pdf"]),
        OutputSpec(name="ok", formats=["html"]),
        OutputSpec(name="bucket", sink="s3"),
        OutputSpec(name="clash", formats=["json"], options={"path": "exp1-run1-ok.json"}),
        OutputSpec(name="typed", options={"path": 3}),
    ]
    problems = output_problems("exp1", "run1", specs, tmp_path / "r", show_paths=False)
    assert [(p.spec_index, p.field) for p in problems] == [
        (1, "options.path"), (2, "formats"), (3, "name"), (4, "sink"), (5, "options.path"),
        (6, "options.path"),
    ]  # fmt: skip
    assert problems[1] == OutputProblem(
        2, "formats", "output 'pdfy': unsupported format 'pdf'; supported: markdown, json, html"
    )
    assert problems[0].message == (
        "output 'up': path '../../a.json' is outside the reports folder (out_dir); "
        "give a path inside it"
    )
    assert "would overwrite exp1-run1-ok.json, already written by output 'ok' (json)" in (
        problems[4].message
    )
    assert not any(str(tmp_path) in p.message for p in problems)  # no folder of this machine
    shown = output_problems("exp1", "run1", specs[:2], tmp_path / "r")
    assert f"resolves to {tmp_path.parent / 'a.json'}" in shown[0].message
    assert output_problems("exp1", "run1", specs[:1], tmp_path / "r") == []
    assert files(tmp_path) == []


async def test_a_refusal_under_hidden_paths_names_no_folder(tmp_path: Path) -> None:
    hidden = FileAccess(
        read_roots=(tmp_path,), write_roots=(tmp_path,), read_base=tmp_path,
        write_base=tmp_path, show_paths=False,
    )  # fmt: skip
    spec = OutputSpec(name="evil", formats=["json"], options={"path": "../x.json"})
    with using_access(hidden), pytest.raises(ReportError) as info:
        await report(ctx_for(spec), ReportOptions(out_dir=str(tmp_path)))
    assert str(tmp_path.parent) not in str(info.value)
    assert "'../x.json' is outside the reports folder (out_dir)" in str(info.value)


async def test_errors_surface_as_stage_failed_through_the_engine(tmp_path: Path) -> None:
    exp = Experiment(id="e", outputs=[OutputSpec(name="x", formats=["docx"])])
    with pytest.raises(StageFailed) as info:
        await run_stage(
            report, make_context(experiment=exp), {"out_dir": str(tmp_path)},
            file_access=FileAccess.default(allow_write=[tmp_path]),
        )  # fmt: skip
    assert isinstance(info.value.cause, ReportError)


async def test_stdout_sink(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = OutputSpec(name="console", formats=["markdown", "json"], sink="stdout")
    out = await produce(ctx_for(spec, accuracy=0.7), tmp_path)
    printed = capsys.readouterr().out
    assert "===== report console (markdown) =====" in printed
    assert "===== report console (json) =====" in printed
    assert '"accuracy": 0.7' in printed
    assert files(tmp_path) == [] and dict(out.artifacts) == {}
    rendered = out.outputs[-1]["rendered"]
    assert [r["format"] for r in rendered] == ["markdown", "json"]
    assert all(r["sink"] == "stdout" and r["body"] for r in rendered)


async def test_rewriting_replaces_atomically(tmp_path: Path) -> None:
    spec = OutputSpec(name="s", formats=["json"])
    await produce(ctx_for(spec, v=1), tmp_path)
    await produce(ctx_for(spec, v=2), tmp_path)
    assert files(tmp_path) == ["exp1-run1-s.json"]  # no temp files left behind
    assert json.loads((tmp_path / "exp1-run1-s.json").read_text())["metrics"] == {"v": 2}


def test_options_and_describe() -> None:
    schema = as_stage_spec(report).describe()
    assert schema["name"] == "report" and schema["optional"] == ["out_dir"]
    assert schema["defaults"] == {"out_dir": "reports"}
    assert validate_schema(schema) == []
    with pytest.raises(ValueError):
        ReportOptions.model_validate({"out_dir": " "})
    with pytest.raises(ValueError):
        ReportOptions.model_validate({"format": "md"})


async def analysed_run(tmp_path: Path) -> tuple[Context, Path]:
    """data_checks, bench and report (all three formats) on two prompts and one bad row."""
    examples: list[dict[str, Any]] = [
        {"id": f"ex-{i}", "input": f"q{i}", "output": "" if i == 4 else "a"} for i in range(8)
    ]
    base = [0.61, 0.64, 0.58, 0.66, 0.60, 0.63, 0.59, 0.65]
    cand = [0.71, 0.69, 0.74, 0.68, 0.73, 0.70, 0.75, 0.72]
    spec = OutputSpec(name="r", formats=["markdown", "json", "html"])
    ctx = make_context("exp1", "run1", experiment=Experiment(id="exp1", outputs=[spec]))
    ctx = ctx.assign("examples", examples).add_outputs(
        [{"prompt": "baseline", "score": v} for v in base]
        + [{"prompt": "candidate", "score": v, "note": "x|y"} for v in cand]
    )
    ctx = await data_checks(ctx, DataChecksOptions())
    ctx = await bench(ctx, BenchOptions(tests=["welch"], effect_size="hedges_g"))
    return await produce(ctx, tmp_path), tmp_path


async def test_reports_lead_with_headlines_groups_and_flagged_rows(tmp_path: Path) -> None:
    ctx, root = await analysed_run(tmp_path)
    headline = ctx.metrics["bench"]["headline"]
    assert headline.startswith("candidate \u2212 baseline = 0.0")
    md = (root / "exp1-run1-r.md").read_text()
    page = (root / "exp1-run1-r.html").read_text()
    data = json.loads((root / "exp1-run1-r.json").read_text())

    assert data["headlines"]["bench"] == headline
    assert data["metrics"]["bench"]["group_stats"][0]["mean"] == pytest.approx(0.62)
    # markdown: headline first, groups and flagged rows as tables, rounded metrics
    assert md.index("## Results") < md.index("## Compared groups") < md.index("## Metrics")
    assert f"- **bench**: {headline}" in md
    assert "| baseline | 8 | 0.62 | [" in md
    assert "| 4 | ex-4 | output |  |" in md
    p_value = ctx.metrics["bench"]["test_results"]["welch"]["p_value"]
    assert f"| bench.test_results.welch.p_value | {p_value:.4g} |" in md
    assert repr(p_value) in md  # the full value, in the JSON block
    assert "| candidate | 0.71 | x\\|y |" in md  # outputs as a table, cells escaped
    # HTML: the same headline, a plot of both groups with intervals, exact values on hover
    assert f"<li><b>bench</b>: {html.escape(headline)}</li>" in page
    assert f'title="{p_value!r}">{p_value:.4g}</td>' in page
    assert "<script" not in page and "http://" not in page.replace(SVG_NS, "")
    svg = ElementTree.fromstring(page[page.index("<svg") : page.index("</svg>") + 6])
    marks = [el for el in svg.iter(f"{{{SVG_NS}}}rect") if el.get("class") == "mark"]
    titles = [el.findtext(f"{{{SVG_NS}}}title") or "" for el in marks]
    assert [t.split(":")[0] for t in titles] == ["baseline", "candidate"]
    low, high = ctx.metrics["bench"]["group_stats"][1]["confidence_interval"]
    assert titles[1] == f"candidate: 0.715 [{number(low)}, {number(high)}]"
    assert len([el for el in svg.iter(f"{{{SVG_NS}}}path")]) == 2  # one whisker per group
    assert "<td>4</td><td>ex-4</td><td>output</td>" in page


async def test_reports_without_bench_or_flags_have_no_such_sections(tmp_path: Path) -> None:
    spec = OutputSpec(name="s", formats=["markdown", "html"])
    await produce(ctx_for(spec, accuracy=0.93), tmp_path)
    md = (tmp_path / "exp1-run1-s.md").read_text()
    page = (tmp_path / "exp1-run1-s.html").read_text()
    for text in (md, page):
        assert "Results" not in text and "Compared groups" not in text and "<svg" not in text
        assert "Flagged examples" not in text
    assert "| accuracy | 0.93 |" in md and "<th>accuracy</th><td>0.93</td>" in page
