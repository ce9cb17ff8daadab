"""Stages whose metrics, artifacts and errors carry terminal escapes, bidi overrides and rich
markup: what an untrusted client of a service could make a run store hold."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from crucible.context import Context
from crucible.stage import stage

EXPERIMENT_ID = "ansi\u001b[2J\u001b]0;PWNED\u0007\u001b[31mRED"
MESSAGE = (
    "boom\u001b[2J \u001b]8;;http://evil.example/\u001b\\click here\u001b]8;;\u001b\\ "
    "[bold red]loud[/] [link=http://evil.example/]link[/link]\r\n"
    "status: completed \u202eevil\u202c \u009b31m c1 \u007f del"
)
METRIC = "score\u001b[5m\u2066"
VALUE = "v\u001b[31m[bold]x[/bold]\u202e"
ARTIFACT = "report\u001b]0;T\u0007"


class FailOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tag: str = "-"


@stage("hostile_metrics", description="Record hostile metric names and values", register=False)
async def hostile_metrics(ctx: Context) -> Context:
    ctx = ctx.put_metric(METRIC, VALUE).put_metric("plain", 1.5)
    return ctx.put_artifact(ARTIFACT, {"location": "out/x\u001b[2J.txt", "format": "te\u0007xt"})


@stage("hostile_fail", description="Raise ValueError with a hostile message", register=False)
async def hostile_fail(ctx: Context, opts: FailOptions) -> Context:
    raise ValueError(MESSAGE)
