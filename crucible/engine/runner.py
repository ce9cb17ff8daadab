"""Execute a planned pipeline: a run span, a span per stage attempt, observers between awaits."""

from __future__ import annotations

import datetime as dt
import inspect
import math
import time
from collections.abc import Sequence
from typing import Any, Final

import anyio
import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from crucible import scrub
from crucible.context import Context
from crucible.engine import _fast
from crucible.engine.attempt import (
    CANCELLED,
    NotAContext,
    backoff,
    close_span,
    failed_context,
    result_for,
    skip_span,
)
from crucible.engine.attempt import call as call_stage
from crucible.engine.guard import NO_STAGE, engine_failure
from crucible.engine.plan import PlannedStage, for_run, plan_facts, plan_secrets
from crucible.engine.resume import ResumePoint
from crucible.errors import StageError, StageFailed
from crucible.experiment import Experiment
from crucible.logging import run_context
from crucible.observers import (
    AttemptStart,
    Checkpoint,
    LiveRun,
    Observers,
    RunEnd,
    RunStart,
    fire,
    fire_strict,
    notify,
    notify_shielded,
)
from crucible.provenance import cached_provenance, provenance_for
from crucible.status import RunStatus, pipeline_result, status_for_result
from crucible.telemetry import attributes as span_attrs
from crucible.telemetry import conventions as names
from crucible.telemetry import spans as tel
from crucible.telemetry.carrier import StageCarriers
from crucible.trace import SpanRecord, StageResult

_log = structlog.get_logger("crucible.engine")
_now, _UTC = dt.datetime.now, dt.UTC
_INF = math.inf
# RunStart, AttemptStart and RunEnd filled without their generated ``__new__`` (a Python call,
# made per run and per attempt); the builders below pass every field, in order.
_tuple_new: Final = tuple.__new__
if (len(RunStart._fields), len(AttemptStart._fields), len(RunEnd._fields)) != (16, 7, 6):
    raise ImportError(
        "crucible.engine.runner: the observer records' fields changed"
    )  # pragma: no cover


