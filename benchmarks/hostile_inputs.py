"""Hostile experiment files, written for real and loaded: what each gets and how long it took.

Run: python benchmarks/hostile_inputs.py
Prints one JSON line per case: the case, the file, the seconds ``load_experiment`` (or
``experiment_from_mapping`` for parsed data) took, and the error it raised (or "loaded"). The
README's reliability table comes from this output. The file cases write real files (one of
100 MiB) to a temporary folder, removed afterwards; the 10 MiB one is the largest file accepted
by default, to show what loading at the limit costs.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crucible import ExperimentFileError, load_experiment
from crucible.experiment import experiment_from_mapping


def alias_bomb() -> str:
    lines = ["id: bomb", "metadata:", '  l0: &l0 ["lol"]']
    lines += [f"  l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, 10)]
    return "\n".join(lines) + "\n"


def recursive_data() -> dict[str, Any]:
    inner: dict[str, Any] = {}
    inner["self"] = inner
    return {"id": "x", "metadata": inner}


def deep_data() -> dict[str, Any]:
    deep: Any = 1
    for _ in range(100_000):
        deep = {"d": deep}
    return {"id": "x", "metadata": deep}


FILES: list[tuple[str, str, str | bytes]] = [
    ("YAML alias bomb (9 levels x 9)", "bomb.yaml", alias_bomb()),
    ("self-referential YAML", "self.yaml", "id: x\nmetadata: &a {x: *a}\n"),
    ("100,000 nested brackets, YAML", "deep.yaml", "id: x\nm: " + "[" * 100_000),
    ("100,000 nested brackets, JSON", "deep.json", '{"id": "x", "m": ' + "[" * 100_000),
    ("100,000 nested brackets, TOML", "deep.toml", 'id = "x"\nm = ' + "[" * 100_000),
    ("TOML dotted key of 100,000 parts", "dotted.toml", "a." * 100_000 + "b = 1\n"),
    ("invalid timestamp, YAML", "date.yaml", "id: x\ncreated_at: 2024-13-45\n"),
    ("invalid timestamp, JSON", "date.json", '{"id": "x", "created_at": "2024-13-45"}'),
    ("invalid timestamp, TOML", "date.toml", 'id = "x"\ncreated_at = 2024-12-45\n'),
    ("duplicate key, YAML", "dup.yaml", "id: x\npipeline:\n  - name: a\n    name: b\n"),
    ("duplicate key, JSON", "dup.json", '{"id": "x",\n "id": "y"}'),
    ("duplicate key, TOML", "dup.toml", 'id = "x"\nid = "y"\n'),
    ("non-UTF-8 bytes", "latin1.yaml", "id: x\nowner: Andr\xe9\n".encode("latin-1")),
    ("NUL byte", "nul.yaml", b"id: x\nowner: a\x00b\n"),
    ("empty file", "empty.yaml", b""),
    ("top level not a mapping", "list.yaml", "- id: x\n"),
    ("2 MiB single scalar", "scalar.yaml", "id: x\ndescription: " + "z" * (2 * 1024 * 1024)),
    ("5,000-digit integer", "digits.json", '{"id": "x", "metadata": {"n": ' + "9" * 5000 + "}}"),
]


def filled(path: Path, size: int) -> Path:
    """A valid YAML experiment of just under ``size`` bytes: one metadata entry per line."""
    line = "  key_{:08d}: some value to fill the file\n"
    with path.open("w", encoding="utf-8") as f:
        f.write("id: big\nmetadata:\n")
        f.writelines(line.format(i) for i in range((size - 20) // len(line.format(0))))
    return path


def measure(case: str, file: str, call: Callable[[], object]) -> None:
    started = time.perf_counter()
    try:
        call()
        outcome = "loaded"
    except ExperimentFileError as err:
        outcome = str(err)
    seconds = round(time.perf_counter() - started, 4)
    print(json.dumps({"case": case, "file": file, "seconds": seconds, "error": outcome}))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for case, name, content in FILES:
            path = folder / name
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
            measure(case, name, lambda p=path: load_experiment(p))
        for mib, name in ((100, "big.yaml"), (10, "limit.yaml")):
            path = filled(folder / name, mib * 1024 * 1024)
            measure(f"{mib} MiB YAML file", name, lambda p=path: load_experiment(p))
        (folder / "folder.yaml").mkdir()
        measure("a directory", "folder.yaml", lambda: load_experiment(folder / "folder.yaml"))
    recursive, deep = recursive_data(), deep_data()
    measure("recursive data (a request body)", "-", lambda: experiment_from_mapping(recursive))
    measure("100,000-deep data (a request body)", "-", lambda: experiment_from_mapping(deep))


if __name__ == "__main__":
    main()
