"""Real OTLP trace receivers (HTTP and gRPC) and a rotel collector hop, for end-to-end span tests.

The receivers decode what the real OpenTelemetry OTLP exporters send, so a test can check the
spans that actually left the process (ids, parent links, attributes, status, events, resource).
Needs the ``testing`` extra (gRPC, protobuf, the OTLP protos).
"""

from crucible.testing.otlp.decode import decode_otlp_json, spans_from_request
from crucible.testing.otlp.grpc_receiver import OtlpGrpcReceiver
from crucible.testing.otlp.http_receiver import OtlpHttpReceiver
from crucible.testing.otlp.records import ReceivedEvent, ReceivedLink, ReceivedSpan
from crucible.testing.otlp.rotel import RotelHop, rotel_available, rotel_binary

__all__ = [
    "OtlpGrpcReceiver",
    "OtlpHttpReceiver",
    "ReceivedEvent",
    "ReceivedLink",
    "ReceivedSpan",
    "RotelHop",
    "decode_otlp_json",
    "rotel_available",
    "rotel_binary",
    "spans_from_request",
]
