"""Every run reproducible: the row keeps what ran; rerun and resume from the real stores."""

from __future__ import annotations

import platform
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from pydantic import BaseModel

import crucible
from crucible import (
    Context,
    Experiment,
    InvalidPipeline,
    Registry,
    StageDef,
    StageFailed,
    expand_matrix,
    rerun,
    resume,
    run,
    run_batch,
    stage,
)
from crucible.errors import ReplayError, Unrestorable
from crucible.experiment import apply_overrides, parse_override
from crucible.files import FileAccess, ReadFile
from crucible.redact import REDACTED
from crucible.store import RunStore
from crucible.telemetry import conventions as names
from crucible.testing import SpanCapture

calls: Counter[str] = Counter()
flaky = {"fail": True}


class Thing:
    """An object the checkpoint codec cannot restore (a model, an open client, ...)."""


@stage("load", description="Loads rows and remembers when", register=False)
async def load(ctx: Context, opts: dict[str, Any]) -> Context:
    calls["load"] += 1
    rows = opts.get("rows", 3)
    return ctx.put_metric("rows", rows).assign(shape=(rows, 2), tags={"a", "b"})


@stage("score", description="Scores; fails while flaky['fail'] is set", register=False)
async def score(ctx: Context, opts: dict[str, Any]) -> Context:
    calls["score"] += 1
    if flaky["fail"]:
        raise RuntimeError("score service down")
    assert ctx.assigns["shape"] == (ctx.metrics["rows"], 2)  # the restored state, exactly
    return ctx.put_metric("accuracy", 0.5 + ctx.metrics["rows"] / 100)


@stage("keep_model", description="Keeps an unrestorable object in the assigns", register=False)
async def keep_model(ctx: Context) -> Context:
    calls["keep_model"] += 1
    return ctx.assign(model=ctx.assigns.get("model") or Thing())


REG = Registry([load, score, keep_model])


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    flaky["fail"] = True


def pipeline(*stages: StageDef, checkpoint: bool = True) -> Experiment:
    return Experiment(id="repro", pipeline=list(stages), checkpoint=checkpoint)


LOAD = StageDef(name="load", options={"rows": 3, "api_key": "sk-live-1"})


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        cwd=repo, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
async def test_the_row_keeps_what_ran(
    store: RunStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "f.txt").write_text("x\n", encoding="utf-8")
    git(repo, "add", "f.txt")
    git(repo, "commit", "-q", "-m", "one")
    (repo / "f.txt").write_text("changed\n", encoding="utf-8")  # uncommitted: dirty
    monkeypatch.chdir(repo)
    base = Experiment(
        id="sweep",
        pipeline=[LOAD, StageDef(name="score", options={"k": 1})],
        matrix={"load.rows": [4, 5]},
    )
    overridden = apply_overrides(base, [parse_override("score.k=7")], source="test")
    outcomes = await run_batch(expand_matrix(overridden), registry=REG, store=store)
    info = await store.get_run(outcomes[1].run_id)
    assert info is not None and info.status == "failed"
    assert info.config is not None
    assert info.config["pipeline"][0]["options"] == {"rows": 5, "api_key": REDACTED}
    assert info.config["pipeline"][1]["options"] == {"k": 7}
    assert info.config["matrix"] is None and info.config["checkpoint"] is False
    assert info.start_assigns == {"matrix": {"load.rows": 5}}
    assert info.versions is not None and info.versions["python"] == platform.python_version()
    assert "crucible-pipelines" in info.versions
    assert (info.git_commit, info.git_dirty) == (git(repo, "rev-parse", "HEAD"), True)
    ctx = outcomes[1].context
    assert ctx is not None and ctx.trace is not None and info.span_id == ctx.trace.span_id
    assert (info.rerun_of, info.resumed_from) == (None, None)
    data = info.to_dict()
    assert data["config"] == info.config and data["git_commit"] == info.git_commit
    assert "sk-live-1" not in repr(data)


def link_of(span: ReadableSpan) -> tuple[str, str, str]:
    (link,) = span.links
    run_id = (link.attributes or {})[names.PIPELINE_RUN_ID]
    return f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}", str(run_id)


