"""run(): resolve and validate every stage, then run them in order under OpenTelemetry spans."""

from __future__ import annotations

import functools
import inspect
import json
import math
import random
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from crucible.context import Context
from crucible.errors import (
    DuplicateRun,
    ImportsNotAllowed,
    InvalidPipeline,
    OptionsError,
    Problem,
    StageFailed,
    UnknownStage,
)
from crucible.experiment import Experiment, StageDef, experiment_from_mapping
from crucible.frozen import FrozenMap
from crucible.logging import run_context
from crucible.registry import Registry, _imports_allowed, default_registry
from crucible.serialize import to_jsonable
from crucible.stage import StageSpec
from crucible.telemetry import spans as tel
from crucible.trace import SpanEvent, SpanRecord, StageResult, Trace
from crucible.watchdog import threshold_from_env, watchdog_for_current_loop

ValidateMode = Literal["error", "warn", "off"]
RunStatus = Literal["completed", "failed", "timed_out", "cancelled"]
_log = structlog.get_logger("crucible.engine")
_STORE_TIMEOUT_S = 10.0
_MAX_OPTIONS_ATTR = 2048


@dataclass(frozen=True, slots=True)
class PlannedStage:
    """A pipeline step after pre-flight: its spec (None when disabled) and validated options."""

    index: int
    definition: StageDef
    spec: StageSpec | None
    options: Any
    span_attributes: Mapping[str, Any] = field(default_factory=dict)
    metric_attributes: Mapping[str, Any] = field(default_factory=dict)
    span_name: str = ""
    first_attempt_attributes: Mapping[str, Any] = field(default_factory=dict)


def coerce_experiment(experiment: Experiment | Mapping[str, Any]) -> Experiment:
    if isinstance(experiment, Experiment):
        return experiment
    if isinstance(experiment, Mapping):
        return experiment_from_mapping(experiment)
    raise TypeError(f"run() expects an Experiment or a mapping, got {type(experiment).__name__}")


def plan(
    experiment: Experiment,
    registry: Registry,
    *,
    validate_options: ValidateMode = "error",
    allow_imports: bool = False,
) -> list[PlannedStage]:
    """Resolve every enabled stage and validate its options; raise InvalidPipeline if any fail."""
    if validate_options not in ("error", "warn", "off"):
        raise ValueError(
            f"validate_options must be 'error', 'warn' or 'off', got {validate_options!r}"
        )
    fatal: list[Problem] = []
    warnings: list[Problem] = []
    planned: list[PlannedStage] = []
    for i, sd in enumerate(experiment.pipeline):
        attrs = {
            tel.TASK_NAME: sd.name,
            "crucible.stage.index": i,
            "crucible.stage.option_keys": sorted((sd.options or {}).keys()),
            "crucible.stage.options": _options_attr(sd.options),
        }
        extra: dict[str, Any] = {
            "metric_attributes": {
                tel.PIPELINE_NAME: experiment.id,
                tel.TASK_NAME: sd.name,
                tel.TASK_RUN_RESULT: "success",
            },
            "span_name": f"stage {sd.name}",
            "first_attempt_attributes": {**attrs, "crucible.stage.attempt": 1},
        }
        if not sd.enabled:
            planned.append(PlannedStage(i, sd, None, None, attrs, **extra))
            continue
        try:
            spec = registry.resolve(sd, allow_imports=allow_imports)
        except (UnknownStage, ImportsNotAllowed, TypeError) as err:
            fatal.append(Problem(str(err), stage_index=i, stage=sd.name))
            continue
        if validate_options == "off":
            planned.append(
                PlannedStage(i, sd, spec, spec.unchecked_options(sd.options), attrs, **extra)
            )
            continue
        try:
            opts = spec.validate_options(sd.options)
        except OptionsError as err:
            probs = [Problem(m, stage_index=i, stage=sd.name, path=p) for p, m in err.problems]
            (fatal if validate_options == "error" else warnings).extend(probs)
            opts = spec.unchecked_options(sd.options)
        planned.append(PlannedStage(i, sd, spec, opts, attrs, **extra))
    if fatal:
        raise InvalidPipeline(fatal + warnings, source=experiment.id)
    for p in warnings:
        _log.warning("invalid stage options", experiment_id=experiment.id, problem=str(p))
    return planned


