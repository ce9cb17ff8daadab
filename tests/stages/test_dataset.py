"""load_examples: JSONL/JSON/CSV into assigns (and outputs), clear errors naming file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

import crucible
from crucible import InvalidPipeline, Registry, StageFailed
from crucible.stage import as_stage_spec
from crucible.testing import make_context, run_stage
from stages.dataset import DatasetError, load_examples
from tests.support.schema import validate_schema


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.jsonl").write_text('{"input": "a", "score": 1}\n\n{"input": "b", "score": 2}\n')
    (tmp_path / "d.json").write_text('[{"input": "a"}, {"input": "b"}, {"input": "c"}]')
    (tmp_path / "d.csv").write_text("input,output\nq1,a1\nq2,\n")
    return tmp_path


@pytest.mark.parametrize(("name", "rows"), [("d.jsonl", 2), ("d.json", 3), ("d.csv", 2)])
async def test_formats(data_dir: Path, name: str, rows: int) -> None:
    ctx = await run_stage(load_examples, make_context(), {"path": name})
    assert len(ctx.assigns["examples"]) == rows
    assert ctx.get_metric("dataset") == {"path": name, "rows": rows}
    assert list(ctx.outputs) == []
    assert ctx.trace is not None and ctx.trace.spans[0].events[0].name == "dataset.loaded"


async def test_csv_values_are_strings_and_empty_cells_empty(data_dir: Path) -> None:
    ctx = await run_stage(load_examples, make_context(), {"path": "d.csv"})
    assert ctx.assigns["examples"] == [
        {"input": "q1", "output": "a1"}, {"input": "q2", "output": ""},
    ]  # fmt: skip


async def test_as_outputs_into_and_limit(data_dir: Path) -> None:
    opts = {"path": "d.json", "as_outputs": True, "into": "rows", "limit": 2}
    ctx = await run_stage(load_examples, make_context(), opts)
    assert ctx.assigns["rows"] == [{"input": "a"}, {"input": "b"}]
    assert list(ctx.outputs) == [{"input": "a"}, {"input": "b"}]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"a": 1}\n{oops}\n', "bad.jsonl: line 2: invalid JSON"),
        ("obj.json", '{"a": 1}', "expected a JSON list of rows, got dict"),
        ("data.txt", "x", "cannot tell the format"),
    ],
)
async def test_bad_files(data_dir: Path, name: str, content: str, message: str) -> None:
    (data_dir / name).write_text(content)
    with pytest.raises(StageFailed) as info:
        await run_stage(load_examples, make_context(), {"path": name})
    assert isinstance(info.value.cause, DatasetError) and message in str(info.value.cause)


async def test_missing_file_is_refused_before_anything_runs(data_dir: Path) -> None:
    with pytest.raises(InvalidPipeline, match=r"options\.path: 'nope\.jsonl' .* does not exist"):
        await run_stage(load_examples, make_context(), {"path": "nope.jsonl"})


async def test_paths_outside_the_read_roots_are_refused(data_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside.jsonl"
    outside.write_text('{"x": 1}\n')
    (data_dir / "escape").symlink_to(outside)
    for path in (str(outside), "../" + outside.name, "escape", "/etc/passwd"):
        with pytest.raises(InvalidPipeline, match="outside the folders this run may read"):
            await run_stage(load_examples, make_context(), {"path": path})


async def test_relative_paths_start_at_the_experiment_file(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "rows.jsonl").write_text('{"input": "a"}\n')
    exp_file = folder / "exp.yaml"
    exp_file.write_text("id: rel\npipeline:\n  - name: load_examples\n"
                        "    options: {path: data/rows.jsonl}\n")  # fmt: skip
    ctx = await crucible.run(crucible.load_experiment(exp_file), registry=Registry([load_examples]))
    assert ctx.assigns["examples"] == [{"input": "a"}]
    assert ctx.get_metric("dataset") == {"path": "data/rows.jsonl", "rows": 1}


def test_describe_conforms() -> None:
    schema = as_stage_spec(load_examples).describe()
    assert schema["required"] == ["path"] and validate_schema(schema) == []