async def test_rerun_runs_the_configuration_again_linked_to_the_original(
    store: RunStore, spans: SpanCapture
) -> None:
    exp = pipeline(LOAD, StageDef(name="score"))
    with pytest.raises(StageFailed):
        await run(exp, run_id="orig", registry=REG, store=store, assigns={"who": ("ann", 1)})
    with pytest.raises(ReplayError) as refused:
        await rerun("orig", store=store, registry=REG)
    assert "--set load.api_key=VALUE" in str(refused.value)
    assert calls == {"load": 1, "score": 1}  # the refusal ran nothing

    flaky["fail"] = False
    spans.clear()
    ctx = await rerun(
        "orig", store=store, overrides=["load.api_key=sk-again"], registry=REG, run_id="again",
        tracer_provider=spans.provider,
    )  # fmt: skip
    assert ctx.metrics == {"rows": 3, "accuracy": 0.53}
    assert ctx.assigns["who"] == ("ann", 1)  # the original caller's assigns, restored
    assert ctx.experiment.pipeline[0].options == {"rows": 3, "api_key": "sk-again"}
    original, again = await store.get_run("orig"), await store.get_run("again")
    assert original is not None and again is not None
    assert (again.status, again.rerun_of, again.resumed_from) == ("completed", "orig", None)
    assert again.config == original.config
    run_span = spans.one("RUN repro")
    assert link_of(run_span) == (original.trace_id, original.span_id, "orig")
    assert (run_span.attributes or {})[names.RUN_RERUN_OF] == "orig"


async def test_resume_continues_from_the_first_unfinished_stage(
    store: RunStore, spans: SpanCapture
) -> None:
    exp = pipeline(
        StageDef(name="load", options={"rows": 4}),
        StageDef(name="keep_model", enabled=False),
        StageDef(name="score"),
    )
    with pytest.raises(StageFailed):
        await run(exp, run_id="r1", registry=REG, store=store, assigns={"seed": 7})
    assert calls == {"load": 1, "score": 1}

    flaky["fail"] = False
    spans.clear()
    ctx = await resume("r1", store=store, registry=REG, run_id="r2",
                       tracer_provider=spans.provider)  # fmt: skip
    assert calls == {"load": 1, "score": 2}  # load was not run again
    assert ctx.metrics == {"rows": 4, "accuracy": 0.54}
    assert ctx.assigns["shape"] == (4, 2) and ctx.assigns["tags"] == {"a", "b"}
    assert ctx.assigns["seed"] == 7
    assert ctx.completed_stages() == ["load", "score"]
    assert ctx.trace is not None
    assert [(r.stage, r.result, r.attempt) for r in ctx.trace.spans] == [
        ("load", "skip", 0), ("keep_model", "skip", 0), ("score", "success", 1),
    ]  # fmt: skip
    restored = {s.name: (s.attributes or {}).get(names.STAGE_RESTORED) for s in spans.spans()}
    assert restored == {"stage load": True, "stage keep_model": None, "stage score": None,
                        "RUN repro": None}  # fmt: skip
    first, second = await store.get_run("r1"), await store.get_run("r2")
    assert first is not None and second is not None
    assert (second.status, second.resumed_from, second.rerun_of) == ("completed", "r1", None)
    assert [(a.stage, a.result) for a in second.attempts] == [
        ("load", "skip"), ("keep_model", "skip"), ("score", "success"),
    ]  # fmt: skip
    run_span = spans.one("RUN repro")
    assert (run_span.attributes or {})[names.RUN_RESUMED_FROM] == "r1"
    assert link_of(run_span) == (first.trace_id, first.span_id, "r1")


async def test_a_resumed_run_can_be_resumed_again(store: RunStore) -> None:
    exp = pipeline(LOAD, StageDef(name="score"), StageDef(name="score"))
    with pytest.raises(StageFailed):
        await run(exp, run_id="a", registry=REG, store=store)
    with pytest.raises(StageFailed):
        await resume("a", store=store, registry=REG, run_id="b", overrides=["load.api_key=k"])
    flaky["fail"] = False
    ctx = await resume("b", store=store, registry=REG, run_id="c", overrides=["load.api_key=k"])
    assert calls == {"load": 1, "score": 4}
    assert ctx.metrics["rows"] == 3 and ctx.completed_stages() == ["load", "score"]
    assert ctx.trace is not None and [r.result for r in ctx.trace.spans] == [
        "skip", "success", "success",
    ]  # fmt: skip


