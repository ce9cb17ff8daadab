"""What ``crucible --help`` loads, and the ``crucible.stage`` name, in fresh interpreters."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("pydantic", "sqlalchemy", "opentelemetry.sdk", "scipy", "crucible.engine")


def _fresh(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_help_loads_none_of_the_heavy_modules() -> None:
    out = _fresh(
        "import contextlib, io, json, sys\n"
        "from crucible.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as text:\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit as done:\n"
        "        code = done.code\n"
        f"print(json.dumps([code, 'Usage' in text.getvalue(), [m for m in {HEAVY!r} "
        "if m in sys.modules]]))\n"
    )
    code, usage, loaded = json.loads(out.splitlines()[-1])
    assert code == 0 and usage
    assert loaded == []


def test_crucible_stage_is_the_decorator_whichever_loads_first() -> None:
    for first in ("import crucible.stage", "import crucible.registry", "import crucible"):
        out = _fresh(
            f"{first}\nimport crucible, types\n"
            "import crucible.stage as m\n"
            "from crucible import stage, Stage\n"
            "print(callable(crucible.stage), isinstance(crucible.stage, types.ModuleType),"
            " crucible.stage is stage, m is stage, Stage.__module__)\n"
        )
        assert out.split() == ["True", "False", "True", "True", "crucible.stage"], first


def test_a_stage_decorated_after_only_the_module_was_imported_runs() -> None:
    out = _fresh(
        "from crucible.stage import StageSpec\n"
        "import anyio, crucible\n"
        "@crucible.stage('late', description='d')\n"
        "async def late(ctx):\n"
        "    return ctx.put_metric('late', 1.0)\n"
        "exp = crucible.Experiment(id='x', pipeline=[crucible.StageDef(name='late')])\n"
        "print(anyio.run(crucible.run, exp).metrics['late'])\n"
    )
    assert out.split()[-1] == "1.0"
