"""The ``crucible`` console script: the process's collector set for runs, then the CLI."""

from __future__ import annotations

from typing import NoReturn

from crucible.gcsettings import tune_process

__all__ = ["main"]


def main() -> NoReturn:
    """Tune this process's garbage collector (``crucible.gcsettings``), then run the app."""
    tune_process()
    from crucible.cli import main as cli_main

    cli_main()
