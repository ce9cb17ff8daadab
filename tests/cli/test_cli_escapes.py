"""Stored text is untrusted: the CLI shows its control characters as escapes, reads no rich
markup from it, and ``--json`` keeps it exact.

The runs are made through ``crucible.run`` into a real SQLite file; the real CLI reads them back
as a subprocess (its stdout is a pipe, as when an operator pipes to ``less -R`` or a log).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from crucible import Context, Experiment, Registry, StageDef, StageFailed, run, stage
from crucible.store import RunStore
from tests.support.hostile_stages import (
    ARTIFACT,
    EXPERIMENT_ID,
    MESSAGE,
    METRIC,
    VALUE,
    hostile_fail,
    hostile_metrics,
)

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60
RUN_A = "r-esc-a"
RUN_B = "r-esc-b\u001b[2J"

# What must never reach the terminal: C0 but newline, DEL, C1, bidi overrides and isolates.
FORBIDDEN = {
    *map(chr, range(0x00, 0x20)),
    "\x7f",
    *map(chr, range(0x80, 0xA0)),
    *map(chr, range(0x202A, 0x202F)),
    *map(chr, range(0x2066, 0x206A)),
} - {"\n"}
SHOWN_ID = r"ansi\x1b[2J\x1b]0;PWNED\x07\x1b[31mRED"
SHOWN_MESSAGE = (
    r"boom\x1b[2J \x1b]8;;http://evil.example/\x1b\click here\x1b]8;;\x1b\ "
    r"[bold red]loud[/] [link=http://evil.example/]link[/link]\r\n"
    r"status: completed \u202eevil\u202c \x9b31m c1 \x7f del"
)


def base_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "CRUCIBLE_"))
        and k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "NO_COLOR")
    }
    env["PYTHONPATH"] = str(REPO)
    env["COLUMNS"] = "400"  # long cells stay on one line, so escaped text is found whole
    return env


def cli(
    *args: str, cwd: Path, color: bool = False, check: int | None = 0
) -> subprocess.CompletedProcess[str]:
    env = base_env()
    env.update({"FORCE_COLOR": "1", "TTY_COMPATIBLE": "1"} if color else {"NO_COLOR": "1"})
    proc = subprocess.run(
        [sys.executable, "-m", "crucible", *args],
        cwd=cwd, env=env, capture_output=True, text=True, encoding="utf-8", timeout=TIMEOUT_S,
        check=False,
    )  # fmt: skip
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def assert_clean(text: str) -> None:
    """No control, C1 or bidi character in ``text``; the offending ones named if there are."""
    found = sorted({f"U+{ord(c):04X}" for c in text if c in FORBIDDEN})
    assert not found, f"raw control characters {found} in output:\n{text!r}"


def one_line(text: str) -> str:
    """Table cells may be split across lines; the text with runs of spaces and newlines as one."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store holding two failed runs of a hostile experiment."""
    db = tmp_path_factory.mktemp("hostile") / "runs.db"
    experiment = Experiment(
        id=EXPERIMENT_ID, pipeline=[StageDef(name="hostile_metrics"), StageDef(name="hostile_fail")]
    )

    async def make() -> None:
        async with RunStore(db) as runs:
            for run_id in (RUN_A, RUN_B):
                with pytest.raises(StageFailed):
                    await run(experiment, registry=Registry([hostile_metrics, hostile_fail]),
                              store=runs, run_id=run_id)  # fmt: skip

    anyio.run(make)
    return db


