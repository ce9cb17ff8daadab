"""Small stages the CLI tests load by import path (``module: tests.cli_stages:...``) or plugin."""

from __future__ import annotations

import os

import anyio
from pydantic import BaseModel, ConfigDict, Field, model_validator

from crucible.context import Context
from crucible.stage import stage


class OkOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(default=1, description="How many things were counted.")
    label: str = "plain"
    fields: list[str] = Field(default_factory=list)


class NeedsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(description="Required threshold.")


@stage(
    "cli_ok", description="Record its options as metrics and write a small report", register=False
)
async def ok_stage(ctx: Context, opts: OkOptions) -> Context:
    out = anyio.Path("out")
    await out.mkdir(exist_ok=True)
    report = out / f"{ctx.run_id}.txt"
    await report.write_text(f"count={opts.count}\n", encoding="utf-8")
    ctx = ctx.merge_metrics(
        {"count": opts.count, "label": opts.label, "fields": list(opts.fields)}
    ).put_metric("nested", {"inner": {"depth": 2}, "flag": True})
    return ctx.put_artifact("cli_report", {"location": str(report), "format": "text"})


@stage("cli_fail", description="Always raises ValueError('boom')", register=False)
async def fail_stage(ctx: Context) -> Context:
    raise ValueError("boom")


@stage("cli_needs", description="Needs a threshold option", register=False)
async def needs_stage(ctx: Context, opts: NeedsOptions) -> Context:
    return ctx.put_metric("threshold", opts.threshold)


@stage("cli_slow", description="Writes a 'started' marker, then sleeps a minute", register=False)
async def slow_stage(ctx: Context) -> Context:
    await anyio.Path("started").write_text(str(os.getpid()), encoding="utf-8")
    await anyio.sleep(60)
    return ctx


class GridOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    x: int = 0
    y: str = ""
    fail_on: list[str] = Field(default_factory=list, description="'x/y' points that raise.")


@stage("cli_grid", description="Record x and y; raise for the points in fail_on", register=False)
async def grid_stage(ctx: Context, opts: GridOptions) -> Context:
    await anyio.sleep(0.05)
    if f"{opts.x}/{opts.y}" in opts.fail_on:
        raise ValueError(f"grid point {opts.x}/{opts.y} fails")
    return ctx.merge_metrics({"x": opts.x, "y": opts.y, "score": opts.x * len(opts.y)})


class KeyedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_key: str = Field(default="", description="A secret: redacted in the store.")
    scale: float = 1.0


async def _count_run(name: str) -> None:
    """One line per call in ``NAME.runs`` in the working directory (how often a stage ran)."""
    async with await anyio.open_file(f"{name}.runs", "a", encoding="utf-8") as fh:
        await fh.write("run\n")


@stage("cli_keyed", description="Needs an sk- API key; records its scale", register=False)
async def keyed_stage(ctx: Context, opts: KeyedOptions) -> Context:
    await _count_run("cli_keyed")
    if not opts.api_key.startswith("sk-"):
        raise ValueError("cli_keyed needs an api_key starting with sk-")
    return ctx.put_metric("scale", opts.scale).assign(shape=(2, 3))


class FlakyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fail: bool = True


@stage("cli_flaky", description="Raises while its fail option is true", register=False)
async def flaky_stage(ctx: Context, opts: FlakyOptions) -> Context:
    await _count_run("cli_flaky")
    if opts.fail:
        raise RuntimeError("cli_flaky is failing")
    assert ctx.assigns["shape"] == (2, 3)  # what cli_keyed left, restored on resume
    return ctx.put_metric("flaky_ok", True).put_metric("scaled", ctx.metrics["scale"] * 10)


@stage("cli_vanish", description="Deletes the run store's SQLite file mid-run", register=False)
async def vanish_stage(ctx: Context) -> Context:
    for suffix in ("", "-wal", "-shm"):
        await anyio.Path(f".crucible/runs.db{suffix}").unlink(missing_ok=True)
    return ctx.put_metric("vanished", True)


class RangeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lo: int = 0
    hi: int = 1

    @model_validator(mode="after")
    def _ordered(self) -> RangeOptions:
        if self.lo >= self.hi:  # the options depend on each other: only some pairs are bad
            raise ValueError(f"lo ({self.lo}) must be below hi ({self.hi})")
        return self


@stage("cli_range", description="Record the span of a lo..hi range", register=False)
async def range_stage(ctx: Context, opts: RangeOptions) -> Context:
    return ctx.put_metric("span", opts.hi - opts.lo)
