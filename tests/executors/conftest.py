"""A real two-node Ray cluster on 127.0.0.1 for the whole session, and an OTLP receiver.

Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when it is imported, so it is set before that.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pytest

from crucible.testing.otlp import OtlpHttpReceiver
from tests.store.conftest import pg_database  # noqa: F401 - the session's PostgreSQL database
from tests.support.missing import missing_service


@pytest.fixture(scope="session")
def receiver() -> Iterator[OtlpHttpReceiver]:
    """One OTLP/HTTP receiver the driver and every worker export to."""
    rec = OtlpHttpReceiver().start()
    yield rec
    rec.stop()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """A head node and a second node, two CPUs each, both bound to 127.0.0.1.

    The session's executor takes one CPU per node; the CLI's driver gets the others.
    """
    try:
        import ray
        from ray.cluster_utils import Cluster
    except ImportError:
        missing_service("Ray is not installed (pip install -e '.[dev,ray]')")
    loopback = {"node_ip_address": "127.0.0.1", "num_cpus": 2}
    cluster = Cluster(initialize_head=True, head_node_args={**loopback, "include_dashboard": False})
    cluster.add_node(**loopback)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="session")
def ray_executor(ray_cluster: Any, receiver: OtlpHttpReceiver) -> Iterator[Any]:
    """Two actors (one per node) that export their spans to ``receiver``."""
    from crucible.executors import RayExecutor

    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "crucible-ray-worker",
    }
    ex = RayExecutor(actors=2, env=env)
    yield ex
    asyncio.run(ex.shutdown())
