"""The ``crucible`` command: run, batch and validate experiments, list stages, inspect runs
(list, show, diff) and run them again (rerun, resume).

Each command group lives in its own module; this one puts them on the app, in help order.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from typing import NoReturn

from crucible.cli.app import app
from crucible.cli.batch import batch_command
from crucible.cli.diff import diff_command
from crucible.cli.replay import rerun_command, resume_command
from crucible.cli.run import run_command
from crucible.cli.runs import runs_app
from crucible.cli.stages import stages_command
from crucible.cli.ui import ui_command
from crucible.cli.validate import validate_command

__all__ = ["app", "main"]

app.command("run")(run_command)
app.command("batch")(batch_command)
app.command("validate")(validate_command)
app.command("stages")(stages_command)
runs_app.command("rerun")(rerun_command)
runs_app.command("resume")(resume_command)
runs_app.command("diff")(diff_command)
app.add_typer(runs_app, name="runs")
app.command("ui")(ui_command)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console-script entry point: run the ``crucible`` app and exit with its status."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):  # stored text may hold what UTF-8 cannot
            stream.reconfigure(errors="backslashreplace")  # (a lone surrogate): shown escaped
    app(args=list(argv) if argv is not None else None, prog_name="crucible")
    raise SystemExit(0)  # pragma: no cover - typer always exits in standalone mode
