"""Stage name -> stage resolution, with lazy discovery of the ``crucible.stages`` entry points."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterable, Iterator
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal

import structlog

from crucible.errors import ImportsNotAllowed, UnknownStage
from crucible.experiment import StageDef
from crucible.stage import StageSpec, as_stage_spec, declared_since

ENTRY_POINT_GROUP = "crucible.stages"
_log = structlog.get_logger("crucible.registry")

SourceKind = Literal["entry point", "@stage", "registered"]


@dataclass(frozen=True, slots=True)
class StageSource:
    """Where a registered stage came from: an entry point, an ``@stage`` declaration, or an
    explicit ``Registry.register``; ``where`` is ``module:attribute``."""

    kind: SourceKind
    where: str
    entry_point: EntryPoint | None = field(default=None, compare=False, repr=False)

    @property
    def module(self) -> str:
        return self.where.partition(":")[0]

    @property
    def distribution(self) -> str | None:
        """``name version`` of the package declaring the entry point (read on demand)."""
        dist = self.entry_point.dist if self.entry_point is not None else None
        if dist is None:
            return None
        meta = dist.metadata
        return f"{meta['Name']} {meta['Version']}"

    def label(self) -> str:
        """Short, for messages: ``entry point stages.report`` or ``my_pkg.stages``."""
        return f"entry point {self.module}" if self.kind == "entry point" else self.module

    def describe(self) -> str:
        """Full, for listings: the kind, the package (entry points) and ``module:attribute``."""
        if self.kind == "entry point":
            dist = self.distribution
            return f"entry point {self.where}" + (f", {dist}" if dist else "")
        return f"{self.kind} {self.where}"


def _warn_shadow(name: str, winner: StageSource, loser: StageSource) -> None:
    """Say that ``winner`` now provides ``name`` instead of (or before) ``loser``."""
    _log.warning(
        f"stage {name!r} from {winner.label()} shadows {name!r} from {loser.label()}",
        stage=name,
        source=winner.describe(),
        shadowed=loser.describe(),
    )


class Registry:
    """Maps stage names to stages. Explicit registries hold only what you register.

    ``Registry(discover=True)`` (the default registry does this) also loads every stage that an
    installed package declares in the ``crucible.stages`` entry-point group, once, on first use.
    """

    def __init__(self, stages: Iterable[Any] = (), *, discover: bool = False) -> None:
        self._stages: dict[str, StageSpec] = {}
        self._sources: dict[str, StageSource] = {}
        self._version = 0
        self._discover = discover
        self._discovered = False
        self._lock = threading.Lock()
        self.discovery_errors: list[str] = []
        for s in stages:
            self.register(s)

    @property
    def version(self) -> int:
        """Bumped on every change, so cached pipeline plans can be reused safely."""
        self._take_declared()
        return self._version

    def register(self, obj: Any, *, name: str | None = None, replace: bool = False) -> StageSpec:
        """Register a stage (decorated function, Stage class/instance or StageSpec).

        Replacing a stage of another origin (``replace=True``) logs a warning naming both.
        """
        self._take_declared()
        spec = as_stage_spec(obj, name=name)
        existing = self._stages.get(spec.name)
        if existing is not None and not replace and existing.origin != spec.origin:
            raise ValueError(
                f"stage {spec.name!r} is already registered by {existing.origin}; "
                "pass replace=True to override"
            )
        self._put(spec, StageSource("registered", spec.origin))
        return spec

    def _put(self, spec: StageSpec, source: StageSource) -> None:
        """Store ``spec`` as provided by ``source``, warning when it shadows another origin."""
        old = self._stages.get(spec.name)
        if old is not None and old.origin != spec.origin:
            _warn_shadow(spec.name, source, self._sources[spec.name])
        self._stages[spec.name] = spec
        self._sources[spec.name] = source
        self._version += 1

    def source(self, name: str) -> StageSource:
        """Where the stage registered as ``name`` came from; raises UnknownStage."""
        self.get(name)
        return self._sources[name]

    def _take_declared(self) -> None:
        """Add the stages declared elsewhere since the last call; an explicit registry has none."""

    def _ensure_discovered(self) -> None:
        self._take_declared()
        if not self._discover or self._discovered:
            return
        with self._lock:
            if self._discovered:
                return
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                if ep.name in self._stages:  # registered or declared stages win over plugins
                    if self._stages[ep.name].origin != ep.value:
                        _warn_shadow(ep.name, self._sources[ep.name], _entry_source(ep))
                    continue
                try:
                    spec = as_stage_spec(ep.load(), name=ep.name)
                    self._stages[ep.name] = spec
                    self._sources[ep.name] = _entry_source(ep)
                    self._version += 1
                except Exception as err:  # a broken plugin must not break every other stage
                    msg = f"entry point {ep.name} = {ep.value}: {type(err).__name__}: {err}"
                    self.discovery_errors.append(msg)
                    _log.warning("stage plugin failed to load", entry_point=ep.value, error=msg)
            self._discovered = True

    def get(self, name: str) -> StageSpec:
        """The stage registered as ``name``; raises UnknownStage listing what is available."""
        self._ensure_discovered()
        try:
            return self._stages[name]
        except KeyError:
            known = ", ".join(sorted(self._stages)) or "(none)"
            raise UnknownStage(f"unknown stage {name!r}; registered stages: {known}") from None

    def resolve(self, stage_def: StageDef, *, allow_imports: bool = False) -> StageSpec:
        """Resolve a StageDef: its ``module`` import path (only if allowed) or its ``name``."""
        if stage_def.module is None:
            return self.get(stage_def.name)
        if not allow_imports:
            raise ImportsNotAllowed(
                f"stage {stage_def.name!r} names module {stage_def.module!r}; importing code "
                "named in an experiment requires allow_imports=True"
            )
        return as_stage_spec(load_import_path(stage_def.module), name=stage_def.name)

    def names(self) -> list[str]:
        self._ensure_discovered()
        return sorted(self._stages)

    def specs(self) -> list[StageSpec]:
        return [self._stages[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        self._ensure_discovered()
        return name in self._stages

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


class _DefaultRegistry(Registry):
    """Entry-point stages plus every ``@stage`` declared with ``register=True``, whenever.

    Declarations are taken in order before every lookup or registration, so a stage decorated
    after this registry exists is found, and a name decorated again is replaced.
    """

    def __init__(self) -> None:
        self._declarations_seen = 0
        self._declared_lock = threading.RLock()
        super().__init__(discover=True)

    def _take_declared(self) -> None:
        with self._declared_lock:
            self._declarations_seen, specs = declared_since(self._declarations_seen)
            for spec in specs:
                self._put(spec, StageSource("@stage", spec.origin))


def _entry_source(ep: EntryPoint) -> StageSource:
    return StageSource("entry point", ep.value, ep)


_imports_allowed: ContextVar[bool] = ContextVar("crucible_imports_allowed", default=False)


def imports_allowed() -> bool:
    """True inside a run started with ``allow_imports=True`` (stages may then import paths)."""
    return _imports_allowed.get()


class imports_allowed_scope:
    """Make ``imports_allowed()`` answer ``allowed`` inside the block (a run's whole execution).

    It is a contextvar, so concurrent runs each see their own value, and tasks started inside
    the block inherit it. A small class rather than a generator: every run enters one.
    """

    __slots__ = ("_allowed", "_token")

    def __init__(self, allowed: bool) -> None:
        self._allowed = allowed
        self._token: Token[bool] | None = None

    def __enter__(self) -> None:
        self._token = _imports_allowed.set(self._allowed)

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None
        _imports_allowed.reset(self._token)


def load_option_callable(value: Any, *, what: str) -> Any:
    """A callable given directly, or an import path string when the run allows imports."""
    if value is None or callable(value):
        return value
    if isinstance(value, str):
        if not imports_allowed():
            raise ImportsNotAllowed(
                f"{what} {value!r} is an import path; importing code named in an experiment "
                "requires allow_imports=True (or pass the callable itself from Python)"
            )
        return load_import_path(value)
    raise TypeError(
        f"{what} must be a callable or an import path string, got {type(value).__name__}"
    )


def load_import_path(path: str) -> Any:
    """Import ``package.module:attribute`` (or ``package.module.attribute``)."""
    mod_name, sep, attr = path.partition(":")
    if not sep:
        mod_name, _, attr = path.rpartition(".")
    if not mod_name or not attr:
        raise UnknownStage(f"module {path!r} must look like 'package.module:attribute'")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as err:
        raise UnknownStage(f"module {path!r} cannot be loaded: {err}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UnknownStage(f"module {path!r} cannot be loaded: no attribute {part!r}") from None
    return obj


_DEFAULT: Registry | None = None
_DEFAULT_LOCK = threading.Lock()


def default_registry() -> Registry:
    """The process-wide registry: ``@stage`` functions plus installed entry-point stages."""
    global _DEFAULT
    if _DEFAULT is None:
        with _DEFAULT_LOCK:
            if _DEFAULT is None:
                _DEFAULT = _DefaultRegistry()
    return _DEFAULT
