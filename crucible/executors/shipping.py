"""What crosses to Ray workers and back: stages by value, run() arguments, outcomes.

Stages from installed packages (entry points) resolve by name on the workers; every other stage
(``@stage`` functions in the user's script, an explicit ``Registry``) is pickled by value with
cloudpickle, so a script's stages run on a cluster unchanged.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import pickle
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from crucible.context import Context
from crucible.errors import CrucibleError, UnknownStage
from crucible.executors.base import RunJob, RunOutcome
from crucible.registry import Registry
from crucible.stage import StageSpec
from crucible.status import RunStatus

# run() arguments that stay on the driver: each has its worker-side counterpart.
DRIVER_ONLY = frozenset({"store", "registry", "tracer_provider", "meter_provider", "observers"})


class NotShippable(CrucibleError):
    """A stage or a run() argument cannot be sent to Ray workers; nothing was run."""


class RemoteError(CrucibleError):
    """A run's exception that could not be sent back from its worker: its type and message."""

    def __init__(self, type_name: str, message: str) -> None:
        self.type_name = type_name
        self.message = message
        super().__init__(f"{type_name}: {message}")

    def __reduce__(self) -> tuple[object, ...]:
        return (RemoteError, (self.type_name, self.message))


def _cloudpickle() -> Any:
    return importlib.import_module("ray.cloudpickle")  # Ray's copy: the one its workers use


def _dumps(obj: Any) -> bytes:
    return bytes(_cloudpickle().dumps(obj))


def _local_modules(specs: Iterable[StageSpec], registered: set[str]) -> list[Any]:
    """Modules of ``specs`` that no installed distribution provides (nor the caller registered
    already): pickled by value for this batch."""
    provided = importlib.metadata.packages_distributions()
    found: dict[str, Any] = {}
    for spec in specs:
        module = getattr(spec.call, "__module__", None) or ""
        if module == "__main__" or module in registered or module.split(".")[0] in provided:
            continue
        if module in sys.modules:
            found[module] = sys.modules[module]
    return list(found.values())


def ship_stages(jobs: Iterable[RunJob], registry: Registry) -> bytes:
    """The pickled specs of every non-plugin stage the jobs name; NotShippable names a bad one."""
    cloudpickle = _cloudpickle()
    wanted = sorted({sd.name for job in jobs for sd in job.experiment.pipeline if not sd.module})
    specs: list[StageSpec] = []
    for name in wanted:
        try:
            if registry.source(name).kind == "entry point":
                continue  # resolved by its entry point on the worker
            specs.append(registry.get(name))
        except UnknownStage:
            continue  # the run fails on the worker exactly as it would here
    by_value = _local_modules(specs, set(cloudpickle.list_registry_pickle_by_value()))
    for module in by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        for spec in specs:
            try:
                _dumps(spec)
            except Exception as err:
                raise NotShippable(
                    f"stage {spec.name!r} ({spec.origin}) cannot be shipped to Ray workers: "
                    f"{type(err).__name__}: {err}; define it at module level or install it "
                    "as a package with a crucible.stages entry point"
                ) from None
        return _dumps(specs)
    finally:
        for module in by_value:
            cloudpickle.unregister_pickle_by_value(module)


def worker_registry(blob: bytes) -> Registry:
    """The registry a worker runs a batch with: the shipped stages, then installed plugins."""
    specs: list[StageSpec] = pickle.loads(blob)
    return Registry(specs, discover=True)


def worker_kwargs(run_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The run() arguments sent to workers; NotShippable names one that cannot be pickled."""
    out = {k: v for k, v in run_kwargs.items() if k not in DRIVER_ONLY}
    for key, value in out.items():
        try:
            _dumps(value)
        except Exception as err:
            raise NotShippable(
                f"run_batch argument {key}={value!r} cannot be shipped to Ray workers: {err}"
            ) from None
    return out


@dataclass(frozen=True, slots=True)
class WireOutcome:
    """A RunOutcome as it travels back from a worker (the error pickled on its own)."""

    index: int
    run_id: str
    status: str
    context: Context | None
    error: bytes | None
    error_text: str | None
    trace_id: str | None
    duration_s: float
    metrics: Mapping[str, Any] | None


def to_wire(outcome: RunOutcome, *, keep_context: bool) -> WireOutcome:
    """Pack ``outcome``; an error that cannot be pickled travels as its type and message."""
    err = outcome.error
    blob: bytes | None = None
    text: str | None = None
    if err is not None:
        text = f"{type(err).__qualname__}\0{err}"
        try:
            blob = _dumps(err if keep_context else _without_context(err))
        except Exception:
            blob = None
    return WireOutcome(
        outcome.index, outcome.run_id, str(outcome.status),
        outcome.context if keep_context else None, blob, text, outcome.trace_id,
        outcome.duration_s, dict(outcome.metrics) if outcome.metrics is not None else None,
    )  # fmt: skip


def _without_context(err: BaseException) -> BaseException:
    if getattr(err, "context", None) is not None:
        with contextlib.suppress(AttributeError):
            err.context = None  # type: ignore[attr-defined]
    return err


def from_wire(wire: WireOutcome, experiment_id: str) -> RunOutcome:
    """Unpack a worker's outcome on the driver."""
    error: BaseException | None = None
    if wire.error_text is not None:
        type_name, _, message = wire.error_text.partition("\0")
        try:
            error = pickle.loads(wire.error) if wire.error is not None else None
        except Exception:
            error = None
        if error is None:
            error = RemoteError(type_name, message)
    return RunOutcome(
        RunStatus(wire.status), wire.context, error, wire.run_id, wire.trace_id, wire.index,
        experiment_id, wire.duration_s, wire.metrics,
    )  # fmt: skip
