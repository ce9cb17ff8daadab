"""YAML for untrusted experiment files: PyYAML's safe loader, refusing hostile documents early.

The checks run while the document is composed (before any Python object is built): nesting
depth, alias expansion (an alias counts as every node it stands for, so an alias bomb stops
after a handful of events), aliases to a value that contains them, over-long scalars, duplicate
keys and scalars that cannot be built (``2024-13-45``), each named by field path and line.
Events come from libyaml when PyYAML has it, otherwise from the pure-Python parser.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, CollectionStartEvent, Event, NodeEvent
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from crucible.errors import ExperimentFileError
from crucible.experiment.limits import DEFAULT_LIMITS, DocumentLimits, located, position, shorten

# Scalars built as soon as they are composed, to report a bad one by path and compare keys. Any
# other tag (``<<``, ``!!set`` on a scalar, ``!custom``) is left to SafeConstructor, which builds
# or refuses it afterwards.
_SCALAR_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}"
    for name in ("null", "bool", "int", "float", "binary", "timestamp", "str")
)

# Characters YAML 1.1 does not allow in a stream (the reader would refuse them without a line).
_NOT_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)

# What PyYAML's scalar constructors raise for a malformed value (``!!int ""``, ``2024-13-45``).
_BAD_SCALAR = (ArithmeticError, AttributeError, LookupError, TypeError, ValueError)


class _Position(Protocol):
    line: int
    column: int


class _Refused(Exception):
    """A document the guarded composer will not build; ``mark`` is where it stopped."""

    def __init__(self, message: str, mark: _Position | None) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


def _path_part(index: int | Node | None) -> str | int | None:
    """What ``compose_node``'s index adds to the field path: a key's text, a list position, or
    nothing (the root, or a key itself)."""
    if isinstance(index, ScalarNode):
        return str(index.value)
    if isinstance(index, Node):
        return "(complex key)"
    return index


def _at(mark: _Position | None) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


class _GuardedComposer(Composer, SafeConstructor, Resolver):
    """Composer and safe constructor that enforce ``DocumentLimits`` node by node; a concrete
    loader adds a parser (the source of events) and calls this ``__init__`` after its own."""

    if TYPE_CHECKING:  # provided by the parser base of each concrete loader

        def peek_event(self) -> Event: ...

    def __init__(self, limits: DocumentLimits) -> None:
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._limits = limits
        self._path: list[str | int] = []
        self._depth = 0
        self._nodes = 0
        self._open_anchors: set[str] = set()
        self._anchor_nodes: dict[str, int] = {}

    def compose_node(self, parent: Node | None, index: int | Node | None) -> Node | None:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            return self._compose_alias(event, parent, index)
        key = _path_part(index)
        if key is not None:
            self._path.append(key)
        collection = isinstance(event, CollectionStartEvent)
        if collection:
            if self._depth >= self._limits.max_depth:
                message = f"nested deeper than {self._limits.max_depth} levels"
                raise _Refused(located(self._path, message), event.start_mark)
            self._depth += 1
        anchor = event.anchor if isinstance(event, NodeEvent) else None
        if anchor is not None:
            self._open_anchors.add(anchor)
        nodes_before = self._nodes
        self._count(1, event.start_mark, alias=None)
        node = super().compose_node(parent, index)  # type: ignore[arg-type]  # stub: int only
        if isinstance(node, ScalarNode):
            self._check_scalar(node)
        elif isinstance(node, MappingNode):
            self._check_keys(node)
        if anchor is not None:
            self._open_anchors.discard(anchor)
            self._anchor_nodes[anchor] = self._nodes - nodes_before
        if collection:
            self._depth -= 1
        if key is not None:
            self._path.pop()
        return node

    def _compose_alias(
        self, event: AliasEvent, parent: Node | None, index: int | Node | None
    ) -> Node | None:
        anchor = event.anchor
        key = _path_part(index)
        if key is not None:
            self._path.append(key)
        if anchor in self._open_anchors:
            message = f"alias *{anchor} is used inside the value it names (a recursive structure)"
            raise _Refused(located(self._path, message), event.start_mark)
        node = super().compose_node(parent, index)  # type: ignore[arg-type]  # refuses undefined
        if anchor is not None:
            self._count(self._anchor_nodes[anchor], event.start_mark, alias=anchor)
        if key is not None:
            self._path.pop()
        return node

    def _count(self, nodes: int, mark: _Position | None, *, alias: str | None) -> None:
        self._nodes += nodes
        limit = self._limits.max_nodes
        if self._nodes <= limit:
            return
        if alias is None:
            message = f"the document has more than {limit:,} values"
        else:
            message = (
                f"alias *{alias} takes the document past {limit:,} values "
                "(an alias counts every value it stands for, each time it is used)"
            )
        raise _Refused(located(self._path, message), mark)

    def _check_scalar(self, node: ScalarNode) -> None:
        limit = self._limits.max_scalar_chars
        if len(node.value) > limit:
            message = f"a value of {len(node.value):,} characters; the limit is {limit:,}"
            raise _Refused(located(self._path, message), node.start_mark)
        if node.tag not in _SCALAR_TAGS:
            return
        try:
            self.construct_object(node)  # cached: the constructor reuses it for the document
        except _BAD_SCALAR as err:
            kind = node.tag.rsplit(":", 1)[-1]
            why = f" ({err})" if type(err) is ValueError else ""
            message = f"invalid {kind} {shorten(node.value)!r}{why}"
            raise _Refused(located(self._path, message), node.start_mark) from None

    def _check_keys(self, node: MappingNode) -> None:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node not in self.constructed_objects:
                continue  # a merge (<<), a collection or a tagged key: SafeConstructor's to judge
            key = self.constructed_objects[key_node]
            if key in first_line:
                message = f"duplicate key {shorten(str(key))!r} (first on line {first_line[key]})"
                raise _Refused(located(self._path, message), key_node.start_mark)
            first_line[key] = key_node.start_mark.line + 1


class PurePythonLoader(Reader, Scanner, Parser, _GuardedComposer):
    """The guarded loader on PyYAML's pure-Python parser."""

    def __init__(self, text: str, limits: DocumentLimits = DEFAULT_LIMITS) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        _GuardedComposer.__init__(self, limits)


