"""The CI import-cycle check (.ci/import_cycles.py) on small packages written for each test."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "import_cycles.py"


def write_package(root: Path, name: str, modules: dict[str, str]) -> None:
    (root / name).mkdir()
    (root / name / "__init__.py").write_text("")
    for module, source in modules.items():
        (root / name / f"{module}.py").write_text(textwrap.dedent(source))


def check(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_cycles_through_function_local_and_type_checking_imports_are_reported(
    tmp_path: Path,
) -> None:
    write_package(
        tmp_path,
        "cyc",
        {
            "a": "from cyc import b\n",
            "b": "def f():\n    from cyc import a\n",
            "c": "from cyc import d\n",
            "d": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cyc import c\n",
            "e": "from cyc import a\n",
        },
    )
    result = check(tmp_path, "cyc")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "import cycle: cyc.a -> cyc.b -> cyc.a" in result.stdout
    assert "import cycle: cyc.c -> cyc.d -> cyc.c" in result.stdout
    assert "cyc.e" not in result.stdout and "2 import cycles" in result.stdout


def test_an_ignored_import_breaks_a_cycle_only_while_it_exists(tmp_path: Path) -> None:
    write_package(tmp_path, "pair", {"a": "from pair import b\n", "b": "import pair.a\n"})
    ok = check(tmp_path, "pair", "--ignore-import", "pair.b -> pair.a")
    assert ok.returncode == 0 and "0 import cycles" in ok.stdout, ok.stdout + ok.stderr
    stale = check(tmp_path, "pair", "--ignore-import", "pair.a -> pair.missing")
    assert stale.returncode == 1
    assert "ignored import pair.a -> pair.missing does not exist" in stale.stdout
