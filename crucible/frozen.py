"""Persistent read-only collections behind Context, and the cheap way to fill frozen slots."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, overload

import immutables
from pyrsistent import PVector, pvector

K = TypeVar("K")
V = TypeVar("V")


class FrozenMap(Mapping[K, V]):
    """A read-only mapping whose ``set``/``update`` return new maps in O(log n) (a HAMT).

    Iterates in insertion order, like a dict (a persistent vector keeps the key order), and
    compares equal to any Mapping with the same items, so ``ctx.metrics == {"a": 1}`` holds.
    """

    __slots__ = ("_m", "_order")
    _m: immutables.Map[K, V]
    _order: PVector[K]

    def __init__(self, data: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        if type(data) is dict:  # fast path: a dict has unique keys in insertion order
            self._m = immutables.Map(data)
            self._order = pvector(data)
            return
        pairs = data.items() if isinstance(data, Mapping) else data
        mm: Any = immutables.Map().mutate()
        order: list[K] = []
        for k, v in pairs:
            if k not in mm:
                order.append(k)
            mm[k] = v
        self._m = mm.finish()
        self._order = pvector(order)

    @classmethod
    def _wrap(cls, m: immutables.Map[K, V], order: PVector[K]) -> FrozenMap[K, V]:
        new = cls.__new__(cls)
        new._m = m
        new._order = order
        return new

    def __getitem__(self, key: K) -> V:
        return self._m[key]

    def get(self, key: K, default: Any = None) -> Any:
        """The value for ``key``, else ``default`` (without Mapping's raise-and-catch)."""
        return self._m.get(key, default)

    def __iter__(self) -> Iterator[K]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._m)

    def __contains__(self, key: object) -> bool:
        return key in self._m

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._m == other._m
        if isinstance(other, Mapping):
            return len(self) == len(other) and dict(self._m.items()) == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"FrozenMap({dict(self.items())!r})"

    def set(self, key: K, value: V) -> FrozenMap[K, V]:
        """A new map with ``key`` set to ``value`` (a new key goes last)."""
        order = self._order if key in self._m else self._order.append(key)
        return FrozenMap._wrap(self._m.set(key, value), order)

    def update(self, items: Mapping[K, V] | Iterable[tuple[K, V]]) -> FrozenMap[K, V]:
        """A new map with every (key, value) pair set, later pairs winning."""
        pairs = items.items() if isinstance(items, Mapping) else items
        mm = self._m.mutate()
        added: list[K] = []
        for k, v in pairs:
            if k not in mm:
                added.append(k)
            mm[k] = v
        order = self._order.extend(added) if added else self._order
        return FrozenMap._wrap(mm.finish(), order)


class StageList(Iterable[str]):
    """Immutable, ordered, duplicate-free list of completed stage names with O(1) membership."""

    __slots__ = ("_members", "_order")

    def __init__(self, names: Iterable[str] = ()) -> None:
        order: list[str] = []
        seen: dict[str, bool] = {}
        for n in names:
            if not isinstance(n, str):
                raise TypeError(f"stage name key must be str, got {type(n).__name__}: {n!r}")
            if n not in seen:
                seen[n] = True
                order.append(n)
        self._order: PVector[str] = pvector(order)
        self._members: immutables.Map[str, bool] = immutables.Map(seen)

    def add(self, name: str) -> StageList:
        """A list with ``name`` appended, or this same list when it is already there."""
        if name in self._members:
            return self
        new = StageList.__new__(StageList)
        new._order = self._order.append(name)
        new._members = self._members.set(name, True)
        return new

    def __contains__(self, name: object) -> bool:
        return name in self._members

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return list(self._order[i])
        return self._order[i]

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StageList):
            return self._order == other._order
        if isinstance(other, list | tuple):
            return list(self._order) == list(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self._order))

    def __repr__(self) -> str:
        return f"StageList({list(self._order)!r})"


SlotSetter = Callable[[Any, Any], None]


def slot_setters(cls: type, names: Sequence[str]) -> tuple[SlotSetter, ...]:
    """The ``__set__`` of each named slot of a frozen, slotted dataclass.

    Filling a fresh ``object.__new__(cls)`` through these costs half of ``object.__setattr__``;
    Context and Trace build their copies this way and nothing else sets their slots.
    """
    return tuple(cls.__dict__[name].__set__ for name in names)