Loader = Callable[[str, DocumentLimits], _GuardedComposer]

try:
    from yaml._yaml import CParser
except ImportError:  # PyYAML built without libyaml
    LOADERS: tuple[Loader, ...] = (PurePythonLoader,)
else:

    class LibyamlLoader(_GuardedComposer, CParser):
        """The guarded loader on libyaml's parser (about 2.5 times faster on large files)."""

        def __init__(self, text: str, limits: DocumentLimits = DEFAULT_LIMITS) -> None:
            CParser.__init__(self, text)
            _GuardedComposer.__init__(self, limits)

    LOADERS = (LibyamlLoader, PurePythonLoader)


def load_yaml(
    text: str,
    *,
    source: str,
    limits: DocumentLimits = DEFAULT_LIMITS,
    loader: Loader = LOADERS[0],
) -> Any:
    """Parse one YAML document from ``text``; every problem raises ExperimentFileError."""
    bad = _NOT_PRINTABLE.search(text)
    if bad is not None:
        where = position(text, bad.start())
        message = f"{where}: character U+{ord(bad.group()):04X} is not allowed in YAML"
        raise ExperimentFileError(source, [message])
    try:
        return loader(text, limits).get_single_data()
    except _Refused as err:
        raise ExperimentFileError(source, [f"{_at(err.mark)}{err.message}"]) from None
    except yaml.MarkedYAMLError as err:
        problem = ", ".join(part for part in (err.context, err.problem) if part) or str(err)
        message = f"{_at(err.problem_mark)}invalid YAML: {problem}"
        raise ExperimentFileError(source, [message]) from None
    except yaml.YAMLError as err:
        raise ExperimentFileError(source, [f"invalid YAML: {err}"]) from None
    except RecursionError:
        message = "nested too deeply for the YAML parser; lower max_depth"
        raise ExperimentFileError(source, [message]) from None