async def test_a_run_that_failed_at_its_first_stage_resumes_from_its_inputs(
    store: RunStore,
) -> None:
    exp = pipeline(StageDef(name="score"))
    with pytest.raises(StageFailed):
        await run(exp, run_id="f", registry=REG, store=store, assigns={"shape": (1, 2)})
    flaky["fail"] = False
    with pytest.raises(StageFailed, match="KeyError: 'rows'") as failed:  # no load ran before
        await resume("f", store=store, registry=REG, run_id="g")
    assert calls == {"score": 2}
    last = failed.value.context
    assert last is not None and dict(last.assigns) == {"shape": (1, 2)}  # the inputs, restored
    info = await store.get_run("g")
    assert info is not None and info.resumed_from == "f" and info.status == "failed"


async def test_cancelled_and_abandoned_runs_resume(store: RunStore) -> None:
    @stage("hang", description="Hangs until cancelled", register=False)
    async def hang(ctx: Context) -> Context:
        await anyio.sleep(30)
        return ctx

    reg = Registry([load, score, hang])
    with anyio.move_on_after(0.3):
        await run(pipeline(StageDef(name="load"), StageDef(name="hang")), run_id="c1",
                  registry=reg, store=store)  # fmt: skip
    cancelled = await store.get_run("c1")
    assert cancelled is not None and cancelled.status == "cancelled"
    replaced = Registry([load, score])
    replaced.register(score, name="hang")  # the same pipeline, its hanging stage now quick
    flaky["fail"] = False
    ctx = await resume("c1", store=store, registry=replaced, run_id="c2")
    assert ctx.metrics["accuracy"] == 0.53 and calls == {"load": 1, "score": 1}

    flaky["fail"] = True
    with pytest.raises(StageFailed):
        await run(pipeline(StageDef(name="load"), StageDef(name="score")), run_id="ab",
                  registry=reg, store=store)  # fmt: skip
    await store.finish_run("ab", "abandoned")  # as the next open marks a dead process's run
    flaky["fail"] = False
    ctx = await resume("ab", store=store, registry=reg, run_id="ab2")
    assert ctx.metrics == {"rows": 3, "accuracy": 0.53}
    assert calls == {"load": 2, "score": 3}


async def test_resume_refusals(store: RunStore) -> None:
    flaky["fail"] = False
    await run(pipeline(StageDef(name="load")), run_id="done", registry=REG, store=store)
    flaky["fail"] = True
    with pytest.raises(StageFailed):
        await run(pipeline(StageDef(name="load"), StageDef(name="score"), checkpoint=False),
                  run_id="nockpt", registry=REG, store=store)  # fmt: skip
    with pytest.raises(ReplayError, match=r"'done' is completed; .*rerun it instead"):
        await resume("done", store=store, registry=REG)
    with pytest.raises(ReplayError, match=r"unknown run id 'nope'"):
        await resume("nope", store=store, registry=REG)
    with pytest.raises(ReplayError, match=r"'nockpt' has no checkpoints.*checkpoint: true"):
        await resume("nockpt", store=store, registry=REG)
    with pytest.raises(ReplayError, match="unknown run id 'nope'"):
        await rerun("nope", store=store, registry=REG)
    assert calls == {"load": 2, "score": 1}  # refusals run nothing


async def test_resume_refuses_to_change_a_restored_stages_options(store: RunStore) -> None:
    exp = pipeline(LOAD, StageDef(name="score"))
    with pytest.raises(StageFailed):
        await run(exp, run_id="o1", registry=REG, store=store)
    flaky["fail"] = False
    with pytest.raises(ReplayError, match=r"--set 'load.rows=9': stage 'load' \(pipeline\[0\]\) "
                       r"comes before the resume point.*rerun"):  # fmt: skip
        await resume("o1", store=store, registry=REG, overrides=["load.api_key=k", "load.rows=9"])
    assert await store.get_run("o1") is not None and calls == {"load": 1, "score": 1}
    ctx = await resume("o1", store=store, registry=REG, run_id="o2",
                       overrides=["load.api_key=k", "score.extra=1"])  # fmt: skip
    assert ctx.completed_stages() == ["load", "score"]