class Runner:
    """State of one run; ``execute`` drives the stages and tells the observers."""

    def __init__(
        self,
        experiment: Experiment,
        planned: Sequence[PlannedStage],
        *,
        run_id: str,
        assigns: Any,
        observers: Observers,
        telemetry: tel.Telemetry,
        parent: otel_context.Context | None,
        timeout: float | None,
        batch_id: str | None,
        links: Sequence[Link],
        url: str | None,
        rerun_of: str | None = None,
        resume_from: ResumePoint | None = None,
    ) -> None:
        self.experiment = experiment
        self.planned = planned
        self.run_id = run_id
        self.assigns = assigns
        self.obs = observers
        self.tel = telemetry
        self.parent = parent
        self.timeout = timeout
        self.batch_id = batch_id
        self.links = links
        self.url = url
        self.rerun_of = rerun_of
        self.resume_from = resume_from
        self.trace_id = ""
        self.carriers: StageCarriers | None = None
        self.run_start: RunStart | None = None
        self.live = LiveRun() if observers else None
        self.cancelled_at: StageFailed | None = None
        self.escaped_at: StageFailed | None = None  # the attempt SystemExit & co. escaped from
        self.scrubber = scrub.NO_SECRETS
        self.run_span: Span = trace.INVALID_SPAN
        self._log: Any = None

    @property
    def log(self) -> Any:
        """A logger bound to this run (made on first use: most runs never log)."""
        if self._log is None:
            self._log = _log.bind(experiment_id=self.experiment.id, run_id=self.run_id)
        return self._log

    async def execute(self) -> Context:
        """Run the stages with the run's secrets scrubbed from what it emits (crucible.scrub)."""
        secrets = plan_secrets(self.planned) | scrub.definition_secrets(self.experiment)
        self.scrubber = scrub.for_run(secrets, self.assigns)
        # The plan's span attributes, scrubbed of what this run adds (its assigns', the
        # environment's secrets) when any of that occurs in them: once per run, not per attempt.
        self.planned = for_run(self.planned, self.scrubber)
        # Active even when empty: the run's sinks then ask a context variable, not the environment.
        token = scrub.activate(self.scrubber)
        try:
            return await self._execute()
        finally:
            scrub.deactivate(token)

    async def _execute(self) -> Context:
        exp = self.experiment
        resume = self.resume_from
        attrs = span_attrs.run_attributes(
            exp.id, self.run_id, len(self.planned), batch_id=self.batch_id,
            rerun_of=self.rerun_of, resumed_from=None if resume is None else resume.run_id,
        )  # fmt: skip
        if self.scrubber:  # ids and names chosen by the caller
            attrs = self.scrubber.value(attrs)
        origins, infos = plan_facts(self.planned)
        origin = cached_provenance(origins)
        if origin is None:
            origin = await provenance_for(origins)
        spans = self.tel.spans
        run_name = names.run_span_name(exp.id)
        if self.scrubber:
            run_name = self.scrubber.text(run_name)
        run_span = spans.start(run_name, self.parent, SpanKind.SERVER, attrs, self.links)
        self.run_span = run_span
        run_otel_ctx = trace.set_span_in_context(run_span, self.parent)
        trace_id, run_span_id = tel.hex_ids(run_span)
        self.trace_id = trace_id
        carriers = self.carriers = StageCarriers(run_span, run_otel_ctx)
        run_trace = _fast.start_trace(trace_id, run_span_id)
        if resume is None:
            ctx = _fast.start_context(
                exp, self.run_id, assigns=self.assigns, trace=run_trace,
                telemetry_context=carriers.run,
            )  # fmt: skip
        else:
            ctx = resume.context(exp, self.run_id, run_trace, carriers.run)
        git = origin.git
        start = self.run_start = _tuple_new(RunStart, (
            exp, self.run_id, trace_id, run_span_id, self.batch_id, infos, _now(_UTC), self.url,
            self.live, self.assigns, origin.versions, git.commit if git else None,
            git.dirty if git else None, self.rerun_of, None if resume is None else resume.run_id,
            tel.exporting(self.tel) and run_span.get_span_context().trace_flags.sampled,
        ))  # fmt: skip
        metrics_on = self.tel.metrics_enabled
        shown_id = self.scrubber.text(exp.id)  # ids the caller chose may hold a secret
        metric_attrs = (
            {names.PIPELINE_NAME: shown_id, names.PIPELINE_RUN_STATE: names.STATE_EXECUTING}
            if metrics_on
            else {}
        )
        ins = self.tel.instruments
        if self.obs.on_run_start:
            try:
                pending = fire_strict(self.obs.on_run_start, run=start)
                if pending is not None:
                    await pending
            except BaseException as err:
                cancelled_now = isinstance(err, anyio.get_cancelled_exc_class())
                why = self.scrubber.text("cancelled as it started" if cancelled_now
                       else f"refused by an observer: {type(err).__name__}: {err}")  # fmt: skip
                run_span.set_status(Status(StatusCode.ERROR, why))
                spans.finish(run_span, span_attrs.run_end_attributes(
                    names.RESULT_CANCELLATION if cancelled_now else None, err))  # fmt: skip
                await notify_shielded(self.obs.on_run_end, run=RunEnd(
                    start, RunStatus.CANCELLED if cancelled_now else RunStatus.FAILED, None,
                    None, dt.datetime.now(dt.UTC), message=why,
                ))  # fmt: skip
                raise
        if metrics_on:
            ins.run_active.add(1, metric_attrs)
        started = time.perf_counter()
        token = otel_context.attach(run_otel_ctx)
        status = RunStatus.COMPLETED
        failure: StageFailed | None = None
        cancelled: BaseException | None = None
        escaped: BaseException | None = None  # SystemExit, KeyboardInterrupt: re-raised at the end
        current = NO_STAGE
        log_token = run_context.set((exp.id, self.run_id, None))
        try:
            deadline = math.inf if self.timeout is None else anyio.current_time() + self.timeout
            first = 0 if resume is None else resume.start
            keep = exp.checkpoint and bool(self.obs.on_checkpoint)
            for step in self.planned:
                current = step.name
                if step.index < first:  # completed by the run this one resumes
                    ctx = await self._skip(ctx, step, run_otel_ctx, run_span_id, restored=True)
                    if keep and step.index == first - 1:
                        await self._checkpoint(ctx, step)
                    continue
                ctx = await self._run_step(ctx, step, run_otel_ctx, run_span_id, deadline)
                if keep and step.spec is not None:
                    await self._checkpoint(ctx, step)
            current = NO_STAGE
            ctx = ctx._evolve(telemetry_context=carriers.run)
        except StageFailed as err:
            failure = err
            status = status_for_result(err.result)
        except anyio.get_cancelled_exc_class() as err:
            cancelled = err  # re-raised below, after the spans and the observers are done
            status = RunStatus.CANCELLED
        except GeneratorExit:
            raise  # the coroutine is being closed: nothing may be awaited any more
        except BaseException as err:
            # The engine failed (or SystemExit, KeyboardInterrupt escaped a stage): the run
            # still ends failed, recorded; an Exception is raised as that StageFailed.
            failure = self.escaped_at or self._engine_failure(current, err, ctx)
            escaped = None if isinstance(err, Exception) else err
            status = RunStatus.FAILED
        finally:
            run_context.reset(log_token)
            otel_context.detach(token)
        result = pipeline_result(status, failure.result if failure is not None else None)
        cause = failure.cause if failure is not None else cancelled
        if cause is not None:
            desc = str(failure) if failure is not None else "run cancelled"
            run_span.set_status(Status(StatusCode.ERROR, self.scrubber.text(desc)))
            if metrics_on:
                ins.run_errors.add(
                    1, {names.PIPELINE_NAME: shown_id, names.ERROR_TYPE: type(cause).__qualname__}
                )
        spans.finish(run_span, span_attrs.run_end_attributes(result, cause))
        if metrics_on:
            ins.run_active.add(-1, metric_attrs)
            ins.run_duration.record(
                time.perf_counter() - started, {**metric_attrs, names.PIPELINE_RESULT: result}
            )
        final = failure.context if failure is not None and failure.context is not None else ctx
        reported = failure
        if cancelled is not None and self.cancelled_at is not None:
            reported = self.cancelled_at
            final = self.cancelled_at.context or ctx
        if self.obs.on_run_end:
            end = _tuple_new(RunEnd, (start, status, final, reported, _now(_UTC), None))
            pending = fire(self.obs.on_run_end, run=end)
            if pending is not None:
                with anyio.CancelScope(shield=True):
                    await pending
        if cancelled is not None:
            raise cancelled
        if escaped is not None:
            raise escaped
        if failure is not None:
            raise failure
        return ctx

    def _engine_failure(self, stage: str, err: BaseException, ctx: Context) -> StageFailed:
        """The failure ending a run whose engine raised ``err`` in ``stage``, logged."""
        failed = engine_failure(stage, err, ctx, self.scrubber)
        self.log.error(
            "engine error; the run ends failed", stage=stage, error=str(failed.cause),
            error_type=type(failed.cause).__qualname__, trace_id=self.trace_id,
            exc_info=failed.cause,
        )  # fmt: skip
        return failed

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
            try:
                ctx, outcome = await self._attempt(
                    ctx, step, attempt, run_otel_ctx, run_span_id, deadline
                )
                if outcome is None:
                    return ctx
                if attempt == attempts or outcome.result == "cancellation":
                    raise outcome
                if outcome.result == "timeout" and anyio.current_time() >= deadline:
                    raise outcome  # the run's own deadline passed: retrying cannot help
                delay = backoff(sd.retry_backoff, attempt)
                if anyio.current_time() + delay >= deadline:
                    raise outcome
                self._retrying(ctx, step, attempt, outcome, delay)
            except Exception as err:
                if isinstance(err, StageFailed):
                    raise
                # Kept here, not in execute(): ``ctx`` holds the attempts made so far.
                raise self._engine_failure(sd.name, err, ctx) from err
            await anyio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _retrying(
        self, ctx: Context, step: PlannedStage, attempt: int, outcome: StageFailed, delay: float
    ) -> None:
        failed_span = ctx.trace.spans[-1].span_id if ctx.trace and ctx.trace.spans else None
        self.log.warning(
            "stage attempt failed; retrying", stage=step.name, attempt=attempt,
            error=str(outcome.cause), retry_in_s=round(delay, 3), trace_id=self.trace_id,
            span_id=failed_span,
        )  # fmt: skip

    async def _checkpoint(self, ctx: Context, step: PlannedStage) -> None:
        assert self.run_start is not None
        point = Checkpoint(self.run_start, step.name, step.index, ctx)
        await notify(self.obs.on_checkpoint, checkpoint=point)

    async def _skip(
        self,
        ctx: Context,
        step: PlannedStage,
        run_otel_ctx: otel_context.Context,
        parent: str,
        *,
        restored: bool = False,
    ) -> Context:
        """A stage that does not run here: disabled, or ``restored`` from the resumed run."""
        record = skip_span(self.tel.spans, step, self.run_span, run_otel_ctx, parent, restored)
        if self.obs.on_attempt_start or self.obs.on_attempt_end:
            attempt = self._attempt_start(step, 0, record.span_id, record.start_ns)
            await notify(self.obs.on_attempt_start, attempt=attempt)
            await notify(self.obs.on_attempt_end, attempt=attempt, record=record)
        assert ctx.trace is not None
        return ctx._evolve(trace=ctx.trace.with_span(record))

    def _attempt_start(
        self, step: PlannedStage, attempt: int, span_id: str, t: int
    ) -> AttemptStart:
        assert self.run_start is not None
        return AttemptStart(self.run_start, step.name, step.index, attempt, span_id, t,
                            self.trace_id)  # fmt: skip

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
        assert spec is not None and ctx.trace is not None and self.carriers is not None
        name = sd.name
        attrs = (
            step.first_attempt_attributes
            if attempt == 1
            else span_attrs.attempt_attributes(step.span_attributes, attempt)
        )
        spans = self.tel.spans
        span = spans.start_child(step.span_name, self.run_span, run_otel_ctx, attrs)
        span_id = f"{span.get_span_context().span_id:016x}"
        stage_otel_ctx = trace.set_span_in_context(span, run_otel_ctx)
        base_trace = ctx.trace
        if base_trace.pending_events:
            base_trace, _ = base_trace.take_events()
        stage_in = _fast.with_run_state(
            ctx, base_trace, self.carriers.for_stage(span, span_id), ctx.assigns
        )
        metrics_on = self.tel.metrics_enabled
        t0 = time.perf_counter() if metrics_on else 0.0
        t0_ns = time.time_ns()
        watched: AttemptStart | None = None
        live = self.live
        if live is not None:
            assert self.run_start is not None
            watched = live.attempt = _tuple_new(AttemptStart, (
                self.run_start, name, step.index, attempt, span_id, t0_ns, self.trace_id
            ))  # fmt: skip
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
            if watched is not None and self.obs.on_attempt_start:
                pending = fire(self.obs.on_attempt_start, attempt=watched)
                if pending is not None:
                    await pending
            if spec.is_async:
                call = (
                    spec.call(stage_in, step.options) if spec.takes_options else spec.call(stage_in)
                )
            else:
                call = call_stage(spec, stage_in, step.options)
            if stage_deadline == _INF:
                out = await call
            else:
                with anyio.CancelScope(deadline=stage_deadline) as scope:
                    out = await call
                if scope.cancelled_caught:
                    by_stage = stage_deadline < run_deadline
                    limit = sd.timeout if by_stage else self.timeout
                    which = "stage" if by_stage else "run"
                    error = TimeoutError(f"{which} timeout of {limit}s exceeded in stage {name!r}")
                    result = "timeout"
            if type(out) is not Context and error is None:
                if inspect.isawaitable(out):
                    out = await out
                if not isinstance(out, Context):
                    error = NotAContext(
                        f"stage {name!r} returned {type(out).__qualname__}, expected a Context"
                    )
                    result = "error"
        except anyio.get_cancelled_exc_class() as exc:
            # Recorded with a plain message: the library's names a cancel scope and a task.
            cancel_exc, error = exc, type(exc)(CANCELLED)
            result = "cancellation"
        except Exception as exc:
            error = exc
            result = result_for(exc)
        except GeneratorExit:
            raise
        except BaseException as exc:  # SystemExit, KeyboardInterrupt: recorded, then re-raised
            cancel_exc = error = exc
            result = "error"
        finally:
            run_context.reset(log_token)
            otel_context.detach(token)
            if live is not None:
                live.attempt = None
        # What the stage left behind: its output, or the Context a StageError carried.
        left = out if error is None else (error.context if isinstance(error, StageError) else None)
        url = None if self.url is None else self.scrubber.text(self._url_for(span_id))
        events, trace_after = close_span(
            span, spans, self.scrubber, step, attrs, left, error, result, (span_id, url)
        )
        if metrics_on:
            stage_attrs = self.scrubber.value(step.metric_attributes)
            self.tel.instruments.stage_duration.record(
                time.perf_counter() - t0,
                stage_attrs if error is None else {**stage_attrs, names.TASK_RUN_RESULT: result},
            )
        start, end = tel.span_times(span, t0_ns)
        record = SpanRecord(
            step.span_name, name, span_id, parent_span_id, start, end, result, attempt,
            None if error is None else type(error).__qualname__,
            None if error is None else self.scrubber.text(str(error)),
            events, step.index,
        )  # fmt: skip
        if watched is not None and self.obs.on_attempt_end:
            if cancel_exc is None:
                pending = fire(self.obs.on_attempt_end, attempt=watched, record=record)
                if pending is not None:
                    await pending
            else:  # cancelled: still record it
                await notify_shielded(self.obs.on_attempt_end, attempt=watched, record=record)
        if error is None:
            return _fast.completed(out, name, (trace_after or base_trace).with_span(record)), None
        kept = failed_context(ctx, left, trace_after or base_trace, record, self.carriers.run)
        failed = StageFailed(name, error, kept, result=result)
        if self.scrubber:  # also for an error whose str does not come from its args
            failed.args = (self.scrubber.text(str(failed)),)
        if cancel_exc is not None:
            # Record what happened, then let cancellation propagate: it is never swallowed.
            if result == "cancellation":
                self.cancelled_at = failed
            else:
                self.escaped_at = failed
            raise cancel_exc
        self.log.warning(
            "stage failed", stage=name, attempt=attempt, result=result,
            error=f"{type(error).__name__}: {error}", trace_id=self.trace_id, span_id=span_id,
        )  # fmt: skip
        return kept, failed

    def _url_for(self, span_id: str) -> str:
        assert self.url is not None
        return self.url.format(run_id=self.run_id, trace_id=self.trace_id, span_id=span_id)
