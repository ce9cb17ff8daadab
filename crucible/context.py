"""The immutable run Context and its pure helpers.

Every helper returns a new Context and changes nothing else. Mappings are persistent
(structural sharing), so a helper costs the same whether the run has 10 or 100,000 entries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

from pyrsistent import PVector, pvector

from crucible.frozen import FrozenMap, StageList, slot_setters
from crucible.serialize import to_jsonable
from crucible.trace import SpanEvent, Trace

if TYPE_CHECKING:
    from crucible.experiment.models import Experiment

COMPLETED_STAGES = "completed_stages"
FIELDS = (
    "experiment_id", "run_id", "experiment", "outputs", "metrics", "artifacts", "trace",
    "telemetry_context", "assigns",
)  # fmt: skip
_MISSING: Any = object()
_EMPTY: FrozenMap[str, Any] = FrozenMap()
_NO_STAGES = StageList()
_FROZEN_TYPES: dict[str, Any] = {
    "experiment_id": object,
    "run_id": object,
    "experiment": object,
    "trace": object,
    "outputs": PVector,
    "metrics": FrozenMap,
    "artifacts": FrozenMap,
    "telemetry_context": FrozenMap,
    "assigns": FrozenMap,
}


def _empty() -> FrozenMap[str, Any]:
    return _EMPTY


def _check_key(key: object, what: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"{what} key must be str, got {type(key).__name__}: {key!r}")
    return key


def _freeze_map(value: Mapping[Any, Any] | None, what: str) -> FrozenMap[str, Any]:
    if isinstance(value, FrozenMap):
        return value
    if value is None:
        return _EMPTY
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a mapping, got {type(value).__name__}")
    for k in value:
        _check_key(k, what)
    return FrozenMap(value)


@dataclass(frozen=True, slots=True)
class Context:
    """State threaded through a run's stages. Frozen: helpers return new Contexts."""

    experiment_id: str
    run_id: str
    experiment: Experiment
    outputs: Sequence[Any] = field(default_factory=pvector)
    metrics: Mapping[str, Any] = field(default_factory=_empty)
    artifacts: Mapping[str, Any] = field(default_factory=_empty)
    trace: Trace | None = None
    telemetry_context: Mapping[str, str] = field(default_factory=_empty)
    assigns: Mapping[str, Any] = field(default_factory=_empty)

    def __post_init__(self) -> None:
        # Conversion only happens for plain values a caller passed; helpers pass frozen ones.
        if not isinstance(self.outputs, PVector):
            if isinstance(self.outputs, str | bytes) or not isinstance(self.outputs, Iterable):
                raise TypeError(f"outputs must be a list, got {type(self.outputs).__name__}")
            _S_OUTPUTS(self, pvector(self.outputs))
        if not isinstance(self.metrics, FrozenMap):
            _S_METRICS(self, _freeze_map(self.metrics, "metrics"))
        if not isinstance(self.artifacts, FrozenMap):
            _S_ARTIFACTS(self, _freeze_map(self.artifacts, "artifacts"))
        if not isinstance(self.telemetry_context, FrozenMap):
            _S_TELEMETRY(self, _freeze_map(self.telemetry_context, "telemetry_context"))
        if not isinstance(self.assigns, FrozenMap):
            assigns = _freeze_map(self.assigns, "assigns")
            seed = assigns.get(COMPLETED_STAGES)
            if seed is not None and not isinstance(seed, StageList):
                assigns = assigns.set(COMPLETED_STAGES, StageList(seed))
            _S_ASSIGNS(self, assigns)

    def evolve(self, **changes: Any) -> Context:
        """A copy with some fields replaced (like ``dataclasses.replace``); plain values frozen."""
        new = self._evolve(**changes)
        if any(not isinstance(v, _FROZEN_TYPES[k]) for k, v in changes.items()):
            new.__post_init__()  # a plain dict/list was passed: freeze and check it
        return new

    def _evolve(self, **changes: Any) -> Context:
        # Fast path for values that are already frozen (helpers and the engine).
        get = changes.get
        new = _new(Context)
        _S_EXPERIMENT_ID(new, get("experiment_id", self.experiment_id))
        _S_RUN_ID(new, get("run_id", self.run_id))
        _S_EXPERIMENT(new, get("experiment", self.experiment))
        _S_OUTPUTS(new, get("outputs", self.outputs))
        _S_METRICS(new, get("metrics", self.metrics))
        _S_ARTIFACTS(new, get("artifacts", self.artifacts))
        _S_TRACE(new, get("trace", self.trace))
        _S_TELEMETRY(new, get("telemetry_context", self.telemetry_context))
        _S_ASSIGNS(new, get("assigns", self.assigns))
        return new

    # --- metrics ---------------------------------------------------------------------------
    def put_metric(self, key: str, value: Any) -> Context:
        """Insert or overwrite one metric."""
        _check_key(key, "metric")
        return self._evolve(metrics=self._pm(self.metrics).set(key, value))

    def get_metric(self, key: str, default: Any = None) -> Any:
        """The metric's value; ``default`` only when absent (a stored None is returned)."""
        _check_key(key, "metric")
        return self.metrics.get(key, default)

    def update_metric(self, key: str, fn: Callable[[Any], Any], default: Any = None) -> Context:
        """Set a metric to ``fn(old)``; an absent key gets ``default`` and fn is not called."""
        _check_key(key, "metric")
        old = self.metrics.get(key, _MISSING)
        new = default if old is _MISSING else fn(old)
        return self._evolve(metrics=self._pm(self.metrics).set(key, new))

    def merge_metrics(self, metrics: Mapping[str, Any]) -> Context:
        """Shallow-merge a mapping of metrics; incoming keys win."""
        if not isinstance(metrics, Mapping):
            raise TypeError(f"merge_metrics expects a mapping, got {type(metrics).__name__}")
        items = [(_check_key(k, "metric"), v) for k, v in metrics.items()]
        return self._evolve(metrics=self._pm(self.metrics).update(items))

    def has_metric(self, key: str) -> bool:
        """True when the metric is present (even if its value is None)."""
        _check_key(key, "metric")
        return key in self.metrics

    # --- outputs ---------------------------------------------------------------------------
    def add_output(self, output: Any) -> Context:
        """Append one output at the end."""
        return self._evolve(outputs=self._pv(self.outputs).append(output))

    def add_outputs(self, outputs: Iterable[Any]) -> Context:
        """Append several outputs in order; an empty iterable changes nothing."""
        if isinstance(outputs, str | bytes | Mapping) or not isinstance(outputs, Iterable):
            raise TypeError(f"add_outputs expects a list, got {type(outputs).__name__}")
        items = list(outputs)
        if not items:
            return self
        return self._evolve(outputs=self._pv(self.outputs).extend(items))

    # --- artifacts -------------------------------------------------------------------------
    def put_artifact(self, key: str, artifact: Any) -> Context:
        """Insert or overwrite one artifact (a path, URL, or any description)."""
        _check_key(key, "artifact")
        return self._evolve(artifacts=self._pm(self.artifacts).set(key, artifact))

    def get_artifact(self, key: str, default: Any = None) -> Any:
        """The artifact; ``default`` only when absent."""
        _check_key(key, "artifact")
        return self.artifacts.get(key, default)

    def has_artifact(self, key: str) -> bool:
        _check_key(key, "artifact")
        return key in self.artifacts

    # --- assigns ---------------------------------------------------------------------------
    @overload
    def assign(self, key: str, value: Any, /) -> Context: ...
    @overload
    def assign(self, mapping: Mapping[str, Any] | Iterable[tuple[str, Any]], /) -> Context: ...
    @overload
    def assign(self, /, **kwargs: Any) -> Context: ...
    def assign(self, /, *args: Any, **kwargs: Any) -> Context:
        """Set assigns: ``assign(key, value)``, ``assign(mapping)`` or ``assign(**kw)``; merges."""
        items: list[tuple[Any, Any]]
        if len(args) == 2 and not kwargs:
            items = [(args[0], args[1])]
        elif len(args) == 1:
            arg = args[0]
            if isinstance(arg, Mapping):
                items = list(arg.items())
            elif isinstance(arg, str | bytes) or not isinstance(arg, Iterable):
                raise TypeError(
                    f"assign expects (key, value), a mapping or keyword arguments; got {arg!r}"
                )
            else:
                items = [tuple(pair) for pair in arg]  # key/value pairs, last duplicate wins
            items.extend(kwargs.items())
        elif not args:
            items = list(kwargs.items())
        else:
            raise TypeError(
                f"assign takes (key, value), a mapping or keywords; got {len(args)} args"
            )
        checked = []
        for k, v in items:
            _check_key(k, "assign")
            if k == COMPLETED_STAGES and v is not None and not isinstance(v, StageList):
                v = StageList(v)
            checked.append((k, v))
        return self._evolve(assigns=self._pm(self.assigns).update(checked))

    # --- stage completion ------------------------------------------------------------------
    def mark_stage_complete(self, stage: str) -> Context:
        """Record ``stage`` as completed, once, in ``assigns['completed_stages']``."""
        _check_key(stage, "stage name")
        assigns = with_completed_stage(self.assigns, stage)
        return self if assigns is self.assigns else self._evolve(assigns=assigns)

    def stage_completed(self, stage: str) -> bool:
        _check_key(stage, "stage name")
        current = self.assigns.get(COMPLETED_STAGES)
        return current is not None and stage in current

    def completed_stages(self) -> list[str]:
        """Completed stage names in first-completion order."""
        return list(self.assigns.get(COMPLETED_STAGES) or ())

    # --- events ----------------------------------------------------------------------------
    def record_event(self, name: str, /, **attributes: Any) -> Context:
        """Append an event that the engine puts on the current stage's span when it ends."""
        _check_key(name, "event name")
        trace = self.trace if self.trace is not None else Trace()
        event = SpanEvent(name=name, timestamp_ns=time.time_ns(), attributes=dict(attributes))
        return self._evolve(trace=trace.with_event(event))

    # --- views -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of everything in the Context; secret-looking values redacted."""
        return {
            "experiment_id": self.experiment_id,
            "run_id": self.run_id,
            "experiment": to_jsonable(self.experiment.model_dump(mode="json", by_alias=True)),
            "outputs": to_jsonable(self.outputs),
            "metrics": to_jsonable(self.metrics),
            "artifacts": to_jsonable(self.artifacts),
            "trace": None if self.trace is None else to_jsonable(self.trace.to_dict()),
            "telemetry_context": to_jsonable(self.telemetry_context),
            "assigns": to_jsonable(self.assigns),
        }

    @staticmethod
    def _pm(m: Mapping[str, Any]) -> FrozenMap[str, Any]:
        return m  # type: ignore[return-value]  # always a FrozenMap after __post_init__

    @staticmethod
    def _pv(v: Sequence[Any]) -> PVector[Any]:
        return v  # type: ignore[return-value]  # always a PVector after __post_init__


def with_completed_stage(assigns: Mapping[str, Any], stage: str) -> Mapping[str, Any]:
    """``assigns`` with ``stage`` added to its completed stages (the same object if present)."""
    current = assigns.get(COMPLETED_STAGES)
    if current is None:
        stages = _NO_STAGES
    else:
        stages = current if isinstance(current, StageList) else StageList(current)
    updated = stages.add(stage)
    if updated is current:
        return assigns
    return Context._pm(assigns).set(COMPLETED_STAGES, updated)


_new = object.__new__
(
    _S_EXPERIMENT_ID, _S_RUN_ID, _S_EXPERIMENT, _S_OUTPUTS, _S_METRICS, _S_ARTIFACTS, _S_TRACE,
    _S_TELEMETRY, _S_ASSIGNS,
) = slot_setters(Context, FIELDS)  # fmt: skip
