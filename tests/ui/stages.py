"""Test stages for the run browser's tests: a sweep's scoring stage, a flaky one, a failing one,
one that writes a report, and one that waits until the test creates a file."""

from __future__ import annotations

import anyio
from pydantic import BaseModel, ConfigDict

from crucible import Context, Experiment, Registry, StageDef
from crucible.stage import stage


class ScoreOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float = 0.1
    depth: int = 1
    kind: str = "plain"


@stage(
    "ui_score",
    description="Score a matrix point: higher alpha and depth score more",
    register=False,
)
async def score(ctx: Context, opts: ScoreOptions) -> Context:
    value = round(opts.alpha * 10 + opts.depth * 0.5 + (0.25 if opts.kind == "fancy" else 0), 6)
    return ctx.merge_metrics(
        {"score": value, "loss": round(1 / (1 + value), 6), "eval": {"accuracy": 0.5 + value / 20}}
    )


class FlakyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fail_times: int = 1


_FLAKY_CALLS: dict[str, int] = {}


@stage("ui_flaky", description="Fail the first fail_times attempts of a run", register=False)
async def flaky(ctx: Context, opts: FlakyOptions) -> Context:
    trace_id = ctx.telemetry_context["traceparent"].split("-")[1]
    run = f"{trace_id}/{ctx.run_id}"  # unique even when a test reuses a run id
    calls = _FLAKY_CALLS.get(run, 0) + 1
    _FLAKY_CALLS[run] = calls
    await anyio.sleep(0.02)
    if calls <= opts.fail_times:
        raise RuntimeError(f"flaky attempt {calls}")
    return ctx.put_metric("flaky_calls", calls)


class BoomOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = "boom"


@stage("ui_boom", description="Raise ValueError(message)", register=False)
async def boom(ctx: Context, opts: BoomOptions) -> Context:
    raise ValueError(opts.message)


class ReportOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str


@stage("ui_report", description="Write a small HTML report and record it", register=False)
async def report(ctx: Context, opts: ReportOptions) -> Context:
    target = anyio.Path(opts.path)
    await target.parent.mkdir(parents=True, exist_ok=True)
    await target.write_text(f"<h1>Report of {ctx.run_id}</h1>", encoding="utf-8")
    return ctx.put_artifact("report.html", {"location": opts.path, "format": "html"})


class WaitOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flag: str


@stage("ui_wait", description="Wait until the file named by flag exists", register=False)
async def wait(ctx: Context, opts: WaitOptions) -> Context:
    flag = anyio.Path(opts.flag)  # a file works across threads and processes alike
    while not await flag.exists():  # noqa: ASYNC110 (the file is set from another thread)
        await anyio.sleep(0.05)
    return ctx.put_metric("waited", True)


class NamedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    value: float = 1.0


@stage("ui_named", description="Put one metric under any name", register=False)
async def named(ctx: Context, opts: NamedOptions) -> Context:
    return ctx.put_metric(opts.name, opts.value)


REGISTRY = Registry([score, flaky, boom, report, wait, named])


def sweep_experiment(exp_id: str = "sweep") -> Experiment:
    """Two stages; the matrix varies alpha, depth and (optionally) kind of ``ui_score``."""
    return Experiment(
        id=exp_id,
        pipeline=[StageDef(name="ui_flaky", options={"fail_times": 0}), StageDef(name="ui_score")],
    )
