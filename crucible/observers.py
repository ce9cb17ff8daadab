"""The one seam for following runs live: observers the engine calls as runs start and end.

The run store, the CLI's live boards and the blocked-loop watchdog are observers; so is anything
a user plugs in with ``run(..., observers=[...])`` or ``run_batch(..., observers=[...])``.
Hooks take keyword-only arguments holding immutable event records (named tuples on the
per-stage path: they are the cheapest records Python makes), so records can grow fields
without breaking observers. A hook may be a plain method or ``async``; the engine awaits it
between stages, never while a stage runs.

Errors: an exception from ``on_run_start`` refuses the run (nothing runs; the store uses this
for duplicate run ids). Exceptions from every other hook are logged and never change a run's
result.
"""

from __future__ import annotations

import datetime as dt
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import anyio

from crucible.status import RunStatus
from crucible.trace import SpanRecord

if TYPE_CHECKING:
    from crucible.context import Context
    from crucible.errors import StageFailed
    from crucible.experiment import Experiment

__all__ = [
    "AttemptStart",
    "BatchEnd",
    "BatchStart",
    "Checkpoint",
    "LiveRun",
    "RunEnd",
    "RunObserver",
    "RunStart",
    "StageInfo",
]


def _log_failure(hook: Callable[..., Any], err: Exception) -> None:
    import structlog  # only when an observer breaks

    structlog.get_logger("crucible.observers").error(
        "run observer failed", hook=_name(hook), error=repr(err)
    )


@dataclass(frozen=True, slots=True)
class StageInfo:
    """One pipeline entry as planned: position, name, and whether it will run."""

    index: int
    name: str
    enabled: bool


class LiveRun:
    """What a run is doing right now: ``attempt`` is the stage attempt in progress, or None.

    The engine updates it as attempts start and end; an observer that needs to know what is
    running at an arbitrary moment (the blocked-loop watchdog) keeps it from ``on_run_start``
    instead of following every attempt.
    """

    __slots__ = ("attempt",)

    def __init__(self) -> None:
        self.attempt: AttemptStart | None = None


_NO_VERSIONS: Mapping[str, str] = MappingProxyType({})


class RunStart(NamedTuple):
    """A run that is starting. ``trace_id`` is None only for a batch run that never started.

    What makes it reproducible rides along: the caller's ``assigns``, the package ``versions``
    (``python``, ``crucible-pipelines``, the stages' distributions), the git commit of the
    working directory, and the run it reruns or resumes. ``config`` is the experiment as JSON.
    """

    experiment: Experiment
    run_id: str
    trace_id: str | None
    span_id: str | None
    batch_id: str | None
    stages: tuple[StageInfo, ...]
    started_at: dt.datetime
    url: str | None = None
    live: LiveRun | None = None
    assigns: Mapping[str, Any] | None = None
    versions: Mapping[str, str] = _NO_VERSIONS
    git_commit: str | None = None
    git_dirty: bool | None = None
    rerun_of: str | None = None
    resumed_from: str | None = None
    exported: bool | None = None  # its spans went to a tracer provider (and were sampled)

    @property
    def config(self) -> dict[str, Any]:
        """The experiment as it ran (after ``--set`` and its matrix point), secrets redacted.

        Shared between runs of the same Experiment object: read it, never change it.
        """
        from crucible.provenance import experiment_config  # loads the experiment machinery

        return experiment_config(self.experiment)


class AttemptStart(NamedTuple):
    """A stage attempt that is starting (``attempt`` 0 is a skipped, disabled stage)."""

    run: RunStart
    stage: str
    stage_index: int
    attempt: int
    span_id: str
    start_ns: int
    trace_id: str | None = None


class Checkpoint(NamedTuple):
    """The Context a completed stage returned, in a run whose experiment asks for checkpoints.

    A resumed run also reports the Context it was restored to, at the last restored stage.
    """

    run: RunStart
    stage: str
    stage_index: int
    context: Context


class RunEnd(NamedTuple):
    """A finished run: its status, its final (or last good) Context and the failure, if any."""

    run: RunStart
    status: RunStatus
    context: Context | None
    failure: StageFailed | None
    finished_at: dt.datetime
    message: str | None = None


@dataclass(frozen=True, slots=True)
class BatchStart:
    """A batch that is starting: its id, name, size and its ``BATCH`` span's ids."""

    batch_id: str
    name: str
    size: int
    max_concurrency: int
    trace_id: str
    span_id: str
    runs_are_children: bool


@dataclass(frozen=True, slots=True)
class BatchEnd:
    """A finished (or cancelled) batch with its outcomes in input order."""

    batch: BatchStart
    outcomes: Sequence[Any] = field(default_factory=tuple)
    cancelled: bool = False


HookResult = Awaitable[None] | None


