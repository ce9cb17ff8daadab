"""Stages that try to leak their secrets through every channel a stage has (scrubbing tests)."""

from __future__ import annotations

import os

import structlog
from opentelemetry import trace
from pydantic import BaseModel, SecretStr

from crucible.context import Context
from crucible.stage import stage


class LeakOptions(BaseModel):
    api_key: str  # secret by its key
    conn: SecretStr  # secret by its type, under an ordinary key
    note: str = ""


def _secrets(ctx: Context, opts: LeakOptions) -> str:
    env = os.environ.get("LEAKY_SERVICE_TOKEN", "")
    assigned = str(ctx.assigns.get("password", ""))
    return f"{opts.api_key}|{opts.conn.get_secret_value()}|{env}|{assigned}"


@stage("leak_everything", description="Put its secrets in logs, events, metrics, outputs.",
       register=False)  # fmt: skip
async def leak_everything(ctx: Context, opts: LeakOptions) -> Context:
    said = _secrets(ctx, opts)
    structlog.get_logger("leaky").warning(f"connecting with {said}", detail=said)
    span = trace.get_current_span()  # the engine's stage span, reached through the API
    span.set_attribute("leaky.said", said)
    span.set_attributes({f"leaky.{said}": 1, "leaky.list": [said, "plain"]})
    span.add_event(f"connected {said}", {"leaky.detail": said})
    span.update_name(f"leak_everything {said}")
    return (
        ctx.record_event("login", detail=f"signed in with {said}")
        .put_metric("echo", f"used {said}")
        .add_output({"said": said})
    )


@stage("leak_in_error", description="Fail with its secrets in the message.", register=False)
async def leak_in_error(ctx: Context, opts: LeakOptions) -> Context:
    raise RuntimeError(f"upstream refused password={_secrets(ctx, opts)}")