def test_runs_list_and_show_escape_what_the_store_holds(store: Path, tmp_path: Path) -> None:
    listed = cli("runs", "list", "--store", str(store), cwd=tmp_path)
    with_metric = cli("runs", "list", "--store", str(store), "--metric", METRIC, cwd=tmp_path)
    shown = cli("runs", "show", RUN_B, "--store", str(store), cwd=tmp_path)
    for proc in (listed, with_metric, shown):
        assert_clean(proc.stdout + proc.stderr)
    assert SHOWN_ID in listed.stdout and r"r-esc-b\x1b[2J" in listed.stdout
    assert r"score\x1b[5m\u2066" in with_metric.stdout  # the column header
    assert r"v\x1b[31m[bold]x[/bold]\u202e" in with_metric.stdout
    assert "none of these runs has this metric" not in with_metric.stderr

    lines = shown.stdout.splitlines()
    assert r"run:        r-esc-b\x1b[2J" in lines
    assert f"experiment: {SHOWN_ID}" in lines
    # One line: the message's \r\n cannot forge a "status: completed" line of its own.
    assert f"failure:    stage 'hostile_fail': ValueError: {SHOWN_MESSAGE}" in lines
    assert not any(line.startswith("status: completed") for line in lines)
    flat = one_line(shown.stdout)
    assert flat.count(SHOWN_MESSAGE) == 2  # the failure line and the stage attempts table
    assert r"score\x1b[5m\u2066" in flat and r'"v\u001b[31m[bold]x[/bold]\u202e"' in flat
    assert r"report\x1b]0;T\x07" in flat and r"out/x\x1b[2J.txt" in flat


def test_markup_in_stored_text_is_printed_literally_on_a_colour_terminal(
    store: Path, tmp_path: Path
) -> None:
    """With colours on, rich writes its own SGR codes; none of the run's sequences get out,
    and ``[bold red]`` / ``[link=...]`` stay text (markup would have eaten them)."""
    shown = cli("runs", "show", RUN_A, "--store", str(store), cwd=tmp_path, color=True)
    listed = cli("runs", "list", "--store", str(store), cwd=tmp_path, color=True)
    assert "\x1b[" in shown.stdout  # colours really are on
    for out in (shown.stdout + shown.stderr, listed.stdout + listed.stderr):
        for injected in ("\x1b[2J", "\x1b]0;", "\x1b]8;", "\x1b[5m", "\x07", "\u202e", "\x9b"):
            assert injected not in out, injected
        assert "\x1b]8;" not in out  # no hyperlink at all: rich's [link] was not read
    assert "[bold red]loud[/]" in shown.stdout
    assert "[link=http://evil.example/]link[/link]" in shown.stdout


def test_runs_diff_escapes_ids_metric_names_and_values(store: Path, tmp_path: Path) -> None:
    diff = cli("runs", "diff", RUN_A, RUN_B, "--store", str(store), cwd=tmp_path)
    assert_clean(diff.stdout + diff.stderr)
    assert f"b: r-esc-b\\x1b[2J (experiment {SHOWN_ID}, failed)" in diff.stdout.splitlines()
    assert r"score\x1b[5m\u2066" in diff.stdout and r"v\x1b[31m[bold]x[/bold]\u202e" in diff.stdout


def test_json_output_round_trips_the_stored_text_exactly(store: Path, tmp_path: Path) -> None:
    shown = cli("runs", "show", RUN_B, "--store", str(store), "--json", cwd=tmp_path)
    listed = cli("runs", "list", "--store", str(store), "--json", "--metric", METRIC, cwd=tmp_path)
    diff = cli("runs", "diff", RUN_A, RUN_B, "--store", str(store), "--json", cwd=tmp_path)
    for proc in (shown, listed, diff):
        assert_clean(proc.stdout.replace("\n", ""))  # even DEL, C1 and bidi as \uXXXX
    run_b = json.loads(shown.stdout)
    assert run_b["run_id"] == RUN_B and run_b["experiment_id"] == EXPERIMENT_ID
    assert run_b["failure_message"] == MESSAGE and run_b["metrics"][METRIC] == VALUE
    assert [a["error_message"] for a in run_b["attempts"] if a["error_message"]] == [MESSAGE]
    assert {a["name"] for a in run_b["artifacts"]} == {ARTIFACT}
    rows = json.loads(listed.stdout)
    assert {r["run_id"] for r in rows} == {RUN_A, RUN_B}
    assert all(r["selected_metrics"] == {METRIC: VALUE} for r in rows)
    assert [r["run_id"] for r in json.loads(diff.stdout)["runs"]] == [RUN_A, RUN_B]


