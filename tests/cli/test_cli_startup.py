"""What ``crucible --help`` loads, and the ``crucible.stage`` name, in fresh interpreters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("pydantic", "sqlalchemy", "opentelemetry.sdk", "scipy", "crucible.engine")


def _fresh(code: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, timeout=120, check=False, cwd=cwd,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


# What only running a command needs: --help loads none of these either.
RUNTIME = ("asyncio", "importlib.metadata", "structlog", "rich.live", "crucible.observers")
# Listing stages imports the stage modules (their options are pydantic models, and typer
# coerces arguments with pydantic), but neither the engine, the store nor a stage's own heavy
# dependencies (scipy for bench loads when bench runs).
NOT_FOR_STAGES = ("sqlalchemy", "opentelemetry.sdk", "scipy", "crucible.engine", "crucible.store")


def _loaded_by(
    args: list[str], watched: tuple[str, ...], cwd: Path | None = None
) -> tuple[int, str, list[str]]:
    """Run ``crucible ARGS`` in a fresh interpreter: exit code, stdout, watched modules loaded."""
    out = _fresh(
        "import contextlib, io, json, sys\n"
        "from crucible.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as text:\n"
        "    try:\n"
        f"        main({args!r})\n"
        "    except SystemExit as done:\n"
        "        code = done.code\n"
        f"print(json.dumps([code, text.getvalue(), [m for m in {watched!r} "
        "if m in sys.modules]]))\n",
        cwd,
    )
    code, text, loaded = json.loads(out.splitlines()[-1])
    return code, text, loaded


def test_help_loads_none_of_the_heavy_modules() -> None:
    code, text, loaded = _loaded_by(["--help"], (*HEAVY, *RUNTIME))
    assert code == 0 and "Usage" in text and "stages" in text
    assert loaded == []


def test_a_command_help_loads_neither_engine_store_nor_sdk() -> None:
    # The root callback runs first (typer coerces its options with pydantic, logging is
    # configured), but the command's own module must not load what only running it needs.
    for args, shown in ((["run", "--help"], "--exporter"), (["batch", "--help"], "--executor")):
        code, text, loaded = _loaded_by(args, (*NOT_FOR_STAGES, "rich.live"))
        assert code == 0 and shown in text, args
        assert loaded == [], args


def test_stages_loads_neither_engine_store_sdk_nor_scipy() -> None:
    code, text, loaded = _loaded_by(["stages"], NOT_FOR_STAGES)
    assert code == 0 and "bench" in text and "validate" in text
    assert loaded == []


def test_a_run_writing_its_trace_to_a_file_loads_no_metrics_sdk(tmp_path: Path) -> None:
    # The file holds spans only: nothing would read the SDK's meters.
    (tmp_path / "one.yaml").write_text("id: one\npipeline:\n  - name: validate\n")
    watched = ("opentelemetry.sdk.metrics", "crucible.store", "sqlalchemy.dialects.postgresql")
    code, text, loaded = _loaded_by(["run", "one.yaml"], watched, tmp_path)
    assert code == 0 and "completed" in text
    assert loaded == ["crucible.store"]  # a SQLite store: no PostgreSQL dialect either
    assert (tmp_path / "traces.jsonl").stat().st_size > 0


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
