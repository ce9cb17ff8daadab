"""``crucible validate`` checks a sweep exactly as ``crucible batch`` will, as subprocesses."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.cli_env import plugin_env

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Repo root plus a fake distribution declaring the test stages as plugins; no OTEL env."""
    stages = {
        "cli_grid": "tests.support.cli_stages:grid_stage",
        "cli_range": "tests.support.cli_stages:range_stage",
        "cli_fail": "tests.support.cli_stages:fail_stage",
    }
    return plugin_env(tmp_path_factory.mktemp("site"), "crucible-cli-validate-test-plugin", stages)


def cli_many(
    cwd: Path, calls: Sequence[Sequence[str]], env: Mapping[str, str]
) -> list[subprocess.CompletedProcess[str]]:
    """Run independent invocations at once, each its own process."""

    def one(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "crucible", *args], cwd=cwd, env=dict(env),
            capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
        )  # fmt: skip

    with ThreadPoolExecutor(max_workers=min(4, len(calls))) as pool:
        return list(pool.map(one, calls))


def write(cwd: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        (cwd / name).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")


FILES = {
    # the two files from the bug report: validate said ok, batch refused them
    "typo_stage.yaml": """
        id: typo-stage
        pipeline:
          - name: bench
        matrix: {bnech.alpha: [1, 2]}
        """,
    "typo_option.yaml": """
        id: typo-option
        pipeline:
          - name: validate
        matrix: {validate.strcit: [true]}
        """,
    # one bad value of one key: every combination holding it fails, and only those
    "bad_value.yaml": """
        id: bad-value
        pipeline:
          - name: cli_grid
        matrix:
          cli_grid.x: [1, many, 3]
          cli_grid.y: [a, b]
        """,
    # options that depend on each other (lo < hi), next to another varied stage
    "pairs.yaml": """
        id: pairs
        pipeline:
          - name: cli_range
          - name: cli_grid
        matrix:
          cli_range.lo: [0, 5]
          cli_range.hi: [3, 10]
          cli_grid.x: [1, 2]
        """,
    # a stage the matrix does not vary is wrong at every point
    "fixed.yaml": """
        id: fixed
        pipeline:
          - name: cli_grid
          - name: cli_range
            options: {lo: 2, hi: 1}
        matrix:
          cli_grid.x: [1, 2]
        """,
    # a secret among the matrix values: never printed
    "secret.yaml": """
        id: secret
        pipeline:
          - name: cli_grid
        matrix:
          cli_grid.api_key: [sk-LEAK-4321]
          cli_grid.x: [1, many]
        """,
    # options given to a stage that takes none
    "no_options.yaml": """
        id: no-options
        pipeline:
          - name: cli_fail
            options: {typo_key: 1}
        """,
    "no_options_matrix.yaml": """
        id: no-options-matrix
        pipeline:
          - name: cli_grid
          - name: cli_fail
        matrix:
          cli_grid.x: [1, 2]
          cli_fail.typo_key: [1]
        """,
}


def test_validate_refuses_what_batch_refuses_naming_file_key_and_value(
    tmp_path: Path, env: dict[str, str]
) -> None:
    write(tmp_path, FILES)
    names = list(FILES)
    results = cli_many(
        tmp_path, [[cmd, name] for name in names for cmd in ("validate", "batch")], env
    )
    out = {
        (name, cmd): res
        for (name, cmd), res in zip(
            [(n, c) for n in names for c in ("validate", "batch")], results, strict=True
        )
    }
    for (name, cmd), res in out.items():
        assert res.returncode == 2, (name, cmd, res.stdout, res.stderr)
        assert "nothing was run" in res.stderr and "Traceback" not in res.stderr
        assert not res.stdout.startswith("ok"), (name, cmd, res.stdout)

    def said(name: str, cmd: str = "validate") -> str:
        return out[(name, cmd)].stderr

    # the same matrix-key check, word for word
    key_error = "typo_stage.yaml: typo-stage: matrix names stages not in the pipeline: bnech"
    assert key_error in said("typo_stage.yaml") and key_error in said("typo_stage.yaml", "batch")
    assert (
        "typo_option.yaml [validate.strcit=true]: pipeline[0] (validate) options.strcit: "
        "unknown option"
    ) in said("typo_option.yaml")
    assert "options.strcit: unknown option" in said("typo_option.yaml", "batch")
    # the key and the value that cause the problem, not every combination holding it
    bad = said("bad_value.yaml")
    assert "bad_value.yaml [cli_grid.x=many]: pipeline[0] (cli_grid) options.x" in bad
    assert "cli_grid.y=" not in bad
    # the same count of bad points as batch, from far fewer plans
    for name, scope in (
        ("bad_value.yaml", "in 2 of 6 matrix points"),
        ("pairs.yaml", "in 2 of 8 matrix points"),
        ("fixed.yaml", "in 2 of 2 matrix points"),
        ("secret.yaml", "in 2 of 2 matrix points"),
    ):
        for cmd in ("validate", "batch"):
            assert f"{name}: invalid pipeline {scope}; nothing was run" in said(name, cmd)
    # options that depend on each other: the one bad pair, with both of its values
    pairs = said("pairs.yaml")
    assert (
        "pairs.yaml [cli_range.lo=5, cli_range.hi=3]: pipeline[0] (cli_range): Value error, "
        "lo (5) must be below hi (3)"
    ) in pairs
    assert "cli_grid.x" not in pairs and pairs.count("must be below") == 1
    assert "fixed.yaml [every matrix point]: pipeline[1] (cli_range)" in said("fixed.yaml")
    assert all("sk-LEAK-4321" not in res.stderr for res in results)
    assert "[cli_grid.api_key=[REDACTED], cli_grid.x=many]: " in said("secret.yaml", "batch")
    secret = said("secret.yaml")  # a key with a single value is not named as the cause
    assert "secret.yaml [cli_grid.x=many]: pipeline[0] (cli_grid) options.x" in secret
    assert "secret.yaml [every matrix point]: pipeline[0] (cli_grid) options.api_key" in secret
    # a stage taking no options names itself and the key, in validate and batch alike
    for name in ("no_options.yaml", "no_options_matrix.yaml"):
        for cmd in ("validate", "batch"):
            assert (
                "(cli_fail) options.typo_key: unknown option (stage 'cli_fail' takes no options)"
            ) in said(name, cmd)
    assert "[cli_fail.typo_key=1]" in said("no_options_matrix.yaml")
    assert not (tmp_path / ".crucible").exists()  # nothing ran, nothing was stored


def test_good_sweeps_pass_and_big_ones_stay_bounded(tmp_path: Path, env: dict[str, str]) -> None:
    xs = ", ".join(str(i) for i in range(101))
    ys = ", ".join(f"y{i}" for i in range(100))
    write(tmp_path, {
        "big.yaml": f"""
            id: big
            pipeline:
              - name: cli_range
                options: {{hi: 1000}}
              - name: cli_grid
            matrix:
              cli_range.lo: [{xs}]
              cli_range.hi: [200, 300, 400]
              cli_grid.x: [{xs}]
              cli_grid.y: [{ys}]
            """,
    })  # fmt: skip
    sweep, big = cli_many(
        tmp_path, [["validate", str(REPO / "examples" / "sweep.yaml")], ["validate", "big.yaml"]],
        env,
    )  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr
    assert sweep.stdout.startswith("ok: 2 stages, 6 matrix points (experiment 'quickstart-sweep'")
    # 3,060,300 points: cli_range's 303 pairs are checked together; cli_grid's 10,100 (past the
    # limit of 10,000) one option at a time, which the output says
    assert big.returncode == 0, big.stderr
    assert "ok: 2 stages, 3,060,300 matrix points (experiment 'big', big.yaml)" in big.stdout
    assert "the 10,100 combinations of cli_grid's matrix options" in big.stderr
    assert "checked one option at a time" in big.stderr and "cli_range" not in big.stderr
