"""The artifact record: what a run produced (a report file, a URL) under a name in ctx.artifacts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_KNOWN = frozenset({"location", "path", "format", "type", "metadata"})


@dataclass(frozen=True, slots=True)
class Artifact:
    """One artifact: ``name``, where it is (``location``), its ``format`` and ``type``.

    Stages may put any value in ``ctx.artifacts``; :meth:`from_value` reads the usual shapes:
    a path or URL string, a ``PathLike``, or a mapping with ``location`` (``path`` is accepted
    as an alias), ``format``, ``type`` and ``metadata``. Other keys of a mapping are kept in
    ``metadata``.
    """

    name: str
    location: str | None
    format: str | None = None
    type: str = "file"
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_value(cls, name: str, value: Any) -> Artifact:
        """The artifact a ``ctx.artifacts[name]`` value describes."""
        if isinstance(value, Artifact):
            return value
        if isinstance(value, Mapping):
            where = value.get("location", value.get("path"))
            extra = {str(k): v for k, v in value.items() if k not in _KNOWN}
            meta = value.get("metadata")
            merged = {**(dict(meta) if isinstance(meta, Mapping) else {}), **extra}
            fmt = value.get("format")
            kind = value.get("type")
            return cls(
                name=name,
                location=None if where is None else _text(where),
                format=None if fmt is None else str(fmt),
                type=str(kind) if kind else "file",
                metadata=merged,
            )
        if value is None:
            return cls(name=name, location=None)
        return cls(name=name, location=_text(value))


def _text(value: Any) -> str:
    return os.fspath(value) if isinstance(value, os.PathLike) else str(value)
