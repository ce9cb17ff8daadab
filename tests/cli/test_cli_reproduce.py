"""``crucible runs show --json / rerun / diff / resume`` as subprocesses, in a temp git repo."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from crucible.redact import REDACTED
from crucible.store import RunInfo, RunStore
from crucible.telemetry.jsonl import read_otlp_jsonl

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed"),
]

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60
PLUGIN = "crucible-cli-reproduce-test-plugin"
EXPERIMENT = """
id: repro
pipeline:
  - name: cli_keyed
    options: {api_key: sk-first}
  - name: cli_flaky
"""
GRID = """
id: grid
pipeline:
  - name: cli_keyed
    options: {api_key: sk-grid}
matrix:
  cli_keyed.scale: [1.5, 3]
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Repo root plus a fake distribution declaring the test stages; no OTEL/CRUCIBLE env."""
    site = tmp_path_factory.mktemp("site")
    dist = site / "crucible_cli_reproduce_test_plugin-0.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {PLUGIN}\nVersion: 0.3\n", encoding="utf-8"
    )
    (dist / "entry_points.txt").write_text(
        "[crucible.stages]\n"
        "cli_keyed = tests.support.cli_stages:keyed_stage\n"
        "cli_flaky = tests.support.cli_stages:flaky_stage\n",
        encoding="utf-8",
    )
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "CRUCIBLE_", "GIT_"))
        and k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
    }
    base["PYTHONPATH"] = os.pathsep.join([str(REPO), str(site)])
    base["NO_COLOR"] = "1"
    return base


def cli(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crucible", *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=TIMEOUT_S, check=False,
    )  # fmt: skip


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        cwd=repo, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def repo_with(root: Path, files: dict[str, str]) -> Path:
    """A git repository with ``files`` committed (the store under .crucible/ stays untracked)."""
    root.mkdir()
    git(root, "init", "-q")
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        git(root, "add", name)
    git(root, "commit", "-q", "-m", "experiment")
    return root


def stored(cwd: Path, *run_ids: str) -> list[RunInfo]:
    async def read() -> list[RunInfo]:
        async with RunStore(cwd / ".crucible" / "runs.db") as store:
            found = [await store.get_run(rid) for rid in run_ids]
        assert all(found), run_ids
        return [f for f in found if f is not None]

    return asyncio.run(read())


def runs_of(cwd: Path, stage: str) -> int:
    path = cwd / f"{stage}.runs"
    return len(path.read_text(encoding="utf-8").splitlines()) if path.exists() else 0


def test_show_rerun_diff_and_resume(tmp_path: Path, env: dict[str, str]) -> None:
    cwd = repo_with(tmp_path / "work", {"exp.yaml": EXPERIMENT})
    first = cli(cwd, env, "run", "exp.yaml", "--run-id", "r1", "--checkpoint",
                "--set", "cli_keyed.scale=2", "--set", "cli_keyed.api_key=sk-set")  # fmt: skip
    assert first.returncode == 1, first.stderr
    assert "cli_flaky is failing" in first.stderr

    shown = cli(cwd, env, "runs", "show", "r1", "--json")
    assert shown.returncode == 0, shown.stderr
    row = json.loads(shown.stdout)
    assert row["config"]["pipeline"][0]["options"] == {"api_key": REDACTED, "scale": 2}
    assert row["config"]["checkpoint"] is True
    assert row["versions"]["python"] and row["versions"]["crucible-pipelines"]
    assert row["versions"][PLUGIN] == "0.3"  # the distribution providing the stages
    assert (row["git_commit"], row["git_dirty"]) == (git(cwd, "rev-parse", "HEAD"), False)
    assert len(row["span_id"]) == 16 and row["rerun_of"] is None
    assert "sk-set" not in shown.stdout
    text = cli(cwd, env, "runs", "show", "r1")
    assert f"git:        {row['git_commit']}" in text.stdout
    assert f"{PLUGIN} 0.3" in text.stdout

    refused = cli(cwd, env, "runs", "rerun", "r1")
    assert refused.returncode == 2
    assert "--set cli_keyed.api_key=VALUE" in refused.stderr and "redacted" in refused.stderr
    assert runs_of(cwd, "cli_keyed") == 1  # the refusal ran nothing

    fixes = ["--set", "cli_keyed.api_key=sk-again", "--set", "cli_flaky.fail=false"]
    again = cli(cwd, env, "runs", "rerun", "r1", "--run-id", "r2", *fixes)
    assert again.returncode == 0, again.stderr
    assert "rerun of r1" in again.stdout and "run r2 completed" in again.stdout
    original, rerun = stored(cwd, "r1", "r2")
    assert rerun.rerun_of == "r1" and rerun.metrics["scale"] == 2
    assert rerun.config is not None and rerun.config["pipeline"][1]["options"] == {"fail": False}
    spans = read_otlp_jsonl(cwd / "traces.jsonl")
    run_span = next(
        s for s in spans if s["name"] == "RUN repro" and s["trace_id"] == rerun.trace_id
    )
    assert [(link["trace_id"], link["span_id"]) for link in run_span["links"]] == [
        (original.trace_id, original.span_id)
    ]
    assert run_span["attributes"]["crucible.run.rerun_of"] == "r1"

    diff = cli(cwd, env, "runs", "diff", "r1", "r2")
    assert diff.returncode == 0, diff.stderr
    for needle in ("status: failed -> completed", "cli_flaky.fail", "flaky_ok", "b - a"):
        assert needle in diff.stdout, (needle, diff.stdout)
    assert "versions: same" in diff.stdout
    as_json = json.loads(cli(cwd, env, "runs", "diff", "r1", "r2", "--json").stdout)
    assert [r["status"] for r in as_json["runs"]] == ["failed", "completed"]
    assert as_json["status_differs"] is True
    assert as_json["configuration"] == [
        {"key": "cli_flaky.fail", "values": {"r2": False}, "deltas": {}, "differs": True}
    ]
    assert as_json["versions"] == []
    metrics = {m["key"]: m for m in as_json["metrics"]}
    assert metrics["scale"] == {"key": "scale", "values": {"r1": 2, "r2": 2},
                                "deltas": {"r2": 0}, "differs": False}  # fmt: skip
    assert metrics["flaky_ok"]["values"] == {"r2": True} and metrics["flaky_ok"]["differs"]

    resumed = cli(cwd, env, "runs", "resume", "r1", "--run-id", "r3", *fixes)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming r1 from stage 'cli_flaky' (1 stage(s) restored)" in resumed.stdout
    assert "stage cli_keyed ... skip" in resumed.stdout and "run r3 completed" in resumed.stdout
    assert runs_of(cwd, "cli_keyed") == 2  # r1 and r2: the resume did not run it again
    (third,) = stored(cwd, "r3")
    assert third.resumed_from == "r1" and third.metrics == {"scale": 2, "flaky_ok": True,
                                                            "scaled": 20}  # fmt: skip
    assert [(a.stage, a.result) for a in third.attempts] == [
        ("cli_keyed", "skip"), ("cli_flaky", "success"),
    ]  # fmt: skip
    spans = read_otlp_jsonl(cwd / "traces.jsonl")
    keyed = next(
        s for s in spans if s["trace_id"] == third.trace_id and s["name"] == "stage cli_keyed"
    )
    assert keyed["attributes"]["crucible.stage.restored"] is True
    assert keyed["attributes"]["cicd.pipeline.task.run.result"] == "skip"

    as_json = cli(cwd, env, "runs", "rerun", "r1", "--run-id", "r4", "--json", *fixes)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["run_id"] == "r4"  # stdout is the JSON alone
    assert "rerun of r1" in as_json.stderr


def test_rerun_and_resume_take_the_short_id_the_tables_show(
    tmp_path: Path, env: dict[str, str]
) -> None:
    cwd = repo_with(tmp_path / "work", {"exp.yaml": EXPERIMENT})
    first = cli(cwd, env, "run", "exp.yaml", "--checkpoint", "--set", "cli_keyed.api_key=sk-1")
    assert first.returncode == 1, first.stderr
    (row,) = json.loads(cli(cwd, env, "runs", "list", "--json").stdout)
    full, short = row["run_id"], row["run_id"][:8]
    fixes = ["--set", "cli_keyed.api_key=sk-2", "--set", "cli_flaky.fail=false"]
    again = cli(cwd, env, "runs", "rerun", short, "--run-id", "again", *fixes)
    assert again.returncode == 0, again.stderr
    assert f"rerun of {full}" in again.stdout
    resumed = cli(cwd, env, "runs", "resume", short, "--run-id", "resumed", *fixes)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {full} from stage 'cli_flaky'" in resumed.stdout
    rerun, resume = stored(cwd, "again", "resumed")
    assert rerun.rerun_of == full and resume.resumed_from == full


def test_refusals_exit_2(tmp_path: Path, env: dict[str, str]) -> None:
    cwd = repo_with(tmp_path / "work", {"exp.yaml": EXPERIMENT})
    assert cli(cwd, env, "run", "exp.yaml", "--run-id", "plain").returncode == 1
    done = cli(cwd, env, "run", "exp.yaml", "--run-id", "done", "--checkpoint",
               "--set", "cli_flaky.fail=false")  # fmt: skip
    assert done.returncode == 0, done.stderr
    cases = [
        (["runs", "resume", "done"], "'done' is completed"),
        (["runs", "resume", "plain"], "'plain' has no checkpoints"),
        (["runs", "resume", "nope"], "unknown run id 'nope'"),
        (["runs", "rerun", "nope"], "unknown run id 'nope'"),
        (["runs", "diff", "done", "nope"], "unknown run id 'nope'"),
        (["runs", "rerun", "done", "--set", "other.x=1"], "no stage named 'other'"),
        (["runs", "rerun"], "Missing argument 'RUN_ID'"),
        (["runs", "resume"], "Missing argument 'RUN_ID'"),
    ]
    for args, needle in cases:
        res = cli(cwd, env, *args)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert needle in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr
    assert runs_of(cwd, "cli_keyed") == 2


def test_batch_rows_keep_their_matrix_point(tmp_path: Path, env: dict[str, str]) -> None:
    cwd = repo_with(tmp_path / "work", {"grid.yaml": GRID})
    res = cli(cwd, env, "batch", "grid.yaml", "--checkpoint", "--json")
    assert res.returncode == 0, res.stderr
    run_ids = [r["run_id"] for r in json.loads(res.stdout)["runs"]]
    rows = stored(cwd, *run_ids)
    points = sorted(
        (r.config["pipeline"][0]["options"]["scale"], r.start_assigns) for r in rows if r.config
    )
    assert points == [
        (1.5, {"matrix": {"cli_keyed.scale": 1.5}}),
        (3, {"matrix": {"cli_keyed.scale": 3}}),
    ]
    assert all(r.config and r.config["checkpoint"] and r.config["matrix"] is None for r in rows)
    assert {r.git_commit for r in rows} == {git(cwd, "rev-parse", "HEAD")}
