"""Registry: explicit registration, lazy entry-point discovery, import paths."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from crucible import Context, Experiment, Registry, StageDef, run, stage
from crucible.errors import ImportsNotAllowed, UnknownStage
from crucible.registry import default_registry


@stage("one", description="first", register=False)
async def one(ctx: Context) -> Context:
    return ctx.put_metric("one", 1)


def test_explicit_registry_holds_only_what_is_registered() -> None:
    reg = Registry([one])
    assert reg.names() == ["one"] and "one" in reg and len(reg) == 1
    with pytest.raises(UnknownStage, match="registered stages: one"):
        reg.get("two")


def test_conflicting_registration_needs_replace() -> None:
    reg = Registry([one])

    @stage("one", description="another one", register=False)
    async def other(ctx: Context) -> Context:
        return ctx

    with pytest.raises(ValueError, match="already registered"):
        reg.register(other)
    reg.register(other, replace=True)
    assert reg.get("one").description == "another one"
    reg.register(one, name="alias")
    assert reg.get("alias").name == "alias"


def test_decorated_stages_join_the_default_registry() -> None:
    @stage("registered_by_decorator", description="default registry member")
    async def member(ctx: Context) -> Context:
        return ctx

    assert default_registry().get("registered_by_decorator").call is member


def test_import_paths_need_permission() -> None:
    reg = Registry()
    sd = StageDef(name="x", module="tests.test_registry:one")
    with pytest.raises(ImportsNotAllowed):
        reg.resolve(sd)
    assert reg.resolve(sd, allow_imports=True).name == "x"
    for bad in ("no.such.module:x", "tests.test_registry:missing", "nocolon"):
        with pytest.raises(UnknownStage):
            reg.resolve(StageDef(name="x", module=bad), allow_imports=True)


@pytest.fixture
def plugin(tmp_path: Path) -> Iterator[Path]:
    """A real installed distribution declaring two stages (one broken) as entry points."""
    (tmp_path / "myplugin.py").write_text(
        textwrap.dedent(
            """
            from crucible import Context, stage

            @stage("plugged", description="from a plugin", register=False)
            async def plugged(ctx: Context) -> Context:
                return ctx.put_metric("plugged", True)
            """
        )
    )
    dist = tmp_path / "myplugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myplugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[crucible.stages]\nplugged = myplugin:plugged\nbroken = myplugin:does_not_exist\n"
    )
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    sys.modules.pop("myplugin", None)


async def test_entry_point_discovery_is_lazy_and_isolates_broken_plugins(plugin: Path) -> None:
    reg = Registry(discover=True)
    assert reg._discovered is False  # nothing loaded until first use
    assert "plugged" in reg and reg._discovered
    assert "broken" not in reg
    assert any("broken" in e for e in reg.discovery_errors)
    ctx = await run(Experiment(id="p", pipeline=[StageDef(name="plugged")]), registry=reg)
    assert ctx.get_metric("plugged") is True
    # Built-in stages arrive the same way as any plugin.
    assert {"validate", "data_checks", "guardrails", "bench", "report"} <= set(reg.names())


def test_explicit_registry_does_not_discover(plugin: Path) -> None:
    assert "plugged" not in Registry()
