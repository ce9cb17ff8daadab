"""A stage name provided by two sources is never replaced silently: a warning names both."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from crucible import Context, Registry, stage

REPO = Path(__file__).resolve().parents[1]


@stage("report", description="a user's own report", register=False)
async def my_report(ctx: Context) -> Context:
    return ctx.put_metric("mine", True)


@stage("report", description="the same user's report, again", register=False)
async def my_report_again(ctx: Context) -> Context:
    return ctx


@pytest.fixture(autouse=True)
def _warnings_pass() -> None:
    """The suite's structlog filter drops warnings; let them through (conftest resets it)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(0))


def shadow_warnings(logs: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in logs if e["log_level"] == "warning" and "shadows" in e["event"]]


def test_a_registered_stage_shadowing_a_built_in_entry_point_is_logged() -> None:
    reg = Registry([my_report], discover=True)
    with capture_logs() as logs:
        spec = reg.get("report")  # discovery runs now and meets the built-in 'report'
    assert spec.call is my_report
    assert shadow_warnings(logs) == [
        "stage 'report' from tests.test_registry_shadowing shadows 'report' from "
        "entry point stages.report"
    ]
    (entry,) = [e for e in logs if "shadows" in e["event"]]
    assert entry["source"] == "registered tests.test_registry_shadowing:my_report"
    assert entry["shadowed"].startswith("entry point stages.report:report, crucible-pipelines ")
    assert reg.source("report").kind == "registered"
    assert reg.source("validate").describe().startswith("entry point stages.validate:validate")


def test_replacing_a_stage_of_another_origin_is_logged_and_the_same_one_is_not() -> None:
    reg = Registry([my_report])
    with capture_logs() as logs:
        reg.register(my_report)  # the same stage again: nothing to say
        assert shadow_warnings(logs) == []
        with pytest.raises(ValueError, match="already registered"):
            reg.register(my_report_again)
        reg.register(my_report_again, replace=True)
    assert reg.get("report").call is my_report_again
    assert shadow_warnings(logs) == [
        "stage 'report' from tests.test_registry_shadowing shadows 'report' from "
        "tests.test_registry_shadowing"
    ]
    (entry,) = [e for e in logs if "shadows" in e["event"]]
    assert entry["source"].endswith(":my_report_again")
    assert entry["shadowed"].endswith(":my_report")


@pytest.fixture
def two_plugins(tmp_path: Path) -> Iterator[None]:
    """Two installed distributions that both declare a stage named ``twin``."""
    for n in (1, 2):
        (tmp_path / f"twin_plugin_{n}.py").write_text(
            textwrap.dedent(
                f"""
                from crucible import Context, stage

                @stage("twin", description="twin number {n}", register=False)
                async def twin(ctx: Context) -> Context:
                    return ctx
                """
            )
        )
        dist = tmp_path / f"twin_plugin_{n}-1.{n}.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: twin-plugin-{n}\nVersion: 1.{n}\n"
        )
        (dist / "entry_points.txt").write_text(f"[crucible.stages]\ntwin = twin_plugin_{n}:twin\n")
    sys.path.insert(0, str(tmp_path))
    yield
    sys.path.remove(str(tmp_path))
    for n in (1, 2):
        sys.modules.pop(f"twin_plugin_{n}", None)


def test_two_plugins_declaring_one_name_are_both_named(two_plugins: None) -> None:
    reg = Registry(discover=True)
    with capture_logs() as logs:
        described = reg.source("twin").describe()
    (warning,) = shadow_warnings(logs)
    winner = reg.get("twin").description[-1]  # whichever distribution the path lists first
    loser = "2" if winner == "1" else "1"
    assert warning == (
        f"stage 'twin' from entry point twin_plugin_{winner} shadows 'twin' from "
        f"entry point twin_plugin_{loser}"
    )
    assert described == f"entry point twin_plugin_{winner}:twin, twin-plugin-{winner} 1.{winner}"
    (entry,) = [e for e in logs if "shadows" in e["event"]]
    shadowed = f"entry point twin_plugin_{loser}:twin, twin-plugin-{loser} 1.{loser}"
    assert entry["shadowed"] == shadowed


SCRIPT = """
import json, sys
import crucible.logging
crucible.logging.configure(json=True, stream=sys.stderr)
from crucible import Context, default_registry, stage

@stage("report", description="declared before the first lookup")
async def report(ctx: Context) -> Context:
    return ctx

registry = default_registry()
first = registry.get("report").description  # discovery meets the declared 'report'
registry.get("validate")

@stage("validate", description="declared after discovery")
async def validate(ctx: Context) -> Context:
    return ctx

print(json.dumps({
    "report": [first, registry.source("report").describe()],
    "validate": [registry.get("validate").description, registry.source("validate").describe()],
}))
"""


def test_an_at_stage_declaration_shadowing_a_built_in_is_logged(tmp_path: Path) -> None:
    """In a fresh process, so the declarations stay out of this one's default registry."""
    (tmp_path / "user_script.py").write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    done = subprocess.run(
        [sys.executable, "-c", "import user_script"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["report"] == ["declared before the first lookup", "@stage user_script:report"]
    assert out["validate"] == ["declared after discovery", "@stage user_script:validate"]
    warnings = [json.loads(line) for line in done.stderr.splitlines() if "shadows" in line]
    assert [w["event"] for w in warnings] == [
        "stage 'report' from user_script shadows 'report' from entry point stages.report",
        "stage 'validate' from user_script shadows 'validate' from entry point stages.validate",
    ]
    assert all(w["level"] == "warning" for w in warnings)
