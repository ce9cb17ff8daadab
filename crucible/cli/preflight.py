"""Pre-flight for ``run`` and ``validate``: resolve and validate every stage before any runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from crucible.cli.app import CliError

if TYPE_CHECKING:
    from crucible.engine import PlannedStage
    from crucible.experiment import Experiment
    from crucible.files import FileAccess
    from crucible.registry import Registry


def file_access_for(
    file: Path, allow_read: Sequence[Path] | None, allow_write: Sequence[Path] | None
) -> FileAccess:
    """Where a run of ``file`` may read and write: the defaults plus ``--allow-read/-write``."""
    from crucible.files import FileAccess

    return FileAccess.default(
        experiment_dir=file.parent, allow_read=allow_read or (), allow_write=allow_write or ()
    )


def imports_hint(experiment: Experiment, *, allow_imports: bool) -> list[str]:
    """The ``--allow-imports`` hint, when the experiment names code to import and may not."""
    if allow_imports or not any(sd.module and sd.enabled for sd in experiment.pipeline):
        return []
    return [
        "hint: this experiment names code to import (module: ...); "
        "pass --allow-imports if you trust it"
    ]


def preflight(
    experiment: Experiment,
    registry: Registry,
    *,
    allow_imports: bool,
    source: str,
    access: FileAccess,
) -> list[PlannedStage]:
    """Resolve and validate every stage; a bad pipeline becomes a CliError listing problems."""
    from crucible.engine import plan
    from crucible.errors import InvalidPipeline
    from crucible.files import using_access

    try:
        with using_access(access):
            return plan(experiment, registry, allow_imports=allow_imports)
    except InvalidPipeline as err:
        n = len(err.problems)
        lines = [f"{source}: {p}" for p in err.problems]
        lines.extend(imports_hint(experiment, allow_imports=allow_imports))
        raise CliError(
            f"{source}: invalid pipeline ({n} problem{'s' if n != 1 else ''}); nothing was run",
            lines=lines,
        ) from None
