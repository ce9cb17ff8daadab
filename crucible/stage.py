"""The Stage protocol, the ``@stage`` decorator, and option schemas (``describe``)."""

from __future__ import annotations

import dataclasses
import inspect
import re
import threading
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import takewhile
from pathlib import PurePath
from typing import Any, Literal, Protocol, get_args, get_origin, runtime_checkable

from pydantic import BaseModel, ValidationError
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import PydanticUndefined

from crucible.context import Context
from crucible.errors import OptionsError, format_location

SCHEMA_VERSION = "1.0"
_SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


@runtime_checkable
class Stage(Protocol):
    """A class-based stage: ``name``, ``description``, ``Options`` and ``async run(ctx, opts)``."""

    name: str
    description: str

    async def run(self, ctx: Context, opts: Any) -> Context: ...


@dataclass(frozen=True, slots=True)
class StageSpec:
    """A resolved stage: what the engine calls and how its options are validated."""

    name: str
    description: str
    call: Callable[..., Any]
    options_model: type[BaseModel] | None = None
    is_async: bool = True
    takes_options: bool = True
    version: str | None = None
    origin: str = ""

    def describe(self) -> dict[str, Any]:
        """The option schema: name, description, required, optional, types, defaults, version."""
        return describe_model(self.name, self.description, self.options_model, self.version)

    def validate_options(self, options: Mapping[str, Any] | None) -> Any:
        """Return the value passed to the stage; raises OptionsError listing every problem."""
        raw = dict(options or {})
        if self.options_model is None:
            if raw and not self.takes_options:  # the stage never sees them: a typo, or a mistake
                why = f"unknown option (stage {self.name!r} takes no options)"
                raise OptionsError([(k, why) for k in raw])
            return raw
        problems: list[tuple[str, str]] = []
        extra = self.options_model.model_config.get("extra")
        if extra != "allow":
            known = set(self.options_model.model_fields)
            known |= {f.alias for f in self.options_model.model_fields.values() if f.alias}
            problems += [(k, "unknown option") for k in raw if k not in known]
        try:
            value = self.options_model.model_validate(raw)
        except ValidationError as err:
            for e in err.errors():
                if e["type"] == "extra_forbidden":
                    continue  # already reported as unknown option
                problems.append((format_location(e["loc"], empty=""), e["msg"]))
            raise OptionsError(problems) from None
        if problems:
            raise OptionsError(problems)
        return value

    def unchecked_options(self, options: Mapping[str, Any] | None) -> Any:
        """Options without validation (validate_options="off"/"warn"): defaults still applied."""
        raw = dict(options or {})
        if self.options_model is None:
            return raw
        try:
            return self.options_model.model_validate(raw)
        except ValidationError:
            return self.options_model.model_construct(**raw)


def _options_param(fn: Callable[..., Any]) -> tuple[bool, type[BaseModel] | None]:
    params = list(inspect.signature(fn).parameters.values())
    if params and params[0].name == "self":
        params = params[1:]
    if not params:
        raise TypeError(f"stage {fn.__qualname__} must accept the Context as first parameter")
    if len(params) == 1:
        return False, None
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError):  # annotations naming local classes cannot be resolved
        hints = {}
    ann = hints.get(params[1].name)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return True, ann
    return True, None


