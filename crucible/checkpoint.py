"""A faithful JSON codec for what a Context holds, so a run can resume from a stored stage.

JSON-native values (``None``, ``bool``, ``int``, finite ``float``, ``str``, lists and
str-keyed dicts) are stored as they are. Common other values get a tagged form,
``{"$crucible": kind, ...}``, that restores them: tuples, sets, frozensets, dicts with other
keys, non-finite floats, datetimes and their kin, ``Decimal``, ``UUID``, bytes, paths, and
Crucible's own persistent collections; float subclasses and other integral numbers (numpy's
``float64``, ``int64``) restore as ``float`` and ``int`` of the same value. Anything else (enums,
models, arrays, ...), and every value under a secret-looking key (secrets never reach the
store), is stored as a marker naming its type that restores to nothing: decoding reports each
one by key path, e.g. ``assigns.model: <numpy.ndarray>``.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import math
import numbers
import pathlib
import uuid
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from pydantic import SecretBytes, SecretStr
from pyrsistent import pvector

from crucible.context import Context
from crucible.errors import Unrestorable
from crucible.frozen import FrozenMap, StageList
from crucible.redact import is_secret_key

__all__ = [
    "TAG",
    "ContextState",
    "decode",
    "decode_context",
    "decode_fields",
    "encode",
    "encode_context",
    "encode_fields",
]

TAG: Final = "$crucible"
_MAX_DEPTH: Final = 64
_NATIVE: Final = (str, int, bool)
_PATHS: Final[dict[str, type[pathlib.PurePath]]] = {
    cls.__name__: cls
    for cls in (
        pathlib.Path, pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePath,
        pathlib.PurePosixPath, pathlib.PureWindowsPath,
    )
}  # fmt: skip
_FLOATS: Final = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _type_name(value: Any) -> str:
    cls = type(value)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def _tagged(kind: str, **fields: Any) -> dict[str, Any]:
    return {TAG: kind, **fields}


def _items(kind: str, values: Any, depth: int) -> dict[str, Any]:
    return _tagged(kind, items=[encode(v, _depth=depth) for v in values])


def _pairs(kind: str, mapping: Mapping[Any, Any], depth: int) -> dict[str, Any]:
    return _tagged(kind, items=[[encode(k, _depth=depth), _value(k, v, depth)]
                                for k, v in mapping.items()])  # fmt: skip


def _value(key: Any, value: Any, depth: int) -> Any:
    """The encoded value under ``key``: a secret-looking key keeps only a marker."""
    if isinstance(key, str) and value is not None and is_secret_key(key):
        return _tagged("redacted", type=_type_name(value))
    return encode(value, _depth=depth)


def encode(value: Any, *, _depth: int = 0) -> Any:
    """``value`` as JSON-native data that :func:`decode` turns back into an equal value."""
    if value is None or type(value) in _NATIVE:
        return value
    d = _depth + 1
    if d > _MAX_DEPTH:
        return _tagged("unrestorable", type=f"{_type_name(value)} nested too deep")
    if isinstance(value, enum.Enum):
        return _tagged("unrestorable", type=_type_name(value))
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        return _tagged("float", value="nan" if math.isnan(value) else str(float(value)))
    if isinstance(value, numbers.Integral):
        return int(value)
    if type(value) is dict and all(type(k) is str for k in value) and TAG not in value:
        return {k: _value(k, v, d) for k, v in value.items()}
    if type(value) is list:
        return [encode(v, _depth=d) for v in value]
    encoder = _ENCODERS.get(type(value))
    if encoder is not None:
        return encoder(value, d)
    if isinstance(value, pathlib.PurePath) and type(value).__name__ in _PATHS:
        return _tagged("path", cls=type(value).__name__, value=str(value))
    if isinstance(value, SecretStr | SecretBytes):
        return _tagged("redacted", type=_type_name(value))
    return _tagged("unrestorable", type=_type_name(value))


def _datetime(value: dt.datetime, depth: int) -> dict[str, Any]:
    zone = value.tzinfo
    if isinstance(zone, zoneinfo.ZoneInfo):
        return _tagged("datetime", value=value.isoformat(), zone=zone.key)
    return _tagged("datetime", value=value.isoformat())


_ENCODERS: Final[dict[type, Callable[[Any, int], Any]]] = {
    dict: lambda v, d: _pairs("dict", v, d),
    tuple: lambda v, d: _items("tuple", v, d),
    set: lambda v, d: _items("set", v, d),
    frozenset: lambda v, d: _items("frozenset", v, d),
    FrozenMap: lambda v, d: _pairs("frozenmap", v, d),
    StageList: lambda v, d: _items("stages", v, d),
    type(pvector()): lambda v, d: _items("pvector", v, d),
    dt.datetime: _datetime,
    dt.date: lambda v, d: _tagged("date", value=v.isoformat()),
    dt.time: lambda v, d: _tagged("time", value=v.isoformat()),
    dt.timedelta: lambda v, d: _tagged("timedelta", value=[v.days, v.seconds, v.microseconds]),
    Decimal: lambda v, d: _tagged("decimal", value=str(v)),
    uuid.UUID: lambda v, d: _tagged("uuid", value=str(v)),
    bytes: lambda v, d: _tagged("bytes", value=base64.b64encode(v).decode("ascii")),
    bytearray: lambda v, d: _tagged("bytearray", value=base64.b64encode(v).decode("ascii")),
    complex: lambda v, d: _tagged("complex", value=[encode(v.real), encode(v.imag)]),
}


# --- decoding --------------------------------------------------------------------------------

Problems = list[tuple[str, str]]


def _child(path: str, key: Any) -> str:
    if isinstance(key, str) and key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


def _restore_items(data: Mapping[str, Any], path: str, problems: Problems) -> list[Any]:
    return [_decode(v, f"{path}[{i}]", problems) for i, v in enumerate(data.get("items") or [])]


def _restore_pairs(data: Mapping[str, Any], path: str, problems: Problems) -> list[tuple[Any, Any]]:
    pairs = []
    for k, v in data.get("items") or []:
        key = _decode(k, path, problems)
        pairs.append((key, _decode(v, _child(path, key), problems)))
    return pairs


def _datetime_from(data: Mapping[str, Any]) -> dt.datetime:
    when = dt.datetime.fromisoformat(data["value"])
    zone = data.get("zone")
    return when if zone is None else when.astimezone(zoneinfo.ZoneInfo(zone))


_DECODERS: Final[dict[str, Callable[[Mapping[str, Any], str, Problems], Any]]] = {
    "dict": lambda x, p, pr: dict(_restore_pairs(x, p, pr)),
    "frozenmap": lambda x, p, pr: FrozenMap(_restore_pairs(x, p, pr)),
    "tuple": lambda x, p, pr: tuple(_restore_items(x, p, pr)),
    "set": lambda x, p, pr: set(_restore_items(x, p, pr)),
    "frozenset": lambda x, p, pr: frozenset(_restore_items(x, p, pr)),
    "stages": lambda x, p, pr: StageList(_restore_items(x, p, pr)),
    "pvector": lambda x, p, pr: pvector(_restore_items(x, p, pr)),
    "float": lambda x, p, pr: _FLOATS[x["value"]],
    "datetime": lambda x, p, pr: _datetime_from(x),
    "date": lambda x, p, pr: dt.date.fromisoformat(x["value"]),
    "time": lambda x, p, pr: dt.time.fromisoformat(x["value"]),
    "timedelta": lambda x, p, pr: dt.timedelta(*x["value"]),
    "decimal": lambda x, p, pr: Decimal(x["value"]),
    "uuid": lambda x, p, pr: uuid.UUID(x["value"]),
    "bytes": lambda x, p, pr: base64.b64decode(x["value"]),
    "bytearray": lambda x, p, pr: bytearray(base64.b64decode(x["value"])),
    "complex": lambda x, p, pr: complex(*(_decode(v, p, pr) for v in x["value"])),
    "path": lambda x, p, pr: _PATHS[x["cls"]](x["value"]),
}


def decode(data: Any, path: str = "") -> Any:
    """The value :func:`encode` stored; raises :class:`Unrestorable` naming what cannot be."""
    problems: Problems = []
    value = _decode(data, path, problems)
    if problems:
        raise Unrestorable(problems)
    return value


def _decode(data: Any, path: str, problems: Problems) -> Any:
    if data is None or type(data) in _NATIVE or type(data) is float:
        return data
    if isinstance(data, list):
        return [_decode(v, f"{path}[{i}]", problems) for i, v in enumerate(data)]
    if not isinstance(data, Mapping):
        raise TypeError(f"{path}: not an encoded value: {type(data).__name__}")
    kind = data.get(TAG)
    if kind is None:
        return {k: _decode(v, _child(path, k), problems) for k, v in data.items()}
    decoder = _DECODERS.get(kind)
    if decoder is not None:
        return decoder(data, path, problems)
    what = f"<{data.get('type', 'unknown')}>"
    if kind == "redacted":
        what += " (redacted as a secret)"
    problems.append((path, what))
    return None


# --- a Context's state -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContextState:
    """What a checkpoint restores of a Context: metrics, outputs, artifacts and assigns."""

    metrics: Mapping[str, Any]
    outputs: list[Any]
    artifacts: Mapping[str, Any]
    assigns: Mapping[str, Any]


def encode_fields(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A str-keyed mapping (a Context's metrics, artifacts or assigns) key by key."""
    return {k: _value(k, v, 0) for k, v in mapping.items()}


