"""Demo stages for the example service: sleep, log, tally assigns into metrics, fail on purpose.

They are small on purpose: each exercises one thing a service cares about (awaiting without
blocking the loop, log correlation, per-run isolation of assigns and metrics, failures).
"""

from __future__ import annotations

from numbers import Real

import anyio
import anyio.lowlevel
import structlog
from pydantic import BaseModel, ConfigDict, Field

from crucible import Context, Registry, stage

__all__ = ["STAGES", "demo_registry"]

_log = structlog.get_logger("examples.service_stages")
_STRICT = ConfigDict(extra="forbid")


class NapOptions(BaseModel):
    """How long ``nap`` sleeps."""

    model_config = _STRICT
    seconds: float = Field(default=0.01, ge=0, le=3600)


@stage(
    "nap", description="Sleep without blocking the event loop (stands in for I/O).", register=False
)
async def nap(ctx: Context, opts: NapOptions) -> Context:
    """Await ``anyio.sleep``; a cancelled request interrupts it."""
    await anyio.sleep(opts.seconds)
    return ctx.put_metric("napped_s", opts.seconds)


class ChatterOptions(BaseModel):
    """How many log lines ``chatter`` writes."""

    model_config = _STRICT
    lines: int = Field(default=3, ge=1, le=1000)


@stage(
    "chatter",
    description="Log a few structlog lines, yielding to other runs between them.",
    register=False,
)
async def chatter(ctx: Context, opts: ChatterOptions) -> Context:
    """Each line names the run it came from, so tests can spot lines attributed to another run."""
    for line in range(opts.lines):
        _log.info("chatter", line=line, seen_run_id=ctx.run_id, tag=ctx.assigns.get("tag"))
        await anyio.lowlevel.checkpoint()
    return ctx.put_metric("chatter_lines", opts.lines)


class TallyOptions(BaseModel):
    """The factor applied to the sum of ``assigns["numbers"]``."""

    model_config = _STRICT
    factor: float = 1.0


@stage(
    "tally", description="Metrics derived from the run's assigns (sum, count, tag).", register=False
)
async def tally(ctx: Context, opts: TallyOptions) -> Context:
    """Sum ``assigns["numbers"]`` times ``factor``; echo ``assigns["tag"]`` and the run id."""
    numbers = ctx.assigns.get("numbers", [])
    if not isinstance(numbers, list | tuple) or not all(
        isinstance(n, Real) and not isinstance(n, bool) for n in numbers
    ):
        raise TypeError("assigns['numbers'] must be a list of numbers")
    await anyio.lowlevel.checkpoint()  # another run may run here; its assigns must not leak
    return ctx.merge_metrics(
        {
            "count": len(numbers),
            "sum": opts.factor * float(sum(numbers)),
            "tag": ctx.assigns.get("tag"),
            "run_id": ctx.run_id,
        }
    )


class BoomOptions(BaseModel):
    """The message ``boom`` raises with."""

    model_config = _STRICT
    message: str = "boom"


@stage(
    "boom",
    description="Always raise RuntimeError (to show how a failed run is reported).",
    register=False,
)
async def boom(ctx: Context, opts: BoomOptions) -> Context:
    """Fail with ``RuntimeError(message)``."""
    raise RuntimeError(opts.message)


STAGES = (nap, chatter, tally, boom)


def demo_registry() -> Registry:
    """A fresh registry holding only the demo stages."""
    return Registry(STAGES)