def stage(
    name: str,
    *,
    description: str,
    version: str | None = None,
    register: bool = True,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a function stage; its options model is the second parameter's annotation.

    ``async def f(ctx, opts: MyOptions) -> Context``. Sync functions run in a worker thread.
    The stage registers itself in the default registry unless ``register=False``.
    """
    if not _SNAKE.match(name):
        raise ValueError(f"stage name {name!r} must be snake_case (^[a-z][a-z0-9_]*$)")
    if not description.strip():
        raise ValueError(f"stage {name!r} needs a non-empty description")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        takes, model = _options_param(fn)
        spec = StageSpec(
            name=name,
            description=description,
            call=fn,
            options_model=model,
            is_async=inspect.iscoroutinefunction(fn),
            takes_options=takes,
            version=version,
            origin=f"{fn.__module__}:{fn.__qualname__}",
        )
        fn.__crucible_stage__ = spec  # type: ignore[attr-defined]
        if register:
            _declare(spec)
        return fn

    return decorate


# Specs declared with register=True, oldest first, each with its declaration number. The default
# registry reads them (crucible.registry); a name declared again moves to the end.
_declared: dict[str, tuple[int, StageSpec]] = {}
_declared_count = 0
_declared_lock = threading.Lock()


def _declare(spec: StageSpec) -> None:
    global _declared_count
    with _declared_lock:
        _declared_count += 1
        _declared.pop(spec.name, None)
        _declared[spec.name] = (_declared_count, spec)


def declared_since(seen: int) -> tuple[int, list[StageSpec]]:
    """Specs ``@stage`` declared for the default registry after the first ``seen`` declarations.

    Returns the number of declarations so far and those specs in declaration order; a name
    declared twice since then appears once, as its latest spec.
    """
    if seen == _declared_count:
        return seen, []
    with _declared_lock:
        newer = takewhile(lambda entry: entry[0] > seen, reversed(_declared.values()))
        return _declared_count, [spec for _, spec in reversed(list(newer))]


def as_stage_spec(obj: Any, *, name: str | None = None) -> StageSpec:
    """Turn a decorated function, a Stage class or instance, or a StageSpec into a StageSpec."""
    if isinstance(obj, StageSpec):
        return obj if name is None or name == obj.name else dataclasses.replace(obj, name=name)
    spec = getattr(obj, "__crucible_stage__", None)
    if isinstance(spec, StageSpec):
        return spec if name is None or name == spec.name else dataclasses.replace(spec, name=name)
    if isinstance(obj, type):
        try:
            obj = obj()
        except TypeError as err:
            msg = f"stage class {obj.__qualname__} must be constructible with no arguments: {err}"
            raise TypeError(msg) from None
    run = getattr(obj, "run", None)
    if run is not None and callable(run) and not isinstance(obj, types.FunctionType):
        stage_name = name or getattr(obj, "name", None)
        if not isinstance(stage_name, str) or not stage_name:
            raise TypeError(f"stage {type(obj).__qualname__} has no 'name'")
        desc = getattr(obj, "description", "") or ""
        model = getattr(obj, "Options", None)
        if model is not None and not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"stage {stage_name!r}: Options must be a pydantic BaseModel subclass")
        takes, annotated = _options_param(run)
        return StageSpec(
            name=stage_name,
            description=desc,
            call=run,
            options_model=model or annotated,
            is_async=inspect.iscoroutinefunction(run),
            takes_options=takes,
            version=getattr(obj, "version", None),
            origin=f"{type(obj).__module__}:{type(obj).__qualname__}",
        )
    if callable(obj) and name:
        takes, model = _options_param(obj)
        return StageSpec(
            name=name,
            description=(inspect.getdoc(obj) or "").split("\n")[0],
            call=obj,
            options_model=model,
            is_async=inspect.iscoroutinefunction(obj),
            takes_options=takes,
            origin=f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', '?')}",
        )
    raise TypeError(
        f"{obj!r} is not a stage: use @crucible.stage or a class with name, description and run()"
    )


# --- schemas --------------------------------------------------------------------------------


def type_spec(annotation: Any) -> Any:
    """Map a Python annotation to a schema type spec (``"string"``, ``("list", t)``, ...)."""
    if annotation is Any or annotation is object:
        return "any"
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Literal:
        return ("enum", list(args))
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:
            return type_spec(members[0])
        return ("union", [type_spec(a) for a in members])
    if origin is typing.Annotated:
        return type_spec(args[0])
    if origin in (list, tuple, set, frozenset) or (
        origin is not None and isinstance(origin, type) and issubclass(origin, typing.Sequence)
    ):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return ("tuple", [type_spec(a) for a in args])
        return ("list", type_spec(args[0])) if args else "list"
    if origin is dict or (
        origin is not None and isinstance(origin, type) and issubclass(origin, typing.Mapping)
    ):
        return ("map", type_spec(args[0]), type_spec(args[1])) if args else "map"
    if origin is not None and origin.__name__ == "Callable":
        params = args[0] if args else ...
        return ("function", len(params) if isinstance(params, list) else 1)
    if annotation is bool:
        return "boolean"
    if annotation is int:
        return "integer"
    if annotation is float:
        return "float"
    if annotation is str or (isinstance(annotation, type) and issubclass(annotation, PurePath)):
        return "string"
    if annotation in (dict, Mapping):
        return "map"
    if annotation in (list, tuple):
        return "list"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "map"
    if callable(annotation) and getattr(annotation, "__name__", "") == "Callable":
        return ("function", 1)
    return "any"


class _LenientJsonSchema(GenerateJsonSchema):
    """JSON Schema that describes callables and other non-JSON options as unconstrained."""

    def handle_invalid_for_json_schema(self, schema: Any, error_info: str) -> JsonSchemaValue:
        return {"description": f"not representable in JSON Schema ({error_info})"}


def describe_model(
    name: str, description: str, model: type[BaseModel] | None, version: str | None = None
) -> dict[str, Any]:
    """Build a stage's schema map (what ``describe`` returns) from its pydantic options model."""
    required: list[str] = []
    optional: list[str] = []
    types_: dict[str, Any] = {}
    defaults: dict[str, Any] = {}
    if model is not None:
        for key, f in model.model_fields.items():
            types_[key] = type_spec(f.annotation)
            if f.is_required():
                required.append(key)
            else:
                optional.append(key)
                if f.default is not PydanticUndefined:
                    defaults[key] = f.default
                elif f.default_factory is not None:
                    defaults[key] = f.default_factory()  # type: ignore[call-arg]
    schema: dict[str, Any] = {
        "name": name,
        "description": description,
        "required": required,
        "optional": optional,
        "types": types_,
        "defaults": defaults,
        "__schema_version__": SCHEMA_VERSION,
    }
    if version is not None:
        schema["version"] = version
    if model is not None:
        schema["json_schema"] = model.model_json_schema(schema_generator=_LenientJsonSchema)
    return schema