def test_an_unknown_run_id_is_named_escaped(store: Path, tmp_path: Path) -> None:
    proc = cli("runs", "show", "nope\u001b]0;T\u0007", "--store", str(store), cwd=tmp_path, check=2)
    assert_clean(proc.stdout + proc.stderr)
    assert r"unknown run id 'nope\x1b]0;T\x07'" in proc.stderr


def _experiment_file(cwd: Path) -> Path:
    """A batch over a hostile option value, failing with a hostile message; YAML's \\e is ESC."""
    path = cwd / "hostile.yaml"
    path.write_text(
        textwrap.dedent(
            r"""
            id: "batch\e[2J\u202eexp"
            pipeline:
              - name: hostile_fail
                module: tests.support.hostile_stages:hostile_fail
            matrix:
              hostile_fail.tag: ["a\e]0;T\a", "b\x9b"]
            """
        ).lstrip(),
        encoding="utf-8",
    )
    return path


def test_batch_summary_and_run_failure_are_escaped(tmp_path: Path) -> None:
    file = _experiment_file(tmp_path)
    common = ["--allow-imports", "--exporter", "none"]
    batch = cli("batch", str(file), *common, cwd=tmp_path, check=1)
    single = cli("run", str(file), *common, "--set", "hostile_fail.tag=x", cwd=tmp_path, check=1)
    for proc in (batch, single):
        assert_clean(proc.stdout + proc.stderr)
    flat = one_line(batch.stdout)
    assert r"hostile_fail.tag=a\x1b]0;T\x07" in flat and r"hostile_fail.tag=b\x9b" in flat
    failures = [line for line in batch.stdout.splitlines() if line.startswith("  #")]
    assert len(failures) == 2 and all(f.endswith(f"ValueError: {SHOWN_MESSAGE}") for f in failures)
    assert r"  #0 [hostile_fail.tag=a\x1b]0;T\x07]: stage 'hostile_fail'" in failures[0]
    assert r"(experiment batch\x1b[2J\u202eexp)" in batch.stdout
    assert r"ValueError: boom\x1b[2J" in single.stderr
    listed = cli("runs", "list", "--json", cwd=tmp_path)
    stored = json.loads(listed.stdout)
    assert {r["experiment_id"] for r in stored} == {"batch\x1b[2J\u202eexp"}


def test_validate_problems_are_escaped(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(
        'id: x\npipeline:\n  - name: "nope\\e[2J\\u202e"\n'
        "  - name: hostile_fail\n    module: tests.support.hostile_stages:hostile_fail\n"
        '    options: {"k\\e]0;T\\a": 1}\n',
        encoding="utf-8",
    )
    proc = cli("validate", str(file), "--allow-imports", cwd=tmp_path, check=2)
    assert_clean(proc.stdout + proc.stderr)
    assert r"nope\x1b[2J\u202e" in proc.stderr and r"k\x1b]0;T\x07" in proc.stderr


@stage("lone_surrogate", description="A metric no UTF-8 can hold", register=False)
async def lone_surrogate(ctx: Context) -> Context:
    return ctx.put_metric("half", "x\ud800y")


def test_text_utf8_cannot_hold_is_shown_escaped_not_a_crash(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"

    async def make() -> None:
        async with RunStore(db) as runs:
            await run(Experiment(id="surrogate", pipeline=[StageDef(name="lone_surrogate")]),
                      registry=Registry([lone_surrogate]), store=runs, run_id="r-half")  # fmt: skip

    anyio.run(make)
    shown = cli("runs", "show", "r-half", "--store", str(db), cwd=tmp_path)
    assert r'"x\ud800y"' in shown.stdout
    as_json = cli("runs", "show", "r-half", "--json", "--store", str(db), cwd=tmp_path)
    assert json.loads(as_json.stdout)["metrics"] == {"half": "x\ud800y"}
    listed = cli("runs", "list", "--metric", "half", "--store", str(db), cwd=tmp_path)
    assert "r-half" in listed.stdout