_PLAN_CACHE_SIZE = 256
_plan_cache: dict[int, tuple[Any, ...]] = {}


def cached_plan(
    experiment: Experiment,
    registry: Registry,
    *,
    validate_options: ValidateMode,
    allow_imports: bool,
) -> list[PlannedStage]:
    """plan(), reused while the same Experiment object runs again on an unchanged registry.

    Experiments are frozen, so a batch running one experiment many times resolves and
    validates it once. Entries hold a weak reference check (the object identity) and the
    registry version; anything else re-plans.
    """
    if validate_options == "warn":  # warnings are logged by plan(): keep them per run
        return plan(experiment, registry, validate_options="warn", allow_imports=allow_imports)
    key = id(experiment)
    hit = _plan_cache.get(key)
    if hit is not None:
        exp_ref, reg_ref, version, mode, imports, planned = hit
        if (
            exp_ref() is experiment
            and reg_ref() is registry
            and version == registry.version
            and mode == validate_options
            and imports == allow_imports
        ):
            return planned  # type: ignore[no-any-return]
    planned = plan(
        experiment, registry, validate_options=validate_options, allow_imports=allow_imports
    )
    if len(_plan_cache) >= _PLAN_CACHE_SIZE:
        _plan_cache.pop(next(iter(_plan_cache)))
    _plan_cache[key] = (
        weakref.ref(experiment), weakref.ref(registry), registry.version,
        validate_options, allow_imports, planned,
    )  # fmt: skip
    return planned


_UUID4_CLEAR = ~(0xF000 << 64 | 0xC000 << 48)
_UUID4_SET = 0x4000 << 64 | 0x8000 << 48


def new_run_id() -> str:
    """A random UUID4 string (from ``random``, not the OS entropy pool: ids, not secrets)."""
    h = f"{random.getrandbits(128) & _UUID4_CLEAR | _UUID4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _backoff(base: float, attempt: int) -> float:
    """Exponential backoff with full jitter around the nominal delay (±50%)."""
    return float(base * (2 ** (attempt - 1)) * random.uniform(0.5, 1.5))


_PIPELINE_RESULT: dict[RunStatus, str] = {
    "completed": "success",
    "failed": "failure",
    "timed_out": "timeout",
    "cancelled": "cancellation",
}


def status_of(failure: StageFailed) -> RunStatus:
    """The run status a failed stage leaves: timed_out, cancelled or failed."""
    if failure.result == "timeout":
        return "timed_out"
    if failure.result == "cancellation":
        return "cancelled"
    return "failed"


def _result_for(exc: BaseException) -> StageResult:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, _NotAContext):
        return "error"
    return "failure"


class _NotAContext(TypeError):
    """A stage returned something other than a Context."""


def _options_attr(options: Mapping[str, Any] | None) -> str:
    text = json.dumps(to_jsonable(dict(options or {})), sort_keys=True)
    return text if len(text) <= _MAX_OPTIONS_ATTR else text[: _MAX_OPTIONS_ATTR - 3] + "..."


async def _store_call(store: Any, op: str, run_id: str, *args: Any, **kwargs: Any) -> None:
    """Call a store method; failures are logged, never raised (the run's result comes first).

    The one exception is a duplicate run id at start: running would overwrite that record.
    """
    if store is None:
        return
    try:
        with anyio.CancelScope(shield=True), anyio.fail_after(_STORE_TIMEOUT_S):
            await getattr(store, op)(*args, **kwargs)
    except DuplicateRun:
        raise
    except Exception as err:
        _log.error("run store write failed", operation=op, run_id=run_id, error=repr(err))


