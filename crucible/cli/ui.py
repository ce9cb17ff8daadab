"""``crucible ui``: serve the local, read-only run browser over the run store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crucible.cli.app import EXIT_INTERRUPTED, CliError, StoreOption, guard


def ui_command(
    store: StoreOption = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port.")] = 8765,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="CRUCIBLE_UI_TOKEN",
            help="Bearer token every request must carry; required off loopback.",
            show_default=False,
        ),
    ] = None,
    jaeger_url: Annotated[
        str | None,
        typer.Option(
            "--jaeger-url",
            envvar="CRUCIBLE_JAEGER_URL",
            help="Jaeger UI base for trace links (no links when unset).",
            show_default=False,
        ),
    ] = None,
    artifacts_root: Annotated[
        list[Path] | None,
        typer.Option(
            "--artifacts-root",
            metavar="DIR",
            help="Another folder whose artifact files the UI may open (default: this folder). "
            "Repeatable.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Browse and compare stored runs in a web page (read-only; 127.0.0.1 by default)."""
    with guard():
        from crucible.ui import serve  # the web stack loads only for this command
        from crucible.ui.config import UiError

        try:
            serve(
                store, host, port, token, jaeger_url=jaeger_url,
                artifact_roots=[str(p) for p in artifacts_root or ()],
            )  # fmt: skip
        except UiError as err:
            raise CliError(str(err)) from None
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None
