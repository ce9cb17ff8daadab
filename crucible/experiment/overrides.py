"""``--set STAGE.OPTION=VALUE`` overrides: a YAML value set on every pipeline entry named STAGE.

Bad overrides raise OverrideError, so any front end (the CLI, a service) can report them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from crucible.errors import OverrideError
from crucible.experiment.loading import experiment_from_mapping, load_experiment
from crucible.experiment.models import Experiment
from crucible.redact import REDACTED, is_secret_key


@dataclass(frozen=True, slots=True)
class Override:
    """One ``--set stage.option.path=value``: the stage name, the option path and the value."""

    raw: str
    stage: str
    path: tuple[str, ...]
    value: Any

    @property
    def shown(self) -> str:
        """``raw`` for messages: the value hidden when the option path names a secret."""
        return _shown(self.raw, self.path)


def _shown(raw: str, path: tuple[str, ...]) -> str:
    if any(is_secret_key(p) for p in path):
        return f"{raw.partition('=')[0]}={REDACTED}"
    return raw


def parse_override(raw: str) -> Override:
    """Parse ``stage.option=value``; the value is read as a YAML scalar or flow collection."""
    key, eq, text = raw.partition("=")
    stage, dot, option = key.strip().partition(".")
    path = tuple(p.strip() for p in option.split("."))
    if not eq or not dot or not stage or not all(path):
        raise OverrideError(
            f"--set {_shown(raw, path)!r}: expected STAGE.OPTION=VALUE, e.g. bench.alpha=0.01"
        )
    if not text.strip():
        return Override(raw, stage, path, "")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        shown = _shown(raw, path)
        value_text = REDACTED if shown != raw else repr(text)
        raise OverrideError(
            f"--set {shown!r}: cannot read {value_text} as a YAML value: {problem}"
        ) from None
    return Override(raw, stage, path, value)


def _set_path(options: Mapping[str, Any], override: Override) -> dict[str, Any]:
    """A copy of ``options`` with the override's value at its path, creating mappings on the way."""
    top: dict[str, Any] = dict(options)
    node = top
    for depth, part in enumerate(override.path[:-1]):
        child = node.get(part)
        if child is None:
            child = {}
        elif not isinstance(child, Mapping):
            where = ".".join(override.path[: depth + 1])
            raise OverrideError(f"--set {override.shown!r}: option {where!r} is not a mapping")
        child = dict(child)
        node[part] = child
        node = child
    node[override.path[-1]] = override.value
    return top


def apply_overrides(
    experiment: Experiment, overrides: Sequence[Override], *, source: str
) -> Experiment:
    """Set each override on every pipeline entry with that stage name, then re-validate."""
    if not overrides:
        return experiment
    data = experiment.model_dump(mode="python", by_alias=True, exclude_unset=True)
    pipeline: list[dict[str, Any]] = list(data.get("pipeline") or [])
    data["pipeline"] = pipeline
    for ov in overrides:
        targets = [i for i, sd in enumerate(pipeline) if sd.get("name") == ov.stage]
        if not targets:
            names = ", ".join(dict.fromkeys(str(sd.get("name")) for sd in pipeline)) or "(none)"
            raise OverrideError(
                f"--set {ov.shown!r}: the pipeline has no stage named {ov.stage!r} "
                f"(its stages: {names})"
            )
        for i in targets:
            entry = dict(pipeline[i])
            entry["options"] = _set_path(entry.get("options") or {}, ov)
            pipeline[i] = entry
    updated = experiment_from_mapping(data, source=f"{source} (after --set)")
    return updated.with_source(experiment.source)


def load_with_overrides(path: Path, sets: Sequence[str]) -> Experiment:
    """Load an experiment file and apply ``--set`` values to it."""
    overrides = [parse_override(raw) for raw in sets]
    return apply_overrides(load_experiment(path), overrides, source=path.name)
