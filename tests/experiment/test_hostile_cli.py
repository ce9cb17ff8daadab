"""``crucible validate`` and ``crucible run`` on hostile experiment files: exit 2, the file and
the problem on stderr, nothing run and nothing stored."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.experiment.test_hostile_inputs import alias_bomb

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]

CASES = {
    "bomb.yaml": (alias_bomb(), "bomb.yaml: line 9, column 42: metadata.l6[6]: alias *l5"),
    "self.yaml": ("id: x\nmetadata: &a {x: *a}\n", "self.yaml: line 2, column 18: metadata.x"),
    "deep.json": ('{"id": "x", "m": ' + "[" * 100_000, "deep.json: line 1, column 81: nested"),
    "deep.toml": ('id = "x"\nm = ' + "[" * 100_000, "deep.toml: line 2, column 69: nested"),
    "date.yaml": (
        "id: x\ncreated_at: 2024-13-45\n",
        "date.yaml: line 2, column 13: created_at: invalid timestamp '2024-13-45'",
    ),
    "dup.yaml": ("id: x\nowner: a\nid: y\n", "dup.yaml: line 3, column 1: duplicate key 'id'"),
    "dup.json": ('{"id": "x", "id": "y"}', "dup.json: line 1, column 13: duplicate key 'id'"),
    "big.yaml": ("id: x\ndescription: " + "y" * 2000 + "\n", "big.yaml: the file has 2,020 bytes"),
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hostile_cli")
    for name, (text, _) in CASES.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def crucible(workdir: Path, command: str, name: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CRUCIBLE_"))}
    env |= {"PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    if name == "big.yaml":  # the size limit, lowered through the environment
        env["CRUCIBLE_MAX_EXPERIMENT_BYTES"] = "1000"
    return subprocess.run(
        [sys.executable, "-m", "crucible", command, name],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", ["validate", "run"])
def test_hostile_files_exit_2_naming_file_and_problem(workdir: Path, command: str) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = pool.map(lambda name: crucible(workdir, command, name), CASES)
        results = dict(zip(CASES, runs, strict=True))
    for name, done in results.items():
        expected = CASES[name][1]
        assert (done.returncode, done.stdout) == (2, ""), (name, done.stdout, done.stderr)
        assert f"error: {expected}" in done.stderr, (name, done.stderr)
        assert "Traceback" not in done.stderr
    assert not (workdir / ".crucible").exists()  # nothing stored
    assert not (workdir / "traces.jsonl").exists()  # nothing ran
