"""A stage that declares no options refuses options given to it: typos never pass silently."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import structlog

import crucible.logging
from crucible import Context, Experiment, InvalidPipeline, Registry, StageDef, run, stage


@stage("noopts", description="Takes only the context", register=False)
async def noopts(ctx: Context) -> Context:
    return ctx.put_metric("ran", True)


@stage("free", description="Takes any options as a mapping", register=False)
async def free(ctx: Context, opts: dict[str, Any]) -> Context:
    return ctx.put_metric("keys", sorted(opts))


class Bare:
    """A class stage whose run() takes no options."""

    name = "bare_cls"
    description = "Class stage without options"

    async def run(self, ctx: Context) -> Context:
        return ctx.put_metric("bare", True)


REG = Registry([noopts, free, Bare])


def exp(*stages: StageDef) -> Experiment:
    return Experiment(id="noopts-exp", pipeline=list(stages))


async def test_options_given_to_a_stage_without_options_are_an_error_naming_stage_and_keys() -> (
    None
):
    bad = exp(
        StageDef(name="noopts", options={"typo_key": 1, "other": 2}),
        StageDef(name="bare_cls", options={"x": 1}),
    )
    with pytest.raises(InvalidPipeline) as info:
        await run(bad, registry=REG)
    where = {(p.stage_index, p.stage, p.path) for p in info.value.problems}
    assert where == {(0, "noopts", "typo_key"), (0, "noopts", "other"), (1, "bare_cls", "x")}
    text = str(info.value)
    assert "pipeline[0] (noopts) options.typo_key: unknown option" in text
    assert "stage 'noopts' takes no options" in text
    assert "stage 'bare_cls' takes no options" in text


async def test_no_options_or_empty_options_still_run_and_mapping_stages_take_any() -> None:
    ctx = await run(
        exp(
            StageDef(name="noopts"),
            StageDef(name="bare_cls", options={}),
            StageDef(name="free", options={"anything": 1, "goes": 2}),
        ),
        registry=REG,
    )
    assert ctx.completed_stages() == ["noopts", "bare_cls", "free"]
    assert ctx.get_metric("keys") == ["anything", "goes"]


def warnings_of(buf: io.StringIO) -> list[str]:
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    return [line["problem"] for line in lines if line["event"] == "invalid stage options"]


async def test_warn_logs_the_problem_and_off_ignores_it() -> None:
    bad = exp(StageDef(name="noopts", options={"typo_key": 1}))
    warned, ignored = io.StringIO(), io.StringIO()
    try:
        crucible.logging.configure(json=True, level="info", stream=warned)
        ctx = await run(bad, registry=REG, validate_options="warn")
        assert ctx.completed_stages() == ["noopts"]
        crucible.logging.configure(json=True, level="info", stream=ignored)
        ctx = await run(bad, registry=REG, validate_options="off")
        assert ctx.completed_stages() == ["noopts"]
    finally:
        structlog.reset_defaults()
    [problem] = warnings_of(warned)
    assert "pipeline[0] (noopts) options.typo_key" in problem and "takes no options" in problem
    assert warnings_of(ignored) == []