async def test_resume_refuses_what_it_cannot_restore_unless_supplied(store: RunStore) -> None:
    exp = pipeline(StageDef(name="load"), StageDef(name="keep_model"), StageDef(name="score"))
    with pytest.raises(StageFailed):
        await run(exp, run_id="m1", registry=REG, store=store)
    flaky["fail"] = False
    with pytest.raises(Unrestorable) as refused:
        await resume("m1", store=store, registry=REG)
    message = str(refused.value)
    assert "assigns.model: <tests.store.test_reproduce.Thing> cannot be restored" in message
    assert "assigns={...}" in message
    model = Thing()
    ctx = await resume("m1", store=store, registry=REG, assigns={"model": model}, run_id="m2")
    assert ctx.assigns["model"] is model and calls == {"load": 1, "keep_model": 1, "score": 2}


async def test_a_rerun_reads_data_next_to_the_original_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stages.dataset import load_examples

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "rows.jsonl").write_text('{"input": "a"}\n{"input": "b"}\n')
    (project / "exp.yaml").write_text(
        "id: rel\npipeline:\n  - name: load_examples\n    options: {path: data/rows.jsonl}\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    registry = crucible.Registry([load_examples])
    async with RunStore(tmp_path / "runs.db") as store:
        exp = crucible.load_experiment(project / "exp.yaml")
        first = await crucible.run(exp, store=store, registry=registry, run_id="rel-1")
        again = await crucible.rerun("rel-1", store=store, registry=registry, run_id="rel-2")
        stored = await store.get_run("rel-2")
    assert (
        first.assigns["examples"] == again.assigns["examples"] == [{"input": "a"}, {"input": "b"}]
    )
    assert stored is not None and stored.source == str((project / "exp.yaml").resolve())


class _RowsFile(BaseModel):
    path: ReadFile


judge_down = {"fail": True}


@stage("read_rows", description="Reads a file of rows", register=False)
async def read_rows(ctx: Context, opts: _RowsFile) -> Context:
    return ctx.assign(rows=opts.path.read_text().splitlines())


@stage("judge", description="Counts the rows; fails while judge_down['fail']", register=False)
async def judge(ctx: Context) -> Context:
    if judge_down["fail"]:
        raise RuntimeError("judge is down")
    return ctx.put_metric("rows", len(ctx.assigns["rows"]))


async def test_a_restored_stage_whose_file_moved_since_does_not_block_the_resume(
    store: RunStore, tmp_path: Path
) -> None:
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "rows.txt").write_text("a\nb\n")
    (folder / "exp.yaml").write_text(
        "id: moved\ncheckpoint: true\npipeline:\n"
        "  - name: read_rows\n    options: {path: rows.txt}\n  - name: judge\n"
    )
    registry = Registry([read_rows, judge])
    exp = crucible.load_experiment(folder / "exp.yaml")
    judge_down["fail"] = True
    with pytest.raises(StageFailed):
        await run(exp, run_id="moved-1", registry=registry, store=store)
    folder.rename(tmp_path / "elsewhere")  # the data file of the restored stage is gone
    judge_down["fail"] = False
    ctx = await resume("moved-1", store=store, registry=registry, run_id="moved-2")
    assert ctx.metrics == {"rows": 2}
    assert [(r.stage, r.result) for r in ctx.trace.spans] == [("read_rows", "skip"),
                                                              ("judge", "success")]  # fmt: skip
    again = Experiment(
        id="moved",
        pipeline=[StageDef(name="read_rows", options={"path": str(folder / "rows.txt")})],
    )
    with pytest.raises(InvalidPipeline, match="does not exist"):  # a stage that runs: checked
        await run(again, registry=registry,
                  file_access=FileAccess.default(allow_read=[tmp_path]))  # fmt: skip
