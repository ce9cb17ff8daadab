"""The README's "Testing your stages" snippet passes with plain pytest in a project of its own.

The snippet is read from README.md, so the documentation and this test cannot drift apart. It
runs in a subprocess from a temporary folder (no configuration) with pytest-asyncio disabled:
only what installing crucible brings (anyio's pytest plugin) runs the async test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"

# The stage the snippet imports: the one "Writing and running stages" defines.
STAGE_MODULE = """
from pydantic import BaseModel

import crucible
from crucible import Context


class ScaleOptions(BaseModel):
    factor: float = 2.0


@crucible.stage("scale", description="Multiply x")
async def scale(ctx: Context, opts: ScaleOptions) -> Context:
    ctx = ctx.record_event("scaling", factor=opts.factor)
    return ctx.put_metric("x", ctx.get_metric("x", 1.0) * opts.factor)
"""

pytestmark = [pytest.mark.slow]


def readme_snippet() -> str:
    """The first Python block under the README's "Testing your stages" heading."""
    section = README.read_text(encoding="utf-8").split("\n## Testing your stages\n", 1)[1]
    found = re.search(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.DOTALL)
    assert found, "README.md: no ```python block under 'Testing your stages'"
    return found.group(1)


def run_pytest(folder: Path, test_source: str) -> subprocess.CompletedProcess[str]:
    """Write the stage module and ``test_source`` into ``folder``; run pytest there."""
    (folder / "my_stages.py").write_text(STAGE_MODULE, encoding="utf-8")
    (folder / "test_scale.py").write_text(test_source, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    command = [sys.executable, "-m", "pytest", "-p", "no:asyncio", "-p", "no:cacheprovider", "-v"]
    return subprocess.run(
        command, cwd=folder, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_readme_snippet_passes_in_a_fresh_project(tmp_path: Path) -> None:
    done = run_pytest(tmp_path, readme_snippet())
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "test_scale.py::test_scale PASSED" in output  # asyncio only, not one run per backend
    assert "1 passed" in output
    plugins = re.search(r"^plugins: (.*)$", done.stdout, re.MULTILINE)
    assert plugins and "anyio" in plugins.group(1) and "asyncio" not in plugins.group(1), output


def test_readme_snippet_with_a_wrong_expectation_fails(tmp_path: Path) -> None:
    snippet = readme_snippet()
    assert 'ctx.get_metric("x") == 3.0' in snippet
    done = run_pytest(
        tmp_path, snippet.replace('ctx.get_metric("x") == 3.0', 'ctx.get_metric("x") == 4.0')
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "1 failed" in output
    assert "assert 3.0 == 4.0" in output
