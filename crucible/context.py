"""The immutable run Context and its pure helpers.

Every helper returns a new Context and changes nothing else. Mappings are persistent
(structural sharing), so a helper costs the same whether the run has 10 or 100,000 entries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from pyrsistent import PVector, pvector

from crucible.experiment import Experiment
from crucible.frozen import FrozenMap, StageList
from crucible.serialize import to_jsonable
from crucible.trace import SpanEvent, Trace

COMPLETED_STAGES = "completed_stages"
_MISSING: Any = object()
_EMPTY: FrozenMap[str, Any] = FrozenMap()
_set = object.__setattr__
_EMPTY_LIST: PVector[Any] = pvector()
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
        s = object.__setattr__
        if not isinstance(self.outputs, PVector):
            if isinstance(self.outputs, str | bytes) or not isinstance(self.outputs, Iterable):
                raise TypeError(f"outputs must be a list, got {type(self.outputs).__name__}")
            s(self, "outputs", pvector(self.outputs))
        if not isinstance(self.metrics, FrozenMap):
            s(self, "metrics", _freeze_map(self.metrics, "metrics"))
        if not isinstance(self.artifacts, FrozenMap):
            s(self, "artifacts", _freeze_map(self.artifacts, "artifacts"))
        if not isinstance(self.telemetry_context, FrozenMap):
            s(self, "telemetry_context", _freeze_map(self.telemetry_context, "telemetry_context"))
        if not isinstance(self.assigns, FrozenMap):
            assigns = _freeze_map(self.assigns, "assigns")
            seed = assigns.get(COMPLETED_STAGES)
            if seed is not None and not isinstance(seed, StageList):
                assigns = assigns.set(COMPLETED_STAGES, StageList(seed))
            s(self, "assigns", assigns)

    @staticmethod
    def fresh(
        experiment_id: str,
        run_id: str,
        experiment: Experiment,
        *,
        assigns: Mapping[str, Any] | None,
        trace: Trace,
        telemetry_context: FrozenMap[str, str],
    ) -> Context:
        """The engine's starting Context (skips re-checking values it built itself)."""
        if assigns:
            return Context(experiment_id, run_id, experiment, assigns=assigns, trace=trace,
                           telemetry_context=telemetry_context)  # fmt: skip
        new = object.__new__(Context)
        _set(new, "experiment_id", experiment_id)
        _set(new, "run_id", run_id)
        _set(new, "experiment", experiment)
        _set(new, "outputs", _EMPTY_LIST)
        _set(new, "metrics", _EMPTY)
        _set(new, "artifacts", _EMPTY)
        _set(new, "trace", trace)
        _set(new, "telemetry_context", telemetry_context)
        _set(new, "assigns", _EMPTY)
        return new

    def evolve(self, **changes: Any) -> Context:
        """A copy with some fields replaced (like ``dataclasses.replace``, plain values frozen)."""
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
        _S_TELEMETRY_CONTEXT(new, get("telemetry_context", self.telemetry_context))
        _S_ASSIGNS(new, get("assigns", self.assigns))
        return new

    def _with_run_state(
        self, trace: Trace | None, telemetry_context: Mapping[str, str], assigns: Mapping[str, Any]
    ) -> Context:
        # The engine's per-stage copy: the three fields it owns, set without keyword lookups.
        new = _new(Context)
        _S_EXPERIMENT_ID(new, self.experiment_id)
        _S_RUN_ID(new, self.run_id)
        _S_EXPERIMENT(new, self.experiment)
        _S_OUTPUTS(new, self.outputs)
        _S_METRICS(new, self.metrics)
        _S_ARTIFACTS(new, self.artifacts)
        _S_TRACE(new, trace)
        _S_TELEMETRY_CONTEXT(new, telemetry_context)
        _S_ASSIGNS(new, assigns)
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
        assigns = self._assigns_with_completed(stage)
        return self if assigns is self.assigns else self._evolve(assigns=assigns)

    def _completed(self, stage: str, trace: Trace) -> Context:
        # The engine marks completion and sets the trace in one copy.
        assigns = self._assigns_with_completed(stage)
        return self._with_run_state(trace, self.telemetry_context, assigns)

    def _assigns_with_completed(self, stage: str) -> Mapping[str, Any]:
        current = self.assigns.get(COMPLETED_STAGES)
        if current is None:
            stages = _NO_STAGES
        else:
            stages = current if isinstance(current, StageList) else StageList(current)
        updated = stages.add(stage)
        if updated is current:
            return self.assigns
        return self._pm(self.assigns).set(COMPLETED_STAGES, updated)

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


# Slot setters of the frozen Context: half the cost of object.__setattr__ on the hot paths.
_new = object.__new__
_S_EXPERIMENT_ID = Context.__dict__["experiment_id"].__set__
_S_RUN_ID = Context.__dict__["run_id"].__set__
_S_EXPERIMENT = Context.__dict__["experiment"].__set__
_S_OUTPUTS = Context.__dict__["outputs"].__set__
_S_METRICS = Context.__dict__["metrics"].__set__
_S_ARTIFACTS = Context.__dict__["artifacts"].__set__
_S_TRACE = Context.__dict__["trace"].__set__
_S_TELEMETRY_CONTEXT = Context.__dict__["telemetry_context"].__set__
_S_ASSIGNS = Context.__dict__["assigns"].__set__
