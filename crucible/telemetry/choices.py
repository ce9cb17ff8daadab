"""The exporters and OTLP protocols ``configure`` accepts (light: the CLI's help lists them)."""

from __future__ import annotations

from typing import Final

EXPORTERS: Final = ("otlp", "console", "file", "none")
PROTOCOLS: Final = ("http/protobuf", "grpc")
DEFAULT_TRACES_FILE: Final = "traces.jsonl"  # the file exporter's default
