"""Secrets anywhere in an experiment (backend and output options, metadata, URL passwords) are
scrubbed by value from the store file, the logs and the reports, not only redacted by key."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest

import crucible
from crucible import logging as crucible_logging
from crucible.files import FileAccess
from crucible.store import RunStore
from stages.report import report

BACKEND_KEY = "bkSECRET-api-key-1"
META_PASSWORD = "mdSECRET-password-2"
OUTPUT_TOKEN = "outSECRET-token-3"
URL_PASSWORD = "urlSECRET-pw-4"
SECRETS = (BACKEND_KEY, META_PASSWORD, OUTPUT_TOKEN, URL_PASSWORD)


def _said(ctx: crucible.Context) -> str:
    exp = ctx.experiment
    assert exp.backend is not None and exp.backend.options and exp.outputs and exp.metadata
    return " ".join([
        exp.backend.options["api_key"], exp.metadata["password"],
        (exp.outputs[0].options or {})["token"], (exp.pipeline[0].options or {})["endpoint"],
    ])  # fmt: skip


@crucible.stage("echo_config", description="Echo the experiment's secrets.", register=False)
async def echo_config(ctx: crucible.Context, opts: dict[str, Any]) -> crucible.Context:
    said = _said(ctx)
    return ctx.assign(echo=said).put_metric("echo", said).record_event("used", detail=said)


@crucible.stage("refuse_config", description="Fail, naming the secrets.", register=False)
async def refuse_config(ctx: crucible.Context) -> crucible.Context:
    raise RuntimeError(f"upstream refused {_said(ctx)}")


def _experiment(out_dir: Path) -> crucible.Experiment:
    return crucible.Experiment.model_validate({
        "id": "configured",
        "description": "calls https://svc:" + URL_PASSWORD + "@api.example/v1",
        "backend": {"id": "llm", "options": {"api_key": BACKEND_KEY}},
        "metadata": {"password": META_PASSWORD, "team": "evals"},
        "outputs": [{"name": "summary", "formats": ["json", "markdown", "html"],
                     "options": {"token": OUTPUT_TOKEN}}],
        "pipeline": [
            {"name": "echo_config",
             "options": {"endpoint": f"https://user:{URL_PASSWORD}@example.com/"}},
            {"name": "report", "options": {"out_dir": str(out_dir)}},
            {"name": "refuse_config"},
        ],
    })  # fmt: skip


def _raw(data: bytes) -> list[str]:
    return [s for s in SECRETS if s.encode() in data or json.dumps(s).encode() in data]


def _leaks(root: Path) -> dict[str, list[str]]:
    """The secrets each file under ``root`` holds, by file name."""
    return {p.name: _raw(p.read_bytes()) for p in root.rglob("*") if p.is_file()}


async def test_experiment_secrets_never_reach_the_sqlite_file_logs_or_reports(
    tmp_path: Path,
) -> None:
    logs = io.StringIO()
    crucible_logging.configure(json=True, stream=logs)
    db = tmp_path / "runs.db"
    out_dir = tmp_path / "reports"
    registry = crucible.Registry([echo_config, refuse_config, report])
    async with RunStore(db) as store:  # a real SQLite file (the autouse fixture resets logs)
        with pytest.raises(crucible.StageFailed) as failed:
            await crucible.run(_experiment(out_dir), registry=registry, store=store,
                               file_access=FileAccess.default(allow_write=[tmp_path]))  # fmt: skip
        assert failed.value.context is not None
        info = await store.get_run(failed.value.context.run_id)
    assert not _raw(str(failed.value).encode())
    assert info is not None and info.config is not None
    assert info.config["backend"]["options"]["api_key"] == "[REDACTED]"
    endpoint = info.config["pipeline"][0]["options"]["endpoint"]
    assert endpoint == "https://user:[REDACTED]@example.com/"  # the rest of the URL is kept
    assert info.failure_message and "upstream refused [REDACTED]" in info.failure_message
    assert info.metrics["echo"].startswith("[REDACTED] [REDACTED]")
    leaks = _leaks(tmp_path)  # the database (and its WAL), the three reports
    assert "runs.db" in leaks and len(list(out_dir.iterdir())) == 3
    assert not {name: found for name, found in leaks.items() if found}
    assert "[REDACTED]" in logs.getvalue() and not _raw(logs.getvalue().encode())


def test_a_rerun_asks_again_for_a_url_whose_password_was_scrubbed() -> None:
    from crucible.reproduce import redacted_paths

    stored = crucible.Experiment.model_validate({
        "id": "e", "pipeline": [{"name": "s", "options": {"endpoint": "https://u:[REDACTED]@h/"}}],
    })  # fmt: skip
    assert redacted_paths(stored) == (["s.endpoint"], [])


@crucible.stage("copy_key", description="Copy a bytes secret into an output.", register=False)
async def copy_key(ctx: crucible.Context) -> crucible.Context:
    return ctx.add_output({"blob": ctx.assigns["api_key"], "note": "kept"})


def _store_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.glob("runs.db*"))  # with any WAL left


async def test_a_bytes_secret_copied_elsewhere_never_reaches_the_store_file(tmp_path: Path) -> None:
    secret = b"bytesSECRET-key-5"
    store = RunStore(tmp_path / "runs.db")
    await store.open()
    try:
        exp = crucible.Experiment(id="bytes", pipeline=[crucible.StageDef(name="copy_key")])
        ctx = await crucible.run(exp, store=store, registry=crucible.Registry([copy_key]),
                                 assigns={"api_key": secret})  # fmt: skip
        assert ctx.outputs[0]["blob"] == secret  # the run's own data is untouched
    finally:
        await store.close()
    raw = _store_bytes(tmp_path)
    assert secret not in raw and base64.b64encode(secret) not in raw
    assert b"kept" in raw
