"""Engine-only constructors for Context and Trace: the per-run and per-stage copies.

They fill new instances slot by slot, skipping the checks the public constructors run on
values a caller passed: every value here was built by the engine itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crucible.context import FIELDS, Context, with_completed_stage
from crucible.frozen import FrozenMap, slot_setters
from crucible.trace import NO_EVENTS, TRACE_FIELDS, Trace

_new = object.__new__
_EMPTY: FrozenMap[str, Any] = FrozenMap()
(
    _EXPERIMENT_ID, _RUN_ID, _EXPERIMENT, _OUTPUTS, _METRICS, _ARTIFACTS, _TRACE, _TELEMETRY,
    _ASSIGNS,
) = slot_setters(Context, FIELDS)  # fmt: skip
_TRACE_ID, _SPAN_ID, _SPANS, _PENDING = slot_setters(Trace, TRACE_FIELDS)


def start_trace(trace_id: str, span_id: str) -> Trace:
    """An empty trace for a run whose span has these ids."""
    new = _new(Trace)
    _TRACE_ID(new, trace_id)
    _SPAN_ID(new, span_id)
    _SPANS(new, NO_EVENTS)
    _PENDING(new, NO_EVENTS)
    return new


def start_context(
    experiment: Any,
    run_id: str,
    *,
    assigns: Mapping[str, Any] | None,
    trace: Trace,
    telemetry_context: FrozenMap[str, str],
) -> Context:
    """The Context a run starts from (caller assigns are checked and frozen as usual)."""
    if assigns:
        return Context(
            experiment.id, run_id, experiment, assigns=assigns, trace=trace,
            telemetry_context=telemetry_context,
        )  # fmt: skip
    new = _new(Context)
    _EXPERIMENT_ID(new, experiment.id)
    _RUN_ID(new, run_id)
    _EXPERIMENT(new, experiment)
    _OUTPUTS(new, NO_EVENTS)
    _METRICS(new, _EMPTY)
    _ARTIFACTS(new, _EMPTY)
    _TRACE(new, trace)
    _TELEMETRY(new, telemetry_context)
    _ASSIGNS(new, _EMPTY)
    return new


def with_run_state(
    ctx: Context, trace: Trace | None, telemetry_context: Mapping[str, str], assigns: Any
) -> Context:
    """``ctx`` with the three fields the engine owns (trace, carrier, assigns) replaced."""
    new = _new(Context)
    _EXPERIMENT_ID(new, ctx.experiment_id)
    _RUN_ID(new, ctx.run_id)
    _EXPERIMENT(new, ctx.experiment)
    _OUTPUTS(new, ctx.outputs)
    _METRICS(new, ctx.metrics)
    _ARTIFACTS(new, ctx.artifacts)
    _TRACE(new, trace)
    _TELEMETRY(new, telemetry_context)
    _ASSIGNS(new, assigns)
    return new


def completed(ctx: Context, stage: str, trace: Trace) -> Context:
    """A stage's output with the stage marked complete and the run's trace set, in one copy."""
    return with_run_state(
        ctx, trace, ctx.telemetry_context, with_completed_stage(ctx.assigns, stage)
    )
