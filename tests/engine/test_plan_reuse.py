"""A sweep's variants share the stages it does not vary, and the engine plans those once."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from pydantic import BaseModel, field_validator

from crucible import Context, Experiment, InvalidPipeline, Registry, StageDef, stage
from crucible.engine.plan import plan
from crucible.experiment import matrix_points
from crucible.files import FileAccess, ReadFile, using_access

validated: list[str] = []


class Counted(BaseModel):
    label: str = "x"
    n: int = 0

    @field_validator("label")
    @classmethod
    def count(cls, value: str) -> str:
        validated.append(value)
        return value


class Reads(BaseModel):
    path: ReadFile


@stage("counted", description="Counts its options' validations", register=False)
async def counted(ctx: Context, opts: Counted) -> Context:
    return ctx


@stage("reads", description="Names a file to read", register=False)
async def reads(ctx: Context, opts: Reads) -> Context:
    return ctx


def sweep(points: int) -> list[Experiment]:
    exp = Experiment(
        id="sweep",
        pipeline=[StageDef(name="counted", options={"label": "fixed"}),
                  StageDef(name="reads", options={"path": "data.txt"})],
        matrix={"reads.path": [f"data{i}.txt" for i in range(points)]},
    )  # fmt: skip
    return [variant for variant, _ in matrix_points(exp)]


def access(root: Path, points: int = 5) -> FileAccess:
    """Read access to ``root``, which holds the files the sweep's variants name."""
    root.mkdir(exist_ok=True)
    for i in range(points):
        (root / f"data{i}.txt").write_text("x", encoding="utf-8")
    return FileAccess.default(cwd=root)


def test_variants_share_the_stage_definitions_the_sweep_does_not_vary() -> None:
    variants = sweep(3)
    assert len({id(v.pipeline[0]) for v in variants}) == 1
    assert len({id(v.pipeline[1]) for v in variants}) == 3
    assert [v.pipeline[1].options for v in variants] == [{"path": f"data{i}.txt"} for i in range(3)]


def test_a_stage_shared_by_variants_is_validated_once(tmp_path: Path) -> None:
    registry = Registry([counted, reads])
    validated.clear()
    with using_access(access(tmp_path)):
        plans = [plan(v, registry) for v in sweep(5)]
    assert validated == ["fixed"]  # five variants, one validation of the shared stage
    assert len({id(p[0]) for p in plans}) == 1
    assert [str(p[1].options.path) for p in plans] == [
        str(tmp_path / f"data{i}.txt") for i in range(5)
    ]


def test_a_change_of_registry_mode_or_file_access_plans_again(tmp_path: Path) -> None:
    registry = Registry([counted, reads])
    (variant,) = sweep(1)
    inside = tmp_path / "in"
    validated.clear()
    with using_access(access(inside)):
        plan(variant, registry)
        plan(variant, registry)
        assert validated == ["fixed"]
        plan(variant, registry, validate_options="warn")  # another mode: planned again
        assert validated == ["fixed"] * 2
        registry.register(counted, replace=True)  # a new registry version
        plan(variant, registry)
        assert validated == ["fixed"] * 3
        plan(variant, Registry([counted, reads]))  # another registry
        assert validated == ["fixed"] * 4
    # The same stage definition under another file access is checked against that access.
    named = StageDef(name="reads", options={"path": str(inside / "data0.txt")})
    reading = Experiment(id="sweep", pipeline=[named])
    with using_access(access(inside)):
        plan(reading, registry)
    with using_access(access(tmp_path / "elsewhere")), pytest.raises(InvalidPipeline) as err:
        plan(reading, registry)
    assert "options.path" in str(err.value)


def test_without_a_file_access_in_effect_nothing_is_reused() -> None:
    registry = Registry([counted, reads])
    (variant,) = sweep(1)
    validated.clear()
    for _ in range(2):  # the default access: the working directory, which has no data0.txt
        with contextlib.suppress(InvalidPipeline):
            plan(variant, registry)
    assert validated == ["fixed", "fixed"]
