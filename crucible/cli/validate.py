"""``crucible validate``: load and pre-flight an experiment file without running anything."""

from __future__ import annotations

from crucible.cli.app import (
    AllowImportsOption,
    AllowReadOption,
    AllowWriteOption,
    FileArgument,
    SetOption,
    guard,
)
from crucible.cli.output import say, warn
from crucible.cli.preflight import (
    file_access_for,
    preflight,
    preflight_matrix,
    warn_matrix_overrides,
)


def validate_command(
    file: FileArgument,
    set_: SetOption = None,
    allow_imports: AllowImportsOption = False,
    allow_read: AllowReadOption = None,
    allow_write: AllowWriteOption = None,
) -> None:
    """Check an experiment file without running it: stages resolve, options validate (at every
    matrix point, as crucible batch would)."""
    from crucible.experiment import load_with_overrides
    from crucible.experiment.matrix import MAX_COMBINATIONS
    from crucible.registry import default_registry

    with guard():
        experiment = load_with_overrides(file, set_ or [])
        warn_matrix_overrides(experiment, set_ or [])
        access = file_access_for(file, allow_read, allow_write)
        registry = default_registry()
        points = ""
        if experiment.matrix:
            sweeps = preflight_matrix(
                experiment, registry, allow_imports=allow_imports, source=file.name,
                access=access,
            )  # fmt: skip
            total = 1
            for sweep in sweeps:
                total *= sweep.combinations
                if not sweep.together:
                    warn(
                        f"note: {file.name}: the {sweep.combinations:,} combinations of "
                        f"{sweep.stage}'s matrix options (more than {MAX_COMBINATIONS:,}) were "
                        "checked one option at a time; options that depend on each other may "
                        "still fail in crucible batch"
                    )
            points = f", {total:,} matrix point{'s' if total != 1 else ''}"
        else:
            preflight(
                experiment, registry, allow_imports=allow_imports, source=file.name,
                access=access,
            )  # fmt: skip
        n = len(experiment.pipeline)
        disabled = sum(1 for sd in experiment.pipeline if not sd.enabled)
        extra = f", {disabled} disabled" if disabled else ""
        say(
            f"ok: {n} stage{'s' if n != 1 else ''}{extra}{points} "
            f"(experiment {experiment.id!r}, {file.name})"
        )
