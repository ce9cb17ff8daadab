"""Run a stored run again: ``rerun`` its configuration, or ``resume`` it from its last checkpoint.

Both read what the run's row kept (its configuration, the caller's assigns, its trace and span
ids) and start a new run linked to it: ``rerun_of`` or ``resumed_from`` on the new row and the
run span's attributes, and a span link from the new run span to the original one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Link, SpanContext, TraceFlags

from crucible.checkpoint import ContextState, decode_context, decode_fields
from crucible.context import Context
from crucible.engine import ResumePoint, run
from crucible.errors import ReplayError
from crucible.experiment import Experiment, apply_overrides, experiment_from_mapping, parse_override
from crucible.redact import REDACTED
from crucible.status import RunStatus
from crucible.telemetry import conventions as names

if TYPE_CHECKING:
    from crucible.store import RunInfo, RunStore

__all__ = ["Replay", "prepare_rerun", "prepare_resume", "redacted_paths", "rerun", "resume"]

RESUMABLE = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED,
                       RunStatus.ABANDONED})  # fmt: skip
_ASSIGNS_HINT = "pass them as assigns={...} to crucible.resume(); the CLI cannot supply them"


@dataclass(frozen=True, slots=True)
class Replay:
    """A stored run made ready to run again: what to run, from where, and its links back."""

    source: RunInfo
    experiment: Experiment
    assigns: Mapping[str, Any] | None
    links: tuple[Link, ...]
    rerun_of: str | None = None
    resume_from: ResumePoint | None = None

    def run_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``crucible.run`` that make the new run this replay."""
        return {
            "assigns": self.assigns,
            "links": self.links,
            "rerun_of": self.rerun_of,
            "resume_from": self.resume_from,
        }


def _walk(value: Any, path: str) -> list[str]:
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in _walk(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, list | tuple):
        return [p for i, v in enumerate(value) for p in _walk(v, f"{path}[{i}]")]
    # whole values under secret keys, and strings a secret was scrubbed from (a URL's password)
    return [path] if isinstance(value, str) and REDACTED in value else []


def redacted_paths(experiment: Experiment) -> tuple[list[str], list[str]]:
    """The values of the experiment that were redacted as secrets when it was stored.

    Returns (stage options, as ``--set`` takes them: ``llm.api_key``; other fields, by their
    path: ``backend.options.api_key``).
    """
    options = [f"{sd.name}.{p}" for sd in experiment.pipeline for p in _walk(sd.options or {}, "")]
    rest = experiment.model_dump(mode="python", by_alias=True, exclude={"pipeline"})
    return options, _walk(rest, "")


def stored_experiment(info: RunInfo, overrides: Sequence[str] = ()) -> Experiment:
    """The experiment the run ran, with ``--set`` style ``overrides`` applied.

    Refuses (ReplayError) a run stored without its configuration, and one whose redacted
    secrets are not supplied again, naming each.
    """
    if info.config is None:
        raise ReplayError(
            f"run {info.run_id!r} was stored without its configuration "
            "(by an older version); it cannot be run again from the store"
        )
    source = f"run {info.run_id}"
    experiment = experiment_from_mapping(info.config, source=source)
    experiment = apply_overrides(experiment, [parse_override(o) for o in overrides], source=source)
    if info.source is not None:  # relative data paths start where the original file was
        experiment = experiment.with_source(Path(info.source))
    settable, fixed = redacted_paths(experiment)
    if settable or fixed:
        parts = [f"--set {p}=VALUE" for p in settable]
        parts += [f"{p} (not a stage option; --set cannot supply it)" for p in fixed]
        raise ReplayError(
            f"run {info.run_id!r} cannot be run again as stored: its secret values were "
            f"redacted; pass each with --set: {', '.join(parts)}"
        )
    return experiment


def link_to(info: RunInfo) -> tuple[Link, ...]:
    """A span link to the stored run's span (none when its ids were not stored)."""
    if not info.trace_id or not info.span_id:
        return ()
    ctx = SpanContext(
        int(info.trace_id, 16), int(info.span_id, 16), is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )  # fmt: skip
    return (Link(ctx, {names.PIPELINE_RUN_ID: info.run_id}),)


