"""What the service shows of a run: status, ids, metrics, stage results and artifact names.

Never the run's assigns, options, configuration or outputs (they may hold data a request read,
or secrets): a client sees what a run did, not what it held.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fastapi import responses

from crucible import scrub as crucible_scrub
from crucible.serialize import to_jsonable
from crucible.store import RunInfo

__all__ = ["AsciiJSON", "PathMask", "public_run", "scrub", "secret_values"]


class AsciiJSON(responses.JSONResponse):
    """JSON written as ASCII: text UTF-8 cannot hold (a stored lone surrogate) goes out as its
    ``\\u`` escape instead of failing the response with a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False,
                          separators=(",", ":")).encode("ascii")  # fmt: skip


_ATTEMPT_FIELDS = ("stage", "stage_index", "attempt", "result", "duration_s", "error_type")


class PathMask:
    """The service's own folders, shown to clients by name: ``<data>/rows.jsonl``, not where
    they are on this machine (a stage's error message names the file it read)."""

    def __init__(self, folders: Mapping[str, Path | None]) -> None:
        found: dict[str, str] = {}
        for name, folder in folders.items():
            if folder is not None:
                given = folder.expanduser()
                for form in (given.resolve(), given.absolute()):  # symlinks followed or not
                    found.setdefault(str(form), f"<{name}>")
        # Deepest first, and only whole paths: /srv/data is not /srv/database, and the
        # client's own '../../srv/data' (or '/x/srv/data') is not the folder either.
        self._pairs = [
            (re.compile(r"(?<![\w.~/-])" + re.escape(folder) + r"(?![\w.-])"), name)
            for folder, name in sorted(found.items(), key=lambda kv: -len(kv[0]))
        ]

    def text(self, text: str | None) -> str | None:
        if not text:
            return text
        for folder, name in self._pairs:
            text = folder.sub(name, text)
        return text

    def value(self, value: Any) -> Any:
        """Every string in JSON data masked."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value


NO_MASK = PathMask({})


def public_run(
    info: RunInfo, *, secrets: Iterable[str] = (), paths: PathMask = NO_MASK
) -> dict[str, Any]:
    """``info`` as a client may see it; ``secrets`` are replaced wherever they appear, and the
    service's folders by their names."""
    hidden = tuple(secrets)
    view: dict[str, Any] = {
        "run_id": info.run_id,
        "experiment_id": info.experiment_id,
        "status": info.status,
        "trace_id": info.trace_id,
        "batch_id": info.batch_id,
        "started_at": info.started_at.isoformat(),
        "finished_at": info.finished_at.isoformat() if info.finished_at else None,
        "duration_s": info.duration_s,
        # secret-looking keys redacted, secret values scrubbed, NaN-safe
        "metrics": paths.value(
            crucible_scrub.Scrubber(hidden).value(to_jsonable(dict(info.metrics)))
        ),
        "failure": None,
        "attempts": [
            {
                **{name: getattr(a, name) for name in _ATTEMPT_FIELDS},
                "error": paths.text(scrub(a.error_message, hidden)),
            }
            for a in info.attempts
        ],
        "artifacts": [a.name for a in info.artifacts],
    }
    if info.failure_stage is not None or info.failure_message is not None:
        view["failure"] = {
            "stage": info.failure_stage,
            "error_type": info.error_type,
            "error": paths.text(scrub(info.failure_message, hidden)),
        }
    return view


def secret_values(data: Any) -> set[str]:
    """Every string under a secret-looking key (and every SecretStr) in ``data``, and the values
    of secret-named environment variables (the service's token among them)."""
    return crucible_scrub.secret_values(data) | set(crucible_scrub.env_scrubber().values)


def scrub(text: str | None, secrets: Iterable[str]) -> str | None:
    """``text`` with every secret value replaced by ``[REDACTED]``, longest first."""
    if not text:
        return text
    return crucible_scrub.Scrubber(secrets).text(text)
