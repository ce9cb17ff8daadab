"""The environment the CLI tests run ``crucible`` in: the repo, plus test stages as plugins."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def plugin_env(site: Path, name: str, stages: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without OTEL_/CRUCIBLE_ settings or terminal hints, with
    ``site`` holding a fake distribution ``name`` that declares ``stages`` (name -> target)."""
    dist = site / f"{name.replace('-', '_')}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n", encoding="utf-8"
    )
    lines = "".join(f"{stage} = {target}\n" for stage, target in stages.items())
    (dist / "entry_points.txt").write_text(f"[crucible.stages]\n{lines}", encoding="utf-8")
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "CRUCIBLE_"))
        and k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
    }
    base["PYTHONPATH"] = os.pathsep.join([str(REPO), str(site)])
    base["NO_COLOR"] = "1"
    return base
