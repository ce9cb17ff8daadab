"""A run's whole scrubber (environment, assigns, experiment) covers every span attribute the
engine exports, while the plan's precomputed attributes are reused when it adds nothing."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
import structlog
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import crucible
from crucible import logging as crucible_logging
from crucible.engine.plan import plan
from crucible.scrub import Scrubber
from crucible.telemetry import conventions as names
from crucible.testing.otlp import OtlpHttpReceiver

pytestmark = [pytest.mark.otlp]

ENV = "envSPAN-secret-1111"  # a secret-named environment variable's value
ASSIGNED = "assignSPAN-secret-2222"  # an assign under a secret key
URL_PASSWORD = "urlSPAN-secret-3333"  # the password of a URL in a backend option
SECRETS = (ENV, ASSIGNED, URL_PASSWORD)


@crucible.stage("echo_opts", description="Record its options on an event.", register=False)
async def echo_opts(ctx: crucible.Context, opts: dict[str, Any]) -> crucible.Context:
    return ctx.record_event(f"saw {ENV}", detail=f"target {ENV} {ASSIGNED}", api_key="kept-out",
                            **{f"n_{ASSIGNED}": 1})  # fmt: skip


@crucible.stage("fails_once", description="Fail, naming the secrets.", register=False)
async def fails_once(ctx: crucible.Context, opts: dict[str, Any]) -> crucible.Context:
    raise RuntimeError(f"refused {ENV} {ASSIGNED} {URL_PASSWORD}")


def experiment() -> crucible.Experiment:
    def options(label: str) -> dict[str, str]:
        return {"note": "plain-visible-note", "target": f"https://h/{ENV}", "label": label}

    return crucible.Experiment.model_validate({
        "id": f"spans-{ENV}",  # an id may hold a secret too: the run span is named after it
        "backend": {"id": "b", "options": {"url": f"https://u:{URL_PASSWORD}@example.com/"}},
        "pipeline": [
            {"name": "echo_opts", "options": options(f"x-{ASSIGNED}")},
            {"name": "echo_opts", "enabled": False, "options": options(URL_PASSWORD)},
            {"name": "fails_once", "retries": 1, "retry_backoff": 0, "options": options("y")},
        ],
    })  # fmt: skip


async def test_no_secret_reaches_an_exported_span_and_plain_options_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPANTEST_SERVICE_TOKEN", ENV)
    registry = crucible.Registry([echo_opts, fails_once])
    exp = experiment()
    with OtlpHttpReceiver() as receiver:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
            endpoint=receiver.traces_endpoint)))  # fmt: skip
        try:
            with pytest.raises(crucible.StageFailed):
                await crucible.run(exp, registry=registry, tracer_provider=provider,
                                   assigns={"password": ASSIGNED},
                                   url=f"https://ci.example/{{run_id}}?k={ENV}")  # fmt: skip
            spans = receiver.wait_for_spans(5)  # run, echo, skipped, two failed attempts
            wire = b"".join(r.SerializeToString() for r in receiver.requests)
            receiver.clear()
            with pytest.raises(crucible.StageFailed):  # the same plan, without the assign
                await crucible.run(exp, registry=registry, tracer_provider=provider)
            again = receiver.wait_for_spans(5)
        finally:
            provider.shutdown()
    assert wire and not [s for s in SECRETS if s.encode() in wire]
    stages = [s for s in spans if s.name.startswith("stage ")]
    assert len(stages) == 4 and all(
        "plain-visible-note" in s.attributes[names.STAGE_OPTIONS] for s in stages
    )
    first = stages[0]
    assert first.attributes[names.STAGE_OPTIONS] == (
        '{"label": "x-[REDACTED]", "note": "plain-visible-note", "target": "https://h/[REDACTED]"}'
    )
    assert first.events[0].name == "saw [REDACTED]"
    assert first.events[0].attributes == {
        "detail": "target [REDACTED] [REDACTED]", "api_key": "[REDACTED]",
        "n_[REDACTED]": "[REDACTED]",  # its name holds the secret: scrubbed, and looks secret
    }  # fmt: skip
    assert [s.attributes.get(names.STAGE_ATTEMPT) for s in stages[2:]] == [1, 2]
    assert all("[REDACTED]" in s.status_message for s in stages[2:])
    ran = [stages[0], *stages[2:]]  # the skipped stage has no run URL
    assert all(s.attributes[names.TASK_RUN_URL].endswith("?k=[REDACTED]") for s in ran)
    assert stages[1].attributes[names.STAGE_OPTIONS].startswith('{"label": "[REDACTED]"')
    # Without the assign, its value is an ordinary string again: the first run's scrubbing
    # did not change the plan's attributes, and the environment's secret is still scrubbed.
    again_first = next(s for s in again if s.name == "stage echo_opts")
    assert f"x-{ASSIGNED}" in again_first.attributes[names.STAGE_OPTIONS]
    assert not [s for s in again if ENV in str(s.attributes) + s.status_message]


def test_the_plan_is_reused_when_the_run_adds_no_secret_found_in_it() -> None:
    exp = experiment()
    planned = plan(exp, crucible.Registry([echo_opts, fails_once]))
    unrelated = Scrubber(["nowhere-in-the-plan"])
    assert planned.for_scrubber(unrelated) is planned  # type: ignore[attr-defined]
    scrubbed = planned.for_scrubber(Scrubber([ENV]))  # type: ignore[attr-defined]
    assert scrubbed is not planned
    assert planned.for_scrubber(Scrubber([ENV])) is not scrubbed  # a new run: a new decision
    texts = [str(dict(p.span_attributes)) + str(dict(p.first_attempt_attributes))
             for p in scrubbed]  # fmt: skip
    assert not [t for t in texts if ENV in t] and all("plain-visible-note" in t for t in texts)
    assert ENV in str(dict(planned[0].span_attributes))  # the cached plan is left as it was
    # The experiment's own secrets (a URL password elsewhere in it) are scrubbed at plan time.
    assert URL_PASSWORD not in str(dict(planned[1].span_attributes))


QUOTED = 'quote"pässwört-5555'  # JSON writes it as quote\"p\u00e4ssw\u00f6rt-5555
BINARY = bytes(range(0xC8, 0xE0))  # a binary key: not UTF-8


@crucible.stage("reach_span", description="Leak through the span API itself.", register=False)
async def reach_span(ctx: crucible.Context) -> crucible.Context:
    from opentelemetry import trace

    span = trace.get_current_span()
    span.add_link(span.get_span_context(), {"upstream.auth": f"Bearer {QUOTED}"})
    span.set_attribute("blob", b"key=" + BINARY)
    span.add_event("sent", {"raw": BINARY})
    body = json.dumps({"pw": QUOTED})
    structlog.get_logger("reach").info("sending", body=body, material=BINARY)
    return ctx.record_event("request", body=body, material=BINARY)


async def test_links_bytes_and_json_escaped_secrets_never_reach_the_wire_or_the_log() -> None:
    logs = io.StringIO()
    crucible_logging.configure(json=True, stream=logs)
    exp = crucible.Experiment(id="reach", pipeline=[crucible.StageDef(name="reach_span")])
    with OtlpHttpReceiver() as receiver:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
            endpoint=receiver.traces_endpoint)))  # fmt: skip
        try:
            await crucible.run(exp, registry=crucible.Registry([reach_span]),
                               tracer_provider=provider,
                               assigns={"password": QUOTED, "signing_key": BINARY})  # fmt: skip
            spans = receiver.wait_for_spans(2)
            wire = b"".join(r.SerializeToString() for r in receiver.requests)
        finally:
            provider.shutdown()
    stage = next(s for s in spans if s.name == "stage reach_span")
    forms = (
        QUOTED,
        json.dumps(QUOTED)[1:-1],
        repr(BINARY)[2:-1],
        base64.b64encode(BINARY).decode(),
    )
    assert not [f for f in forms if f.encode() in wire] and BINARY not in wire
    assert "[REDACTED]" in str(stage.links) and stage.attributes["blob"] == b"key=[REDACTED]"
    assert [e.name for e in stage.events] == ["sent", "request"]
    assert "[REDACTED]" in stage.events[1].attributes["body"]
    text = logs.getvalue()
    assert "sending" in text and "[REDACTED]" in text and not [f for f in forms if f in text]


LONG = "sk-TRUNCSECRET-0123456789abcdef"


@crucible.stage("long_header", description="Set a long attribute and event.", register=False)
async def long_header(ctx: crucible.Context) -> crucible.Context:
    from opentelemetry import trace

    span = trace.get_current_span()
    span.set_attribute("http.request.header.authorization", f"Authorization: Bearer {LONG}")
    span.add_event("sent", {"auth": f"Authorization: Bearer {LONG}"})
    return ctx


async def test_a_secret_the_sdk_cut_at_its_length_limit_is_still_scrubbed() -> None:
    from opentelemetry.sdk.trace import SpanLimits

    exp = crucible.Experiment(id="cut", pipeline=[crucible.StageDef(name="long_header")])
    with OtlpHttpReceiver() as receiver:
        provider = TracerProvider(span_limits=SpanLimits(max_attribute_length=40))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
            endpoint=receiver.traces_endpoint)))  # fmt: skip
        try:
            await crucible.run(exp, registry=crucible.Registry([long_header]),
                               tracer_provider=provider, assigns={"api_key": LONG})  # fmt: skip
            spans = receiver.wait_for_spans(2)
            wire = b"".join(r.SerializeToString() for r in receiver.requests)
        finally:
            provider.shutdown()
    stage = next(s for s in spans if s.name == "stage long_header")
    shown = "Authorization: Bearer [REDACTED]"
    assert stage.attributes["http.request.header.authorization"] == shown
    assert stage.events[0].attributes["auth"] == shown
    assert LONG[:4].encode() not in wire  # no part of it a reader could use
