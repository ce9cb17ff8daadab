"""``--store PATH`` in a folder that does not exist is refused, and no folder is made."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = "id: tiny\npipeline: []\n"


def cli(cwd: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CRUCIBLE_"))}
    env |= {"PYTHONPATH": str(REPO), "NO_COLOR": "1", "COLUMNS": "300", **extra}
    return subprocess.run(
        [sys.executable, "-m", "crucible", *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    "command",
    [["runs", "list"], ["runs", "show", "abcd1234"], ["runs", "diff", "a1b2", "c3d4"],
     ["runs", "rerun", "abcd1234"], ["run", "exp.yaml"], ["batch", "exp.yaml"], ["ui"]],
)  # fmt: skip
def test_a_store_in_a_missing_folder_is_refused(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "exp.yaml").write_text(EXPERIMENT, encoding="utf-8")
    typo = tmp_path / "nonexistent" / "dir" / "runs.db"
    for done in (cli(tmp_path, *command, "--store", str(typo)),
                 cli(tmp_path, *command, CRUCIBLE_STORE_URL=str(typo))):  # fmt: skip
        assert done.returncode == 2, done.stderr
        text = " ".join(done.stderr.replace("│", " ").split())  # the box typer draws
        assert f"cannot use the SQLite file {typo}" in text, text
        assert f"its folder {typo.parent} does not exist" in text, text
    assert not (tmp_path / "nonexistent").exists()
    assert not (tmp_path / ".crucible").exists() and not (tmp_path / "traces.jsonl").exists()


def test_the_default_location_is_made_when_named(tmp_path: Path) -> None:
    (tmp_path / "exp.yaml").write_text(EXPERIMENT, encoding="utf-8")
    done = cli(tmp_path, "run", "exp.yaml", "--store", ".crucible/runs.db", "--exporter", "none")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / ".crucible" / "runs.db").is_file()