def _inputs(info: RunInfo, supplied: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The assigns the stored run was started with, ``supplied`` ones put over them."""
    if info.start_assigns is None and not supplied:
        return None
    return decode_fields(info.start_assigns or {}, supplied=supplied, hint=_ASSIGNS_HINT)


async def _stored(store: RunStore, run_id: str) -> RunInfo:
    info = await store.get_run(run_id)
    if info is None:
        raise ReplayError(f"unknown run id {run_id!r} in {store.url}")
    return info


async def prepare_rerun(
    store: RunStore,
    run_id: str,
    *,
    overrides: Sequence[str] = (),
    assigns: Mapping[str, Any] | None = None,
) -> Replay:
    """The stored run's configuration and inputs, ready to run again from the start."""
    info = await _stored(store, run_id)
    experiment = stored_experiment(info, overrides)
    return Replay(info, experiment, _inputs(info, assigns), link_to(info), rerun_of=run_id)


async def prepare_resume(
    store: RunStore,
    run_id: str,
    *,
    overrides: Sequence[str] = (),
    assigns: Mapping[str, Any] | None = None,
) -> Replay:
    """The stored run ready to continue from its first unfinished stage.

    Only failed, timed-out, cancelled and abandoned runs of experiments with ``checkpoint:
    true`` resume; the new run starts from the state its last completed stage left (the
    caller's ``assigns`` replace stored ones, e.g. values that cannot be restored).
    """
    info = await _stored(store, run_id)
    if info.status not in RESUMABLE:
        raise ReplayError(
            f"run {run_id!r} is {info.status}; only failed, timed-out, cancelled or abandoned "
            "runs can be resumed" + (" (rerun it instead)" if info.status == "completed" else "")
        )
    if not (info.config or {}).get("checkpoint"):
        raise ReplayError(
            f"run {run_id!r} has no checkpoints: its experiment did not ask for them "
            "(checkpoint: true in the file, or --checkpoint)"
        )
    experiment = stored_experiment(info, overrides)
    inputs = _inputs(info, assigns)
    last = await store.checkpoints.last(run_id)
    if last is None:
        state = ContextState({}, [], {}, dict(inputs or {}))
        start = 0
    else:
        names_at = [sd.name for sd in experiment.pipeline]
        if last.stage_index >= len(names_at) or names_at[last.stage_index] != last.stage:
            raise ReplayError(
                f"run {run_id!r}: its checkpoint after stage {last.stage!r} does not match "
                "its stored pipeline"
            )
        state = decode_context(last.state, supplied=assigns, hint=_ASSIGNS_HINT)
        start = last.stage_index + 1
    _refuse_restored_overrides(info, overrides, start)
    point = ResumePoint(run_id, start, state)
    return Replay(info, experiment, inputs, link_to(info), resume_from=point)


def _refuse_restored_overrides(info: RunInfo, overrides: Sequence[str], start: int) -> None:
    """An override of a stage before the resume point would record options it never ran
    with (it is restored, not run): refused, unless it supplies a redacted secret again."""
    pipeline = (info.config or {}).get("pipeline") or []
    for raw in overrides:
        override = parse_override(raw)
        for index, entry in enumerate(pipeline[:start]):
            if not isinstance(entry, dict) or entry.get("name") != override.stage:
                continue
            stored: Any = entry.get("options") or {}
            for part in override.path:
                stored = stored.get(part) if isinstance(stored, dict) else None
            if not (isinstance(stored, str) and REDACTED in stored):
                raise ReplayError(
                    f"--set {override.shown!r}: stage {override.stage!r} (pipeline[{index}]) "
                    f"comes before the resume point of run {info.run_id!r}: it is restored, not "
                    "run again, so it keeps the options it ran with; rerun the run to change them"
                )


async def rerun(
    run_id: str,
    /,
    *,
    store: RunStore,
    overrides: Sequence[str] = (),
    assigns: Mapping[str, Any] | None = None,
    **run_kwargs: Any,
) -> Context:
    """Run a stored run's configuration again as a new run (``rerun_of`` the original).

    ``run_kwargs`` go to ``crucible.run`` (``run_id=`` names the new run).
    """
    replay = await prepare_rerun(store, run_id, overrides=overrides, assigns=assigns)
    return await _run(replay, store, run_kwargs)


async def resume(
    run_id: str,
    /,
    *,
    store: RunStore,
    overrides: Sequence[str] = (),
    assigns: Mapping[str, Any] | None = None,
    **run_kwargs: Any,
) -> Context:
    """Continue a failed, cancelled or abandoned run from its first unfinished stage.

    The stages before it are not run again: they appear with result ``skip`` and
    ``crucible.stage.restored=true``. The new run carries ``resumed_from``; ``run_kwargs``
    go to ``crucible.run`` (``run_id=`` names the new run).
    """
    replay = await prepare_resume(store, run_id, overrides=overrides, assigns=assigns)
    return await _run(replay, store, run_kwargs)


async def _run(replay: Replay, store: RunStore, run_kwargs: dict[str, Any]) -> Context:
    kwargs = replay.run_kwargs()
    kwargs["links"] = (*replay.links, *run_kwargs.pop("links", ()))
    return await run(replay.experiment, store=store, **kwargs, **run_kwargs)
