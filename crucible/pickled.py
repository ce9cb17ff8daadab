"""Pickling with a dispatch table of one's own: how Crucible writes to its child processes.

A child that must not (or cannot) import what a value's class lives in gets it reduced to plain
values by the table (``{type: reducer}``, on top of ``copyreg``'s).
"""

from __future__ import annotations

import copyreg
import io
import pickle
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["dispatch_table", "dumps"]

Reducer = Callable[[Any], tuple[Any, ...]]


def dispatch_table(reducers: Mapping[type, Reducer]) -> dict[type, Any]:
    """``copyreg``'s table with ``reducers`` added."""
    return {**copyreg.dispatch_table, **reducers}


def dumps(obj: Any, table: Mapping[type, Any]) -> bytes:
    """``obj`` pickled (highest protocol) with ``table`` as the pickler's dispatch table."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = table
    pickler.dump(obj)
    return buffer.getvalue()
