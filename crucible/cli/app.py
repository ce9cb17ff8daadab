"""The typer app: global options, the option types commands share, exit codes and error handling.

Exit codes: 0 success, 1 a stage failed (or an unexpected error), 2 bad input (file, options,
``--set``, unknown stage or run id), 130 interrupted with Ctrl-C.
"""

from __future__ import annotations

import enum
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, TextIO, cast

import typer

from crucible.cli.output import error, warn
from crucible.cli.terminal import multiline
from crucible.errors import CrucibleError, ExperimentFileError
from crucible.telemetry.choices import EXPORTERS

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
DEFAULT_JAEGER_URL = "http://localhost:16686"
DISTRIBUTION = "crucible-pipelines"


class LogLevel(enum.StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


@dataclass
class _State:
    """The global options, read by the commands after the root callback set them."""

    debug: bool = False
    log_level: LogLevel = LogLevel.warning


_STATE = _State()


class CliError(Exception):
    """A user-facing error: ``message`` (and detail ``lines``) to stderr, then exit ``code``."""

    def __init__(self, message: str, *, lines: Sequence[str] = (), code: int = EXIT_USAGE):
        super().__init__(message)
        self.message = message
        self.lines = tuple(lines)
        self.code = code


@contextmanager
def guard() -> Iterator[None]:
    """Turn errors into messages and exit codes; tracebacks only with ``--debug``."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except CliError as err:
        error(err.message)
        for line in err.lines:
            warn(f"  {line}", style="red")
        raise typer.Exit(err.code) from None
    except ExperimentFileError as err:
        for line in str(err).splitlines():
            error(line)
        raise typer.Exit(EXIT_USAGE) from None
    except CrucibleError as err:  # OverrideError among them: bad input, exit 2
        error(str(err))
        raise typer.Exit(EXIT_USAGE) from None
    except KeyboardInterrupt:
        error("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as err:
        if _STATE.debug:  # through warn: the message may quote stored text
            warn(traceback.format_exc().rstrip(), style="")
        hint = "" if _STATE.debug else " (run with --debug for the traceback)"
        error(f"unexpected {_short(err)}{hint}")
        raise typer.Exit(EXIT_FAILED) from None


def _short(err: Exception) -> str:
    """``Type: message``; for a database error without the SQL text and bound values."""
    sa_exc = sys.modules.get("sqlalchemy.exc")  # loaded when a store was used, else no such error
    if sa_exc is not None and isinstance(err, sa_exc.DBAPIError):
        from crucible.store.connection import describe

        return describe(err)
    return f"{type(err).__name__}: {err}"


class _StderrProxy:
    """A stream that writes to whatever ``sys.stderr`` is now (rich's Live swaps it), with
    control characters escaped: log lines quote stored and stage text (the CLI's logs are
    uncoloured, so none of their own output is lost)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(multiline(text))

    def flush(self) -> None:
        sys.stderr.flush()


def log_level() -> str:
    """The ``--log-level`` chosen (default ``warning``)."""
    return str(_STATE.log_level.value)


def configure_logging(*, json_logs: bool) -> None:
    """structlog to stderr at the ``--log-level``; JSON lines with ``--json-logs``."""
    level = _STATE.log_level.value
    from crucible import logging as crucible_logging  # structlog loads only when used

    crucible_logging.configure(json=json_logs, level=level, stream=cast(TextIO, _StderrProxy()))


def check_timeout(timeout: float | None) -> None:
    """``--timeout`` must be a positive number of seconds."""
    if timeout is not None and not timeout > 0:  # NaN too
        raise CliError(f"--timeout must be a positive number of seconds, got {timeout:g}")


def check_run_id(run_id: str | None) -> None:
    """``--run-id`` must be 1 to 255 characters (what the store keeps)."""
    from crucible.experiment.models import ID_MAX

    if run_id is not None and not 0 < len(run_id) <= ID_MAX:
        raise CliError(f"--run-id must be 1 to {ID_MAX} characters, got {len(run_id)}")


def _check_exporter(value: str | None) -> str | None:
    """Refuse an unknown ``--exporter`` while parsing, naming the choices (comma lists allowed)."""
    if value is None:
        return None
    for part in value.split(","):
        if part.strip().lower() not in EXPORTERS:
            raise typer.BadParameter(
                f"unknown exporter {part.strip()!r}; choose from {', '.join(EXPORTERS)}"
            )
    return value


def _check_store(value: str | None) -> str | None:
    """Refuse, while parsing, a SQLite path whose folder does not exist (a typo would make it)."""
    if value is None:
        return None
    from crucible.errors import StoreError
    from crucible.store.urls import check_folder, normalize_url

    try:
        check_folder(normalize_url(value))
    except StoreError as err:
        raise typer.BadParameter(err.reason) from None
    return value


SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="STAGE.OPTION=VALUE",
        help="Set an option on every pipeline entry named STAGE; VALUE is read as YAML. "
        "Repeatable.",
    ),
]
AllowReadOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--allow-read",
        metavar="DIR",
        help="Also let stages read files in DIR (default: the working directory and the "
        "experiment file's folder). Repeatable.",
        show_default=False,
    ),
]
AllowWriteOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--allow-write",
        metavar="DIR",
        help="Also let stages write files in DIR (default: ./reports). Repeatable.",
        show_default=False,
    ),
]
AllowImportsOption = Annotated[
    bool,
    typer.Option(
        "--allow-imports", metavar="", help="Allow the experiment to import code it names."
    ),
]
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="CRUCIBLE_STORE_URL",
        callback=_check_store,
        help="Run store URL or SQLite path (default: .crucible/runs.db).",
        show_default=False,
    ),
]
JaegerOption = Annotated[
    str,
    typer.Option("--jaeger-url", envvar="CRUCIBLE_JAEGER_URL", help="Jaeger UI base URL."),
]
# Flags take no value: an empty metavar keeps typer from showing "<bool>" beside them.
JsonOption = Annotated[bool, typer.Option("--json", metavar="", help="Print JSON.")]
RunIdOption = Annotated[str | None, typer.Option("--run-id", help="Run id (default: a new UUID).")]
CheckpointOption = Annotated[
    bool,
    typer.Option(
        "--checkpoint",
        metavar="",
        help="Keep each completed stage's Context in the store, so a failed run can resume "
        "(sets the experiment's checkpoint: true).",
    ),
]
ExporterOption = Annotated[
    str | None,
    typer.Option(
        "--exporter",
        metavar="<" + "|".join(EXPORTERS) + ">",
        callback=_check_exporter,
        help="Where spans go; comma-separate to use several "
        "(default: $OTEL_TRACES_EXPORTER, else file = ./traces.jsonl).",
        show_default=False,
    ),
]
JsonLogsOption = Annotated[bool, typer.Option("--json-logs", metavar="", help="Log JSON lines.")]
TimeoutOption = Annotated[
    float | None, typer.Option("--timeout", help="Run deadline in seconds.", show_default=False)
]
FileArgument = Annotated[
    Path,
    typer.Argument(
        help="Experiment file (.yaml, .yml, .json or .toml).", metavar="FILE", show_default=False
    ),
]

app = typer.Typer(
    name="crucible",
    help="Run experiment pipelines with OpenTelemetry traces and a run store.",
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    """``--version``: print ``crucible <version>`` of the installed distribution and exit 0."""
    if not value:
        return
    import importlib.metadata  # only --version reads it; --help need not load it

    try:
        version = importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        version = f"unknown ({DISTRIBUTION} is not installed)"
    typer.echo(f"crucible {version}")
    raise typer.Exit(0)


@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[
        bool,
        typer.Option("--debug", metavar="", help="Show tracebacks of unexpected errors."),
    ] = False,
    log_level: Annotated[
        LogLevel, typer.Option("--log-level", help="Lowest log level written to stderr.")
    ] = LogLevel.warning,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            metavar="",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Run experiment pipelines with OpenTelemetry traces and a run store."""
    _STATE.debug = debug
    _STATE.log_level = log_level
    configure_logging(json_logs=False)
    if ctx.invoked_subcommand is None:  # bare ``crucible``: show the commands, succeed
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
