"""Bounds on what an experiment document may hold, and the check of parsed data against them.

Experiment files and request bodies come from people we do not control; these bounds keep every
later step (validation, the store, reports) from facing unbounded depth, size or cycles.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crucible.errors import format_location

#: Path components shown in a message before it is cut short with "...", and characters of a
#: key or value quoted in one.
_SHOWN_PARTS = 8
_SHOWN_CHARS = 40


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    """How deep, how big and how long the values of one experiment document may be.

    ``max_nodes`` counts every mapping, list, key and scalar, and an alias (or a shared object)
    every time it is used, so a document cannot grow by reference what it could not hold written
    out. ``max_scalar_chars`` bounds one string (or YAML scalar).
    """

    max_depth: int = 64
    max_nodes: int = 1_000_000
    max_scalar_chars: int = 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_depth", "max_nodes", "max_scalar_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DocumentLimits.{name} must be a positive int, got {value!r}")


DEFAULT_LIMITS = DocumentLimits()


def shorten(text: str) -> str:
    """``text`` cut to a length fit for an error message."""
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def position(text: str, offset: int) -> str:
    """``line L, column C`` (both from 1) of the character at ``offset`` in ``text``."""
    line = text.count("\n", 0, offset) + 1
    return f"line {line}, column {offset - text.rfind(chr(10), 0, offset)}"


def describe_path(path: Sequence[object]) -> str:
    """``path`` as a field path, cut after a few parts so a deep path stays readable."""
    parts = [p if isinstance(p, int) else shorten(str(p)) for p in path[:_SHOWN_PARTS]]
    shown = format_location(parts, empty="")
    return shown + "..." if len(path) > _SHOWN_PARTS else shown


def located(path: Sequence[object], message: str) -> str:
    """``message`` prefixed with the field path it is about (the top level has none)."""
    where = describe_path(path)
    return f"{where}: {message}" if where else message


def _children(value: Any) -> Iterator[tuple[Any, Any]] | None:
    if isinstance(value, dict):
        return iter(value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return enumerate(value)
    if isinstance(value, Mapping):
        return iter(value.items())
    return None


def _too_long(value: Any, limit: int) -> str | None:
    if isinstance(value, str | bytes) and len(value) > limit:
        return f"a value of {len(value):,} characters; the limit is {limit:,}"
    return None


# Values that are certainly leaves: no container checks for them.
_LEAVES = (str, bytes, bool, int, float, type(None))


def structure_problem(data: Any, limits: DocumentLimits = DEFAULT_LIMITS) -> str | None:
    """What makes ``data`` exceed ``limits`` (a cycle, too deep, too many values, too long a
    string), or None. Iterative, and it stops at the first problem, so the work is bounded by
    ``max_nodes`` whatever ``data`` holds."""
    longest = limits.max_scalar_chars
    root = _children(data)
    if root is None:
        return _too_long(data, longest)
    # One frame per open container: its remaining children, whether they are keyed, its id.
    frames = [(root, isinstance(data, Mapping), id(data))]
    open_ids = {id(data)}
    path: list[Any] = []
    count = 1
    while frames:
        children, keyed, _ = frames[-1]
        for key, child in children:
            count += 2 if keyed else 1
            if count > limits.max_nodes:
                too_many = f"more than {limits.max_nodes:,} values (shared objects count each time)"
                return located([*path, key], too_many)
            too_long = (_too_long(key, longest) if keyed else None) or _too_long(child, longest)
            if too_long:
                return located([*path, key], too_long)
            grand = None if isinstance(child, _LEAVES) else _children(child)
            if grand is None:
                continue
            if id(child) in open_ids:
                return located([*path, key], "the value contains itself (a recursive structure)")
            if len(frames) >= limits.max_depth:
                return located([*path, key], f"nested deeper than {limits.max_depth} levels")
            frames.append((grand, isinstance(child, Mapping), id(child)))
            open_ids.add(id(child))
            path.append(key)
            break
        else:  # every child seen: close the container
            open_ids.discard(frames.pop()[2])
            if path:
                path.pop()
    return None
