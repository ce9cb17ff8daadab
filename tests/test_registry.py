"""Registry: explicit registration, lazy entry-point discovery, import paths."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from crucible import Context, Experiment, Registry, StageDef, run, stage
from crucible.errors import ImportsNotAllowed, UnknownStage
from crucible.registry import (
    default_registry,
    imports_allowed,
    imports_allowed_scope,
    load_option_callable,
)


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


def test_the_default_registry_follows_declarations_made_after_it_exists() -> None:
    reg = default_registry()
    assert "declared_late" not in reg
    before = reg.version

    @stage("declared_late", description="first")
    async def first(ctx: Context) -> Context:
        return ctx

    assert reg.get("declared_late").call is first and reg.version > before

    @stage("declared_late", description="second")
    async def second(ctx: Context) -> Context:
        return ctx

    @stage("declared_late", description="kept out", register=False)
    async def unregistered(ctx: Context) -> Context:
        return ctx

    assert reg.get("declared_late").call is second
    assert reg.names().count("declared_late") == 1


def test_a_declaration_replaces_an_earlier_explicit_registration() -> None:
    reg = default_registry()
    reg.register(one, name="ordered_name")

    @stage("ordered_name", description="declared after the explicit registration")
    async def later(ctx: Context) -> Context:
        return ctx

    assert reg.get("ordered_name").call is later
    with pytest.raises(ValueError, match="already registered"):
        reg.register(one, name="ordered_name")


async def test_a_run_uses_the_stage_declared_last() -> None:
    experiment = Experiment(id="redeclared", pipeline=[StageDef(name="redeclared_stage")])

    @stage("redeclared_stage", description="version one")
    async def v1(ctx: Context) -> Context:
        return ctx.put_metric("v", 1)

    assert (await run(experiment)).get_metric("v") == 1

    @stage("redeclared_stage", description="version two")
    async def v2(ctx: Context) -> Context:
        return ctx.put_metric("v", 2)

    assert (await run(experiment)).get_metric("v") == 2  # the cached plan is not reused


def test_imports_allowed_scope_sets_and_restores_the_flag() -> None:
    path = "tests.test_registry:one"
    assert imports_allowed() is False
    with imports_allowed_scope(True):
        assert imports_allowed() is True
        assert load_option_callable(path, what="hook") is one
        with imports_allowed_scope(False), pytest.raises(ImportsNotAllowed):
            load_option_callable(path, what="hook")
        assert imports_allowed() is True
    assert imports_allowed() is False
    with pytest.raises(RuntimeError), imports_allowed_scope(True):
        raise RuntimeError("the block fails")
    assert imports_allowed() is False


async def test_concurrent_scopes_do_not_see_each_other() -> None:
    both_inside = anyio.Event()
    entered: list[bool] = []
    seen: dict[bool, bool] = {}

    async def probe(allowed: bool) -> None:
        with imports_allowed_scope(allowed):
            entered.append(allowed)
            if len(entered) == 2:
                both_inside.set()
            await both_inside.wait()
            seen[allowed] = imports_allowed()

    async with anyio.create_task_group() as tg:
        tg.start_soon(probe, True)
        tg.start_soon(probe, False)
    assert seen == {True: True, False: False}
    assert imports_allowed() is False


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


def test_every_built_in_stage_comes_from_its_entry_point_even_once_imported() -> None:
    import stages.bench
    import stages.dataset
    import stages.report  # noqa: F401  (imported: a declaration there must not take over)

    builtins = ["bench", "data_checks", "guardrails", "load_examples", "report", "validate"]
    assert {name: default_registry().source(name).kind for name in builtins} == dict.fromkeys(
        builtins, "entry point"
    )
