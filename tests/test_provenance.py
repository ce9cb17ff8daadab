"""Provenance: the git state of a directory, package versions of the stages, the config cache."""

from __future__ import annotations

import asyncio
import importlib.metadata
import platform
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from crucible import Experiment, StageDef, provenance
from crucible.provenance import (
    DISTRIBUTION,
    GitState,
    distribution_of,
    experiment_config,
    git_state,
    provenance_for,
)
from crucible.redact import REDACTED

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        cwd=repo, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def make_repo(path: Path) -> str:
    """A repository with one committed file; returns the commit."""
    path.mkdir()
    git(path, "init", "-q")
    (path / "tracked.txt").write_text("one\n", encoding="utf-8")
    git(path, "add", "tracked.txt")
    git(path, "commit", "-q", "-m", "first")
    return git(path, "rev-parse", "HEAD")


@needs_git
def test_git_state_clean_dirty_and_outside_a_repository(tmp_path: Path) -> None:
    commit = make_repo(tmp_path / "repo")
    (tmp_path / "repo" / "untracked.txt").write_text("new\n", encoding="utf-8")
    assert git_state(str(tmp_path / "repo")) == GitState(commit, False)
    (tmp_path / "repo" / "sub").mkdir()
    assert git_state(str(tmp_path / "repo" / "sub")) == GitState(commit, False)
    (tmp_path / "repo" / "tracked.txt").write_text("two\n", encoding="utf-8")
    assert git_state(str(tmp_path / "repo")) == GitState(commit, True)
    (tmp_path / "empty").mkdir()
    git(tmp_path / "empty", "init", "-q")
    assert git_state(str(tmp_path / "empty")) is None  # no commit yet
    (tmp_path / "plain").mkdir()
    assert git_state(str(tmp_path / "plain")) is None


def test_without_git_there_is_no_commit_and_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable anywhere on PATH
    assert git_state(str(tmp_path)) is None


@needs_git
async def test_provenance_of_a_run_is_computed_once_per_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = make_repo(tmp_path / "repo")
    monkeypatch.chdir(tmp_path / "repo")
    origins = ("stages.bench:bench", "tests.test_provenance:nothing")
    first = await provenance_for(origins)
    assert first.git == GitState(commit, False)
    assert dict(first.versions) == {
        "python": platform.python_version(),
        DISTRIBUTION: importlib.metadata.version(DISTRIBUTION),
    }
    (tmp_path / "repo" / "tracked.txt").write_text("changed\n", encoding="utf-8")
    assert await provenance_for(origins) is first  # cached: a process asks git once per folder
    with pytest.raises(TypeError):
        first.versions["python"] = "2.7"  # type: ignore[index]


async def test_runs_that_start_together_compute_provenance_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a folder no earlier test asked about
    computed: list[object] = []
    real = provenance._compute

    def slow(key: Any) -> provenance.Provenance:
        computed.append(key)
        time.sleep(0.05)  # the others arrive while the first one works
        return real(key)

    monkeypatch.setattr(provenance, "_compute", slow)
    origins = ("tests.test_provenance:together",)
    found = await asyncio.gather(*(provenance_for(origins) for _ in range(20)))
    assert len(computed) == 1  # one worker thread, not one per run
    assert all(p is found[0] for p in found)


async def test_a_cancelled_first_caller_leaves_the_answer_to_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    real = provenance._compute
    started = threading.Event()

    def slow(key: Any) -> provenance.Provenance:
        started.set()
        time.sleep(0.1)
        return real(key)

    monkeypatch.setattr(provenance, "_compute", slow)
    origins = ("tests.test_provenance:cancelled",)
    first = asyncio.ensure_future(provenance_for(origins))
    await asyncio.to_thread(started.wait, 5)
    second = asyncio.ensure_future(provenance_for(origins))
    await asyncio.sleep(0)
    first.cancel()
    found = await asyncio.wait_for(second, 5)
    assert found.versions["python"] == platform.python_version()


def test_stage_modules_map_to_their_distributions() -> None:
    assert distribution_of("stages.bench") == DISTRIBUTION  # declared by our entry points
    assert distribution_of("pydantic.main") == "pydantic"  # found through its top-level package
    assert distribution_of("tests.test_provenance") is None


def test_experiment_config_is_redacted_json_cached_per_object() -> None:
    exp = Experiment(
        id="cfg", pipeline=[StageDef(name="bench", options={"alpha": 0.01, "api_key": "sk-1"})]
    )
    config = experiment_config(exp)
    assert config["pipeline"][0]["options"] == {"alpha": 0.01, "api_key": REDACTED}
    assert config["checkpoint"] is False and config["id"] == "cfg"
    assert experiment_config(exp) is config
    same_values = Experiment.model_validate(exp.model_dump())
    assert experiment_config(same_values) == config and experiment_config(same_values) is not config