class RunObserver:
    """Base class for observers: every hook does nothing; override the ones you need."""

    def on_batch_start(self, *, batch: BatchStart) -> HookResult:
        """A batch is starting (before any of its runs)."""
        return None

    def on_run_start(self, *, run: RunStart) -> HookResult:
        """A run is starting (before its first stage). Raise to refuse the run."""
        return None

    def on_attempt_start(self, *, attempt: AttemptStart) -> HookResult:
        """A stage attempt is starting; its span is open."""
        return None

    def on_attempt_end(self, *, attempt: AttemptStart, record: SpanRecord) -> HookResult:
        """A stage attempt ended; ``record`` is what ``ctx.trace`` keeps of it."""
        return None

    def on_checkpoint(self, *, checkpoint: Checkpoint) -> HookResult:
        """A stage completed in a run with ``checkpoint: true``: here is the Context it returned."""
        return None

    def on_run_end(self, *, run: RunEnd) -> HookResult:
        """A run ended (also when cancelled: this hook is shielded from cancellation)."""
        return None

    def on_batch_end(self, *, batch: BatchEnd) -> HookResult:
        """A batch ended (completed or cancelled)."""
        return None


_HOOKS = (
    "on_batch_start",
    "on_run_start",
    "on_attempt_start",
    "on_attempt_end",
    "on_checkpoint",
    "on_run_end",
    "on_batch_end",
)


Hooks = tuple[Callable[..., Any], ...]


class Observers:
    """The engine's view of a set of observers: for each hook, the methods that implement it.

    Only hooks an observer overrides are called, so an observer that follows runs costs
    nothing per stage.
    """

    __slots__ = (*_HOOKS, "_any")
    HOOKS: ClassVar[tuple[str, ...]] = _HOOKS
    EMPTY: ClassVar[Observers]

    def __init__(self, observers: Iterable[Any] = ()) -> None:
        found: dict[str, list[Callable[..., Any]]] = {h: [] for h in _HOOKS}
        for obs in observers:
            for hook in _HOOKS:
                method = getattr(obs, hook, None)
                if method is None or not callable(method):
                    continue
                if getattr(type(obs), hook, None) is getattr(RunObserver, hook):
                    continue  # the base class's no-op
                found[hook].append(method)
        self.on_batch_start: Hooks = tuple(found["on_batch_start"])
        self.on_run_start: Hooks = tuple(found["on_run_start"])
        self.on_attempt_start: Hooks = tuple(found["on_attempt_start"])
        self.on_attempt_end: Hooks = tuple(found["on_attempt_end"])
        self.on_checkpoint: Hooks = tuple(found["on_checkpoint"])
        self.on_run_end: Hooks = tuple(found["on_run_end"])
        self.on_batch_end: Hooks = tuple(found["on_batch_end"])
        self._any = any(found.values())

    def __bool__(self) -> bool:
        return self._any

    @staticmethod
    def combine(*groups: Iterable[Any]) -> Observers:
        """One Observers over every observer of ``groups``, in order, each once."""
        seen: list[Any] = []
        for group in groups:
            for obs in group:
                if not any(obs is s for s in seen):
                    seen.append(obs)
        return Observers(seen) if seen else Observers.EMPTY


Observers.EMPTY = Observers()


def fire(hooks: Sequence[Callable[..., Any]], **event: Any) -> Awaitable[None] | None:
    """Call each hook; log and swallow what they raise.

    Returns None when every hook was synchronous, else an awaitable that finishes the async
    hook and calls the rest: plain observers cost no coroutine per stage.
    """
    for i, hook in enumerate(hooks):
        try:
            result = hook(**event)
        except Exception as err:
            _log_failure(hook, err)
            continue
        if result is not None and inspect.isawaitable(result):
            return _finish(hook, result, hooks[i + 1 :], event)
    return None


async def _finish(
    hook: Callable[..., Any],
    pending: Awaitable[Any],
    rest: Sequence[Callable[..., Any]],
    event: dict[str, Any],
) -> None:
    try:
        await pending
    except anyio.get_cancelled_exc_class():
        raise
    except Exception as err:
        _log_failure(hook, err)
    more = fire(rest, **event)
    if more is not None:
        await more


async def notify(hooks: Sequence[Callable[..., Any]], **event: Any) -> None:
    """Call each hook, awaiting async ones; log and swallow what they raise."""
    pending = fire(hooks, **event)
    if pending is not None:
        await pending


def fire_strict(hooks: Sequence[Callable[..., Any]], **event: Any) -> Awaitable[None] | None:
    """Like :func:`fire`, but what a hook raises propagates (``on_run_start`` may refuse)."""
    for i, hook in enumerate(hooks):
        result = hook(**event)
        if result is not None and inspect.isawaitable(result):
            return _finish_strict(result, hooks[i + 1 :], event)
    return None


async def _finish_strict(
    pending: Awaitable[Any], rest: Sequence[Callable[..., Any]], event: dict[str, Any]
) -> None:
    await pending
    more = fire_strict(rest, **event)
    if more is not None:
        await more


async def notify_shielded(hooks: Sequence[Callable[..., Any]], **event: Any) -> None:
    """``notify``, with async hooks shielded: end-of-run hooks run even when cancelled."""
    pending = fire(hooks, **event)
    if pending is not None:
        with anyio.CancelScope(shield=True):
            await pending


def _name(hook: Callable[..., Any]) -> str:
    owner = getattr(hook, "__self__", None)
    prefix = f"{type(owner).__qualname__}." if owner is not None else ""
    return prefix + getattr(hook, "__name__", repr(hook))