def _decode_fields(
    data: Mapping[str, Any], path: str, problems: Problems, skip: Mapping[str, Any]
) -> dict[str, Any]:
    return {k: _decode(v, _child(path, k), problems) for k, v in data.items() if k not in skip}


def decode_fields(
    data: Mapping[str, Any],
    path: str = "assigns",
    *,
    supplied: Mapping[str, Any] | None = None,
    hint: str = "",
) -> dict[str, Any]:
    """What :func:`encode_fields` stored, with ``supplied`` values put over it.

    Raises :class:`Unrestorable` naming every key path (``path.key...``) that cannot be
    restored and was not supplied.
    """
    given = dict(supplied or {})
    problems: Problems = []
    values = _decode_fields(data, path, problems, given)
    if problems:
        raise Unrestorable(problems, hint=hint)
    return {**values, **given}


def encode_context(ctx: Context) -> dict[str, Any]:
    """The encoded state of ``ctx`` (its trace and telemetry belong to the run, not the state)."""
    return {
        "metrics": encode_fields(ctx.metrics),
        "outputs": [encode(v, _depth=1) for v in ctx.outputs],
        "artifacts": encode_fields(ctx.artifacts),
        "assigns": encode_fields(ctx.assigns),
    }


def decode_context(
    data: Mapping[str, Any], *, supplied: Mapping[str, Any] | None = None, hint: str = ""
) -> ContextState:
    """The state :func:`encode_context` stored, with ``supplied`` assigns put over it.

    Raises :class:`Unrestorable` naming every key path that cannot be restored and was not
    supplied (``assigns.model: <numpy.ndarray> cannot be restored``).
    """
    problems: Problems = []
    given = dict(supplied or {})
    state = ContextState(
        metrics=_decode_fields(data.get("metrics") or {}, "metrics", problems, {}),
        outputs=_decode(data.get("outputs") or [], "outputs", problems),
        artifacts=_decode_fields(data.get("artifacts") or {}, "artifacts", problems, {}),
        assigns={**_decode_fields(data.get("assigns") or {}, "assigns", problems, given), **given},
    )
    if problems:
        raise Unrestorable(problems, hint=hint)
    return state