class _Runner:
    """State of one run; ``execute`` drives the stages."""

    def __init__(
        self,
        experiment: Experiment,
        planned: list[PlannedStage],
        *,
        run_id: str,
        assigns: Mapping[str, Any] | None,
        store: Any,
        telemetry: tel.Telemetry,
        parent: otel_context.Context | None,
        timeout: float | None,
        batch_id: str | None,
        links: Sequence[Link],
    ) -> None:
        self.experiment = experiment
        self.planned = planned
        self.run_id = run_id
        self.assigns = assigns
        self.store = store
        self.tel = telemetry
        self.parent = parent
        self.timeout = timeout
        self.batch_id = batch_id
        self.links = links
        self._log: Any = None
        self.block_warn_s = threshold_from_env()
        self.has_baggage = False
        self.carrier_head = self.carrier_tail = ""
        self.carrier_state: str | None = None
        self.run_carrier: FrozenMap[str, str] = FrozenMap()
        self.cancelled_at: StageFailed | None = None

    @property
    def log(self) -> Any:
        """A logger bound to this run (made on first use: most runs never log)."""
        if self._log is None:
            self._log = _log.bind(experiment_id=self.experiment.id, run_id=self.run_id)
        return self._log

    async def execute(self) -> Context:
        exp = self.experiment
        attrs: dict[str, Any] = {
            tel.PIPELINE_NAME: exp.id,
            tel.PIPELINE_RUN_ID: self.run_id,
            "crucible.stage.count": len(self.planned),
        }
        if self.batch_id is not None:
            attrs["crucible.batch.id"] = self.batch_id
        run_span = self.tel.tracer.start_span(
            f"RUN {exp.id}",
            context=self.parent,
            kind=SpanKind.INTERNAL,
            attributes=attrs,
            links=self.links or None,
        )
        run_otel_ctx = trace.set_span_in_context(run_span, self.parent)
        trace_id, run_span_id = tel.hex_ids(run_span)
        metric_attrs = {tel.PIPELINE_NAME: exp.id}
        ins = self.tel.instruments
        metrics_on = self.tel.metrics_enabled
        if metrics_on:
            ins.run_active.add(1, metric_attrs)
        started = time.perf_counter()
        run_carrier_dict = tel.carrier_for(run_span, run_otel_ctx)
        run_carrier = self.run_carrier = FrozenMap(run_carrier_dict)
        self.has_baggage = "baggage" in run_carrier
        # Stage spans share the run's trace id, flags and trace state: build their carrier
        # from these parts instead of re-deriving them per stage.
        tp = run_carrier_dict["traceparent"]
        self.carrier_head, self.carrier_tail = tp[:36], tp[52:]
        self.carrier_state = run_carrier_dict.get("tracestate")
        ctx = Context.fresh(
            exp.id,
            self.run_id,
            exp,
            assigns=self.assigns,
            trace=Trace.start(trace_id, run_span_id),
            telemetry_context=run_carrier,
        )
        if self.store is not None:
            try:
                await _store_call(
                    self.store, "start_run", self.run_id, exp, self.run_id,
                    trace_id=trace_id, batch_id=self.batch_id,
                )  # fmt: skip
            except DuplicateRun as err:
                run_span.set_attribute(tel.ERROR_TYPE, type(err).__qualname__)
                run_span.set_status(Status(StatusCode.ERROR, str(err)))
                run_span.end()
                if metrics_on:
                    ins.run_active.add(-1, metric_attrs)
                raise
        dog = watchdog_for_current_loop(self.block_warn_s) if self.block_warn_s else None
        if dog is not None:
            dog.active_runs += 1
        token = otel_context.attach(run_otel_ctx)
        status: RunStatus = "completed"
        failure: StageFailed | None = None
        cancelled: BaseException | None = None
        log_token = run_context.set((exp.id, self.run_id, None))
        try:
            deadline = math.inf if self.timeout is None else anyio.current_time() + self.timeout
            for step in self.planned:
                ctx = await self._run_step(ctx, step, run_otel_ctx, run_span_id, deadline)
            ctx = ctx._evolve(telemetry_context=run_carrier)
        except StageFailed as err:
            failure = err
            status = status_of(err)
        except anyio.get_cancelled_exc_class() as err:
            cancelled = err  # re-raised below, after the spans and the store are finalised
            status = "cancelled"
        finally:
            run_context.reset(log_token)
            otel_context.detach(token)
            if dog is not None:
                dog.active_runs -= 1
                dog.last_active = time.monotonic()
        result = _PIPELINE_RESULT[status]
        run_span.set_attribute(tel.PIPELINE_RESULT, result)
        if failure is not None or cancelled is not None:
            cause = failure.cause if failure is not None else cancelled
            assert cause is not None
            run_span.set_attribute(tel.ERROR_TYPE, type(cause).__qualname__)
            desc = str(failure) if failure is not None else "run cancelled"
            run_span.set_status(Status(StatusCode.ERROR, desc))
            if metrics_on:
                ins.run_errors.add(1, {**metric_attrs, tel.ERROR_TYPE: type(cause).__qualname__})
        run_span.end()
        if metrics_on:
            ins.run_active.add(-1, metric_attrs)
            ins.run_duration.record(
                time.perf_counter() - started, {**metric_attrs, tel.PIPELINE_RESULT: result}
            )
        final = failure.context if failure is not None and failure.context is not None else ctx
        failure_for_store: StageFailed | None = failure
        if cancelled is not None and self.cancelled_at is not None:
            failure_for_store = self.cancelled_at
            final = self.cancelled_at.context or ctx
        await self._finish(status, final, failure_for_store)
        if cancelled is not None:
            raise cancelled
        if failure is not None:
            raise failure
        return ctx

    async def _finish(self, status: RunStatus, ctx: Context, failure: StageFailed | None) -> None:
        if self.store is None:
            return
        for name, artifact in ctx.artifacts.items():
            location = artifact.get("location") if isinstance(artifact, Mapping) else artifact
            fmt = artifact.get("format") if isinstance(artifact, Mapping) else None
            await _store_call(
                self.store, "record_artifact", self.run_id, self.run_id, name,
                location=str(location), format=fmt,
            )  # fmt: skip
        await _store_call(
            self.store, "finish_run", self.run_id, self.run_id, status, context=ctx,
            failure_stage=failure.stage if failure else None,
            failure_message=str(failure.cause) if failure else None,
            error_type=type(failure.cause).__qualname__ if failure else None,
        )  # fmt: skip

    async def _run_step(
        self,
        ctx: Context,
        step: PlannedStage,
        run_otel_ctx: otel_context.Context,
        run_span_id: str,
        deadline: float,
    ) -> Context:
        sd = step.definition
        if step.spec is None:
            return await self._skip(ctx, step, run_otel_ctx, run_span_id)
        attempts = sd.retries + 1
        for attempt in range(1, attempts + 1):
            ctx, outcome = await self._attempt(ctx, step, attempt, run_otel_ctx, run_span_id,
                                               deadline)  # fmt: skip
            if outcome is None:
                return ctx
            if attempt == attempts or outcome.result == "cancellation":
                raise outcome
            if outcome.result == "timeout" and anyio.current_time() >= deadline:
                raise outcome  # the run's own deadline passed: retrying cannot help
            delay = _backoff(sd.retry_backoff, attempt)
            self.log.warning(
                "stage attempt failed; retrying", stage=sd.name, attempt=attempt,
                error=str(outcome.cause), retry_in_s=round(delay, 3),
            )  # fmt: skip
            if anyio.current_time() + delay >= deadline:
                raise outcome
            await anyio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _skip(
        self, ctx: Context, step: PlannedStage, run_otel_ctx: otel_context.Context, parent: str
    ) -> Context:
        name = step.definition.name
        span = self.tel.tracer.start_span(
            f"stage {name}",
            context=run_otel_ctx,
            kind=SpanKind.INTERNAL,
            attributes={**step.span_attributes, tel.TASK_RUN_RESULT: "skip"},
        )
        t = time.time_ns()
        span.end()
        _, span_id = tel.hex_ids(span)
        start, end = tel.span_times(span, t, t)
        record = SpanRecord(
            name=f"stage {name}", stage=name, span_id=span_id, parent_span_id=parent,
            start_ns=start, end_ns=end, result="skip", attempt=0, stage_index=step.index,
        )  # fmt: skip
        if self.store is not None:
            await _store_call(self.store, "record_attempt", self.run_id, self.run_id, record)
        assert ctx.trace is not None
        return ctx._evolve(trace=ctx.trace.with_span(record))

    async def _attempt(
        self,
        ctx: Context,
        step: PlannedStage,
        attempt: int,
        run_otel_ctx: otel_context.Context,
        parent_span_id: str,
        run_deadline: float,
    ) -> tuple[Context, StageFailed | None]:
        sd, spec = step.definition, step.spec
        assert spec is not None and ctx.trace is not None
        name = sd.name
        span = self.tel.tracer.start_span(
            step.span_name,
            context=run_otel_ctx,
            kind=SpanKind.INTERNAL,
            attributes=step.first_attempt_attributes
            if attempt == 1
            else {**step.span_attributes, "crucible.stage.attempt": attempt},
        )
        span_id = f"{span.get_span_context().span_id:016x}"
        stage_otel_ctx = trace.set_span_in_context(span, run_otel_ctx)
        base_trace, _ = ctx.trace.take_events()
        if self.has_baggage or self.carrier_state is not None:
            carrier = FrozenMap(tel.carrier_for(span, stage_otel_ctx if self.has_baggage else None))
        else:  # the run's own carrier, with this stage's span id
            carrier = self.run_carrier.set(
                "traceparent", f"{self.carrier_head}{span_id}{self.carrier_tail}"
            )
        stage_in = ctx._with_run_state(base_trace, carrier, ctx.assigns)
        t0_ns, t0 = time.time_ns(), time.perf_counter()
        stage_deadline = run_deadline
        if sd.timeout is not None:
            stage_deadline = min(stage_deadline, anyio.current_time() + sd.timeout)
        token = otel_context.attach(stage_otel_ctx)
        out: Any = None
        error: BaseException | None = None
        result: StageResult = "success"
        cancel_exc: BaseException | None = None
        log_token = run_context.set((self.experiment.id, self.run_id, name))
        try:
            if stage_deadline == math.inf and spec.is_async:
                out = (
                    await spec.call(stage_in, step.options)
                    if spec.takes_options
                    else (await spec.call(stage_in))
                )
                if type(out) is not Context and inspect.isawaitable(out):
                    out = await out
            elif stage_deadline == math.inf:
                out = await self._call(spec, stage_in, step.options)
            else:
                with anyio.CancelScope(deadline=stage_deadline) as scope:
                    out = await self._call(spec, stage_in, step.options)
                if scope.cancelled_caught:
                    limit = sd.timeout if stage_deadline < run_deadline else self.timeout
                    which = "stage" if stage_deadline < run_deadline else "run"
                    error = TimeoutError(f"{which} timeout of {limit}s exceeded in stage {name!r}")
                    result = "timeout"
            if error is None and not isinstance(out, Context):
                error = _NotAContext(
                    f"stage {name!r} returned {type(out).__qualname__}, expected a Context"
                )
                result = "error"
        except anyio.get_cancelled_exc_class() as exc:
            cancel_exc = error = exc
            result = "cancellation"
        except Exception as exc:
            error = exc
            result = _result_for(exc)
        finally:
            run_context.reset(log_token)
            otel_context.detach(token)
        events: tuple[SpanEvent, ...] = ()
        trace_after = None
        if error is None:
            trace_after, events = out.trace.take_events() if out.trace is not None else (None, ())
            for ev in events:
                span.add_event(ev.name, tel.event_attributes(ev.attributes), ev.timestamp_ns)
            span.set_attributes({tel.TASK_RUN_ID: span_id, tel.TASK_RUN_RESULT: "success"})
        else:
            span.set_attributes(
                {
                    tel.TASK_RUN_ID: span_id,
                    tel.TASK_RUN_RESULT: result,
                    tel.ERROR_TYPE: type(error).__qualname__,
                }
            )
            if cancel_exc is None:
                span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()
        if self.tel.metrics_enabled:
            self.tel.instruments.stage_duration.record(
            time.perf_counter() - t0,
            step.metric_attributes if error is None else {**step.metric_attributes,
                                                          tel.TASK_RUN_RESULT: result},
        )  # fmt: skip
        start, end = tel.span_times(span, t0_ns, time.time_ns())
        record = SpanRecord(
            step.span_name, name, span_id, parent_span_id, start, end, result, attempt,
            None if error is None else type(error).__qualname__,
            None if error is None else str(error),
            events, step.index,
        )  # fmt: skip
        if self.store is not None:
            await _store_call(self.store, "record_attempt", self.run_id, self.run_id, record)
        if error is None:
            return out._completed(name, (trace_after or base_trace).with_span(record)), None
        kept = ctx._evolve(trace=ctx.trace.with_span(record))
        failed = StageFailed(name, error, kept, result=result)
        if cancel_exc is not None:
            # Record what happened, then let cancellation propagate: it is never swallowed.
            self.cancelled_at = failed
            raise cancel_exc
        self.log.warning("stage failed", stage=name, attempt=attempt, result=result,
                         error=f"{type(error).__name__}: {error}")  # fmt: skip
        return kept, failed

    async def _call(self, spec: StageSpec, ctx: Context, options: Any) -> Any:
        args = (ctx, options) if spec.takes_options else (ctx,)
        if spec.is_async:
            out = await spec.call(*args)
        else:
            out = await anyio.to_thread.run_sync(functools.partial(spec.call, *args))
        if inspect.isawaitable(out):
            out = await out
        return out


