"""The ``validate`` stage: resolution, options, disabled stages, outputs, strict mode, metrics."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from crucible import Context, Experiment, OutputSpec, Registry, StageDef, StageFailed, run, stage
from crucible.registry import default_registry
from crucible.testing import SpanCapture, make_context
from stages.validate import (
    ValidateOptions,
    ValidationFailed,
    check_experiment,
    validate,
)


def exp(*stages: StageDef, outputs: list[OutputSpec] | None = None) -> Experiment:
    return Experiment(id="v", pipeline=list(stages), outputs=outputs)


async def check(experiment: Experiment, strict: bool = False) -> Context:
    """Call the stage directly on a context whose experiment has the problems under test."""
    out: Context = await validate(
        make_context(experiment=experiment), ValidateOptions(strict=strict)
    )
    return out


class ProbeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    strict: bool = False


# The engine refuses pipelines it cannot resolve, so to see what ``validate`` says about bad
# import paths inside a run that allows imports, this stage calls it on a different experiment.
PROBED: dict[str, Experiment] = {}


@stage("probe", description="Run validate on PROBED['exp'] inside this run", register=False)
async def probe(ctx: Context, opts: ProbeOptions) -> Context:
    out: Context = await validate(
        replace(ctx, experiment=PROBED["exp"]), ValidateOptions(strict=opts.strict)
    )
    return out


async def probe_run(experiment: Experiment, *, strict: bool = False) -> Context:
    PROBED["exp"] = experiment
    outer = Experiment(id="outer", pipeline=[StageDef(name="probe", options={"strict": strict})])
    return await run(outer, registry=Registry([probe]), allow_imports=True)


def warnings_of(ctx: Context) -> list[str]:
    metric: dict[str, Any] = ctx.metrics["validation"]
    assert metric["status"] == "warnings"
    return list(metric["warnings"])


async def test_registered_stages_pass_in_a_real_run() -> None:
    experiment = exp(
        StageDef(name="validate"),
        StageDef(name="data_checks", options={"fail_fast": True}),
        StageDef(name="guardrails"),
    )
    ctx = await run(experiment)
    assert ctx.metrics["validation"] == {"status": "passed"}
    assert ctx.stage_completed("validate")


async def test_explicit_existing_module_passes() -> None:
    experiment = exp(
        StageDef(name="validate"),
        StageDef(name="dc", module="stages.data_checks:data_checks"),
    )
    ctx = await run(experiment, allow_imports=True)
    assert ctx.metrics["validation"] == {"status": "passed"}


async def test_unregistered_name_is_a_warning_when_not_strict() -> None:
    ctx = await check(exp(StageDef(name="validate"), StageDef(name="nope_not_a_stage")))
    [warning] = warnings_of(ctx)
    assert "not registered" in warning
    assert "nope_not_a_stage" in warning and "pipeline[1]" in warning
    assert ctx.metrics["validation"]["skipped"] == []


async def test_unregistered_name_fails_when_strict() -> None:
    with pytest.raises(ValidationFailed) as info:
        await check(exp(StageDef(name="nope_not_a_stage")), strict=True)
    assert len(info.value.errors) == 1
    assert "not registered" in info.value.errors[0]
    assert info.value.problems[0].stage == "nope_not_a_stage"
    assert "not registered" in str(info.value)


async def test_strict_without_problems_passes() -> None:
    ctx = await check(exp(StageDef(name="validate"), StageDef(name="guardrails")), strict=True)
    assert ctx.metrics["validation"] == {"status": "passed"}


async def test_missing_module_cannot_be_loaded() -> None:
    bad = exp(StageDef(name="x", module="no_such_pkg_zz.mod:fn"))
    ctx = await probe_run(bad)
    [warning] = warnings_of(ctx)
    assert "cannot be loaded" in warning


async def test_object_that_is_not_a_stage_does_not_implement_run() -> None:
    bad = exp(StageDef(name="x", module="os:path"))
    ctx = await probe_run(bad)
    [warning] = warnings_of(ctx)
    assert "does not implement run" in warning


async def test_strict_failure_inside_a_run_is_stage_failed() -> None:
    bad = exp(StageDef(name="x", module="no_such_pkg_zz.mod:fn"))
    with pytest.raises(StageFailed) as info:
        await probe_run(bad, strict=True)
    assert isinstance(info.value.cause, ValidationFailed)
    assert "cannot be loaded" in info.value.cause.errors[0]


async def test_import_path_without_allow_imports_says_so() -> None:
    ctx = await check(exp(StageDef(name="dc", module="stages.data_checks:data_checks")))
    [warning] = warnings_of(ctx)
    assert "allow_imports=True" in warning


async def test_invalid_options_are_reported_with_their_path() -> None:
    experiment = exp(
        StageDef(name="data_checks", options={"fail_fast": "maybe", "bogus": 1}),
        StageDef(name="guardrails", options={"fail_on_violation": True}),
    )
    warnings = warnings_of(await check(experiment))
    assert len(warnings) == 2
    assert any("options.bogus" in w and "unknown option" in w for w in warnings)
    assert any("options.fail_fast" in w and "boolean" in w for w in warnings)
    assert all("(data_checks)" in w for w in warnings)


async def test_disabled_stages_are_skipped_not_warned() -> None:
    experiment = exp(
        StageDef(name="validate"),
        StageDef(name="nope_not_a_stage", enabled=False),
        StageDef(name="data_checks", options={"bogus": 1}, enabled=False),
    )
    ctx = await check(experiment, strict=True)
    metric = ctx.metrics["validation"]
    assert metric["status"] == "passed"
    assert len(metric["skipped"]) == 2
    assert "nope_not_a_stage" in metric["skipped"][0]


async def test_warnings_list_skipped_stages_too() -> None:
    experiment = exp(StageDef(name="off", enabled=False), StageDef(name="nope_not_a_stage"))
    metric = (await check(experiment)).metrics["validation"]
    assert metric["status"] == "warnings"
    assert len(metric["warnings"]) == 1
    assert len(metric["skipped"]) == 1 and "off" in metric["skipped"][0]


async def test_duplicate_stage_names_are_fine() -> None:
    experiment = exp(StageDef(name="guardrails"), StageDef(name="guardrails"))
    assert (await check(experiment)).metrics["validation"] == {"status": "passed"}


async def test_outputs_formats_sinks_and_duplicate_names() -> None:
    outputs = [
        OutputSpec(name="r", formats=["markdown", "json", "html"], sink="file"),
        OutputSpec(name="r", formats=["pdf"], sink="s3"),
        OutputSpec(name="empty", formats=[], sink="stdout"),
    ]
    warnings = warnings_of(await check(exp(StageDef(name="validate"), outputs=outputs)))
    assert len(warnings) == 4
    assert any("duplicate output name 'r'" in w for w in warnings)
    assert any("unknown format 'pdf'" in w for w in warnings)
    assert any("unknown sink 's3'" in w for w in warnings)
    assert any("outputs[2] (empty): no formats" in w for w in warnings)


async def test_good_outputs_pass() -> None:
    outputs = [OutputSpec(name="a"), OutputSpec(name="b", formats=["json"], sink="stdout")]
    ctx = await check(exp(StageDef(name="validate"), outputs=outputs), strict=True)
    assert ctx.metrics["validation"] == {"status": "passed"}


async def test_records_a_span_event(spans: SpanCapture) -> None:
    experiment = exp(StageDef(name="validate"), StageDef(name="off", enabled=False))
    ctx = await run(experiment, tracer_provider=spans.provider)
    [event] = spans.one("stage validate").events
    assert event.name == "validation.checked"
    assert event.attributes is not None
    assert dict(event.attributes) == {"stages": 2, "warnings": 0, "skipped": 1}
    assert ctx.trace is not None and ctx.trace.spans[0].events[0].name == "validation.checked"


async def test_unknown_option_on_validate_itself_is_refused_before_running() -> None:
    from crucible import InvalidPipeline

    with pytest.raises(InvalidPipeline, match="strictt"):
        await run(exp(StageDef(name="validate", options={"strictt": True})))


def test_broken_entry_point_is_reported_as_cannot_be_loaded() -> None:
    registry = Registry()
    registry.discovery_errors.append("entry point broken = pkg.mod:fn: ImportError: boom")
    report = check_experiment(exp(StageDef(name="broken")), registry=registry)
    [problem] = report.problems
    assert "cannot be loaded" in str(problem) and "boom" in str(problem)


def test_validate_is_found_in_the_default_registry() -> None:
    assert default_registry().get("validate").call is validate
