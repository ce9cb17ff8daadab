"""``crucible.testing`` stays light: importing it loads neither the OTLP receivers nor gRPC."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("crucible.testing.otlp", "grpc")

pytestmark = [pytest.mark.slow]


def loaded_after(statement: str) -> list[str]:
    """Which of HEAVY a fresh interpreter has in sys.modules after running ``statement``."""
    code = f"import sys\n{statement}\nprint(*[m for m in {HEAVY!r} if m in sys.modules])"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout.split()


def test_importing_crucible_testing_leaves_otlp_and_grpc_unloaded() -> None:
    assert loaded_after("import crucible.testing") == []
    assert loaded_after("from crucible.testing import capture_spans, make_context, run_stage") == []


def test_the_otlp_submodule_is_what_loads_them() -> None:
    assert loaded_after("import crucible.testing.otlp") == list(HEAVY)
