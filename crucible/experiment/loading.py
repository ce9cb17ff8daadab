"""Loading experiments from YAML (safe loader), JSON or TOML files, or from parsed mappings.

Files may come from anyone, so loading is bounded: the size is checked before the file is read,
the text must be UTF-8 without NUL characters, and each format's parser refuses hostile
structure (see ``yaml_safe`` and ``json_toml``); parsed data is checked against the same
``DocumentLimits`` as a request body would be.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from crucible.errors import ExperimentFileError, format_location
from crucible.experiment.json_toml import load_json, load_toml
from crucible.experiment.limits import (
    DEFAULT_LIMITS,
    DocumentLimits,
    position,
    structure_problem,
)
from crucible.experiment.models import Experiment
from crucible.experiment.yaml_safe import load_yaml

MAX_BYTES_ENV = "CRUCIBLE_MAX_EXPERIMENT_BYTES"
DEFAULT_MAX_BYTES = 10 * 1024 * 1024

_PARSERS = {".yaml": load_yaml, ".yml": load_yaml, ".json": load_json, ".toml": load_toml}


def validation_messages(err: ValidationError) -> list[str]:
    """One ``path: message`` line per pydantic error."""
    return [f"{format_location(e['loc'])}: {e['msg']}" for e in err.errors()]


def experiment_from_mapping(
    data: Any, *, source: str = "<experiment>", limits: DocumentLimits | None = None
) -> Experiment:
    """Build an Experiment from already-parsed data, raising ExperimentFileError on problems,
    including data deeper, larger or more recursive than ``limits`` allow."""
    if data is None:
        raise ExperimentFileError(source, ["(top level): the document is empty"])
    if not isinstance(data, Mapping):
        got = type(data).__name__
        raise ExperimentFileError(source, [f"(top level): expected a mapping, got {got}"])
    problem = structure_problem(data, limits or DEFAULT_LIMITS)
    if problem is not None:
        raise ExperimentFileError(source, [problem])
    try:
        return Experiment.model_validate(dict(data))
    except ValidationError as err:
        raise ExperimentFileError(source, validation_messages(err)) from None


def max_file_bytes(max_bytes: int | None = None, *, source: str = "<experiment>") -> int:
    """The size limit for experiment files: ``max_bytes``, else ``CRUCIBLE_MAX_EXPERIMENT_BYTES``,
    else 10 MiB."""
    if max_bytes is not None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        return max_bytes
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    if not raw.isdigit() or int(raw) < 1:
        message = f"{MAX_BYTES_ENV}={raw!r} is not a positive whole number of bytes"
        raise ExperimentFileError(source, [message])
    return int(raw)


def _read(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, refusing anything but a regular file of at most ``max_bytes``."""
    name = path.name
    too_big = f"larger than the limit of {max_bytes:,} bytes (max_bytes=, {MAX_BYTES_ENV})"
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ExperimentFileError(name, ["is a directory, not an experiment file"])
        if not stat.S_ISREG(info.st_mode):
            raise ExperimentFileError(name, ["not a regular file"])
        if info.st_size > max_bytes:
            raise ExperimentFileError(name, [f"the file has {info.st_size:,} bytes; {too_big}"])
        with path.open("rb") as f:
            data = f.read(info.st_size + 1)  # one more: a file that grew is seen growing
    except FileNotFoundError:
        raise ExperimentFileError(name, ["file not found"]) from None
    except (OSError, ValueError) as err:  # ValueError: a NUL character in the path
        raise ExperimentFileError(name, [f"cannot read file: {err}"]) from None
    if len(data) > max_bytes:
        raise ExperimentFileError(name, [f"the file grew while being read; {too_big}"])
    return data


def _decode(name: str, data: bytes) -> str:
    """The file's text: UTF-8, without NUL characters, not blank."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        before = data[: err.start].decode("utf-8")
        where = position(before, len(before))
        message = f"{where}: not UTF-8 text (byte 0x{data[err.start]:02x})"
        raise ExperimentFileError(name, [message]) from None
    nul = text.find("\0")
    if nul >= 0:
        message = f"{position(text, nul)}: a NUL character (is this a binary file?)"
        raise ExperimentFileError(name, [message])
    if not text.strip():
        raise ExperimentFileError(name, ["the file is empty"])
    return text


def load_experiment(
    path: str | Path, *, max_bytes: int | None = None, limits: DocumentLimits | None = None
) -> Experiment:
    """Read an experiment from a YAML (safe loader), JSON or TOML file.

    Every problem raises ExperimentFileError naming the file and the field path, e.g.
    ``quickstart.yaml: pipeline[2].timeout: Input should be a valid number``. Files over
    ``max_bytes`` (default ``CRUCIBLE_MAX_EXPERIMENT_BYTES``, else 10 MiB) are refused unread;
    ``limits`` bounds nesting depth, values and string length.
    """
    p = Path(path)
    limit = max_file_bytes(max_bytes, source=p.name)
    data = _read(p, limit)
    suffix = p.suffix.lower()
    parse = _PARSERS.get(suffix)
    if parse is None:
        raise ExperimentFileError(
            p.name,
            [f"unsupported file type {suffix or '(none)'!r}; use .yaml, .yml, .json or .toml"],
        )
    bounds = limits or DEFAULT_LIMITS
    parsed = parse(_decode(p.name, data), source=p.name, limits=bounds)
    return experiment_from_mapping(parsed, source=p.name, limits=bounds).with_source(p)
