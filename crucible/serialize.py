"""Turn any value a stage can store into JSON-safe data (for reports, the store, to_dict)."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import math
import sys
import uuid
from collections.abc import Mapping, Set
from decimal import Decimal
from pathlib import PurePath
from typing import Any

from pyrsistent import pvector

from crucible.frozen import FrozenMap, StageList
from crucible.redact import REDACTED, is_secret_key
from crucible.scrub import active as active_scrubber

_MAX_DEPTH = 64
# The containers a Context is made of, found by exact type before the long chain of checks
# below (pydantic's model check alone is a Python call): a run's final record encodes them.
_MAPPINGS: frozenset[type] = frozenset({dict, FrozenMap})
_SEQUENCES: frozenset[type] = frozenset({list, tuple, StageList, type(pvector())})
_PLAIN: frozenset[type] = frozenset({str, int, bool, type(None)})  # exact types: not enums


def to_jsonable(value: Any, *, redact_secrets: bool = True, _depth: int = 0) -> Any:
    """Return a structure of dict/list/str/int/float/bool/None equal in meaning to ``value``.

    Tuples and sets become lists, datetimes ISO strings, models and dataclasses dicts, NaN and
    infinities the strings ``"NaN"``/``"Infinity"``/``"-Infinity"``, unknown objects their
    ``repr``. Values under secret-looking keys are redacted unless ``redact_secrets`` is False.
    """
    if _depth > _MAX_DEPTH:
        return "<max depth>"
    d = _depth + 1
    if value is None or isinstance(value, bool | int | str):
        if isinstance(value, enum.Enum):
            return to_jsonable(value.value, redact_secrets=redact_secrets, _depth=d)
        return value
    cls = type(value)
    if cls in _MAPPINGS:
        return _mapping(value, redact_secrets, d)
    if cls in _SEQUENCES:
        return [
            v if type(v) in _PLAIN else to_jsonable(v, redact_secrets=redact_secrets, _depth=d)
            for v in value
        ]
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value, redact_secrets=redact_secrets, _depth=d)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal | uuid.UUID | PurePath):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        hide = active_scrubber()  # base64 would hide a secret inside from the text scrubbers
        data = hide.binary(value) if hide.pattern is not None else bytes(value)
        return {"base64": base64.b64encode(data).decode("ascii")}
    pydantic = sys.modules.get("pydantic")  # not loaded: nothing can be a model (a cheap start)
    if pydantic is not None and isinstance(value, pydantic.BaseModel):
        return to_jsonable(value.model_dump(mode="python"), redact_secrets=redact_secrets, _depth=d)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        to_dict = getattr(value, "to_dict", None)
        if callable(to_dict):
            return to_jsonable(to_dict(), redact_secrets=redact_secrets, _depth=d)
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return to_jsonable(fields, redact_secrets=redact_secrets, _depth=d)
    if isinstance(value, tuple) and hasattr(value, "_asdict"):  # named tuples keep field names
        to_dict = getattr(value, "to_dict", None) or value._asdict
        return to_jsonable(to_dict(), redact_secrets=redact_secrets, _depth=d)
    if isinstance(value, Mapping):
        return _mapping(value, redact_secrets, d)
    if isinstance(value, Set):
        items = [to_jsonable(v, redact_secrets=redact_secrets, _depth=d) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if hasattr(value, "__iter__") and not isinstance(value, str):
        try:
            return [to_jsonable(v, redact_secrets=redact_secrets, _depth=d) for v in value]
        except TypeError:
            pass
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return to_jsonable(tolist(), redact_secrets=redact_secrets, _depth=d)
    if callable(value):
        name = getattr(value, "__qualname__", None) or type(value).__name__
        return f"<callable {getattr(value, '__module__', '?')}.{name}>"
    return repr(value)


def _mapping(value: Mapping[Any, Any], redact_secrets: bool, d: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if type(value) is FrozenMap:  # its ItemsView looks each value up through Python calls
        m = value._m
        items: Any = [(k, m[k]) for k in value._order]
    else:
        items = value.items()
    for k, v in items:
        key = k if isinstance(k, str) else str(to_jsonable(k, redact_secrets=False, _depth=d))
        if redact_secrets and is_secret_key(key) and v is not None:
            out[key] = REDACTED
        elif type(v) in _PLAIN:
            out[key] = v
        else:
            out[key] = to_jsonable(v, redact_secrets=redact_secrets, _depth=d)
    return out