async def run(
    experiment: Experiment | Mapping[str, Any],
    *,
    run_id: str | None = None,
    assigns: Mapping[str, Any] | None = None,
    registry: Registry | None = None,
    store: Any = None,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    parent: Any = None,
    validate_options: ValidateMode = "error",
    timeout: float | None = None,  # noqa: ASYNC109 - the run-level deadline is part of the API
    allow_imports: bool = False,
    batch_id: str | None = None,
    links: Sequence[Link] = (),
) -> Context:
    """Run an experiment's stages in order and return the final Context.

    Raises InvalidPipeline (nothing ran) or StageFailed (with the last good context). Outside
    cancellation ends the spans with result ``cancellation`` and propagates.
    """
    exp = coerce_experiment(experiment)
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be positive seconds, got {timeout!r}")
    planned = cached_plan(
        exp,
        registry if registry is not None else default_registry(),
        validate_options=validate_options,
        allow_imports=allow_imports,
    )
    runner = _Runner(
        exp,
        planned,
        run_id=run_id or new_run_id(),
        assigns=assigns,
        store=store,
        telemetry=tel.telemetry_for(tracer_provider, meter_provider),
        parent=tel.parent_context(parent),
        timeout=timeout,
        batch_id=batch_id,
        links=links,
    )
    token = _imports_allowed.set(allow_imports)
    try:
        return await runner.execute()
    finally:
        _imports_allowed.reset(token)
