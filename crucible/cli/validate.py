"""``crucible validate``: load and pre-flight an experiment file without running anything."""

from __future__ import annotations

from typing import TYPE_CHECKING

from crucible.cli.app import (
    AllowImportsOption,
    AllowReadOption,
    AllowWriteOption,
    FileArgument,
    SetOption,
    guard,
)
from crucible.cli.output import say
from crucible.cli.preflight import file_access_for, preflight

if TYPE_CHECKING:
    pass


def validate_command(
    file: FileArgument,
    set_: SetOption = None,
    allow_imports: AllowImportsOption = False,
    allow_read: AllowReadOption = None,
    allow_write: AllowWriteOption = None,
) -> None:
    """Check an experiment file without running it: stages resolve, options validate."""
    from crucible.experiment import load_with_overrides
    from crucible.registry import default_registry

    with guard():
        experiment = load_with_overrides(file, set_ or [])
        access = file_access_for(file, allow_read, allow_write)
        preflight(
            experiment, default_registry(), allow_imports=allow_imports, source=file.name,
            access=access,
        )  # fmt: skip
        n = len(experiment.pipeline)
        disabled = sum(1 for sd in experiment.pipeline if not sd.enabled)
        extra = f", {disabled} disabled" if disabled else ""
        say(
            f"ok: {n} stage{'s' if n != 1 else ''}{extra} "
            f"(experiment {experiment.id!r}, {file.name})"
        )
