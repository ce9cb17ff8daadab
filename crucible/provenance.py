"""What a run ran with: package versions, the git commit of its folder, its configuration.

Every answer is cached (versions per set of stages and process, git per directory, the
configuration per Experiment object), so a batch of thousands of runs pays for each once.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import platform
import subprocess
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

import anyio

from crucible.experiment import Experiment
from crucible.scrub import Scrubber, definition_secrets
from crucible.serialize import to_jsonable

__all__ = [
    "DISTRIBUTION",
    "GitState",
    "Provenance",
    "cached_provenance",
    "experiment_config",
    "provenance_for",
]

DISTRIBUTION: Final = "crucible-pipelines"
ENTRY_POINT_GROUP: Final = "crucible.stages"
_GIT_TIMEOUT_S: Final = 2.0
_NO_VERSIONS: Final[Mapping[str, str]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class GitState:
    """The commit checked out in a directory, and whether tracked files differ from it."""

    commit: str
    dirty: bool | None


@dataclass(frozen=True, slots=True)
class Provenance:
    """Versions (``python``, ``crucible-pipelines``, the stages' distributions) and git state."""

    versions: Mapping[str, str] = field(default_factory=lambda: _NO_VERSIONS)
    git: GitState | None = None


_lock = threading.Lock()
_found: dict[tuple[tuple[str, ...], str | None], Provenance] = {}
_git: dict[str, GitState | None] = {}
_in_flight: dict[tuple[tuple[tuple[str, ...], str | None], int], anyio.Event] = {}
_module_dists: dict[str, str] | None = None
_top_level_dists: Mapping[str, list[str]] | None = None


def _stage_module_dists() -> dict[str, str]:
    """Stage plugin modules (and their top-level packages) to the distribution declaring them."""
    global _module_dists
    if _module_dists is None:
        found: dict[str, str] = {}
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.dist is not None:
                found.setdefault(ep.module, ep.dist.name)
                found.setdefault(ep.module.partition(".")[0] + ".", ep.dist.name)
        _module_dists = found
    return _module_dists


def distribution_of(module: str) -> str | None:
    """The installed distribution that provides ``module``, when one does."""
    global _top_level_dists
    plugins = _stage_module_dists()
    if module in plugins:
        return plugins[module]
    top = module.partition(".")[0]
    if _top_level_dists is None:
        _top_level_dists = metadata.packages_distributions()
    dists = _top_level_dists.get(top)
    if dists:
        return dists[0]
    return plugins.get(top + ".")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _versions(modules: Sequence[str]) -> Mapping[str, str]:
    found = {"python": platform.python_version()}
    own = _version(DISTRIBUTION)
    if own is not None:
        found[DISTRIBUTION] = own
    dists = {d for d in map(distribution_of, modules) if d is not None and d != DISTRIBUTION}
    for dist in sorted(dists):
        version = _version(dist)
        if version is not None:
            found[dist] = version
    return MappingProxyType(found)


def _run_git(cwd: str, *args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=_GIT_TIMEOUT_S,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"}, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None


def git_state(cwd: str) -> GitState | None:
    """HEAD of the repository holding ``cwd`` (None outside one, or without git)."""
    head = _run_git(cwd, "rev-parse", "--verify", "HEAD")
    if head is None or head.returncode != 0 or not head.stdout.strip():
        return None
    status = _run_git(cwd, "status", "--porcelain", "--untracked-files=no")
    dirty = None if status is None or status.returncode != 0 else bool(status.stdout.strip())
    return GitState(head.stdout.strip(), dirty)


def _compute(key: tuple[tuple[str, ...], str | None]) -> Provenance:
    origins, cwd = key
    with _lock:
        hit = _found.get(key)
        if hit is not None:
            return hit
        if cwd is not None and cwd not in _git:
            _git[cwd] = git_state(cwd)
        modules = [origin.partition(":")[0] for origin in origins]
        found = _found[key] = Provenance(_versions(modules), None if cwd is None else _git[cwd])
        return found


def cached_provenance(origins: tuple[str, ...]) -> Provenance | None:
    """What ``provenance_for`` would return, when it is already known (no await needed)."""
    try:
        cwd: str | None = os.getcwd()
    except OSError:
        cwd = None
    return _found.get((origins, cwd))


async def provenance_for(origins: tuple[str, ...]) -> Provenance:
    """The provenance of a run of stages with these origins, in the working directory.

    Cached: only the first run of a set of stages in a directory does any work (in a worker
    thread, since it reads package metadata and asks git).
    """
    try:
        cwd: str | None = os.getcwd()
    except OSError:  # the working directory was removed
        cwd = None
    key = (origins, cwd)
    while True:
        hit = _found.get(key)
        if hit is not None:
            return hit
        flight = (key, threading.get_ident())  # an event loop runs in one thread
        other = _in_flight.get(flight)
        if other is None:
            break
        await other.wait()  # the runs that start together share one thread's answer
    _in_flight[flight] = done = anyio.Event()
    try:
        return await anyio.to_thread.run_sync(_compute, key)
    finally:
        del _in_flight[flight]
        done.set()  # also when cancelled: a waiter then looks again and computes itself


_config_cache: dict[int, tuple[weakref.ref[Experiment], dict[str, Any]]] = {}
_CONFIG_CACHE_SIZE: Final = 256


def experiment_config(experiment: Experiment) -> dict[str, Any]:
    """The experiment as JSON data with secrets redacted (what a run's row keeps): values under
    secret-looking keys, and those values (and URL passwords) wherever else they appear.

    Cached per Experiment object (they are frozen): callers must treat the result as read-only.
    """
    key = id(experiment)
    hit = _config_cache.get(key)
    if hit is not None and hit[0]() is experiment:
        return hit[1]
    config: dict[str, Any] = Scrubber(definition_secrets(experiment)).value(
        to_jsonable(experiment.model_dump(mode="json", by_alias=True))
    )
    if len(_config_cache) >= _CONFIG_CACHE_SIZE:
        _config_cache.pop(next(iter(_config_cache)))
    _config_cache[key] = (weakref.ref(experiment), config)
    return config
