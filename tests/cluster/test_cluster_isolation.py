"""One stalled stream on a cluster node costs the others on that node nothing.

Two real nodes (gRPC servers with their own Redis brokers and subscriber
connections) share a real redis-server; they run in this test's process, so
the test can see the stalled stream's queue.  Emits go to node A; sam's
stalled stream, his prompt sibling and another user bea are on node B, whose
single Redis reader delivers to all of them: it must never wait on the
stalled one.  Order is asserted, not speed (the benchmark's W2s has timings).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from eventrouter.server import RouterServer
from eventrouter.v1 import router_service_pb2_grpc as pb_grpc
from tests.cluster.conftest import Backend
from tests.cluster.nodes import BROKER_OPTIONS
from tests.e2e.test_isolation import GRACE_MS, stalled_stream_scenario
from tests.support.servers import running_server

pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def two_nodes(backend: Backend, **overrides: Any) -> AsyncIterator[list[RouterServer]]:
    sep = "&" if "?" in backend.url else "?"
    broker = f"{backend.url}{sep}{BROKER_OPTIONS}"
    async with (
        running_server(broker=broker, node_id="a", **overrides) as a,
        running_server(broker=broker, node_id="b", **overrides) as b,
    ):
        yield [a, b]


async def test_a_stalled_stream_on_a_node_delays_nobody_there(backend: Backend) -> None:
    async with (
        two_nodes(backend, queue_max_events=64, queue_overflow_grace_ms=GRACE_MS) as (
            node_a,
            node_b,
        ),
        grpc.aio.insecure_channel(f"127.0.0.1:{node_a.port}") as to_a,
        grpc.aio.insecure_channel(f"127.0.0.1:{node_b.port}") as to_b,
        grpc.aio.insecure_channel(f"127.0.0.1:{node_b.port}") as stalled_channel,
    ):
        await stalled_stream_scenario(
            node_b,
            pb_grpc.EventRouterServiceStub(to_a),
            pb_grpc.EventRouterServiceStub(to_b),
            stalled_channel,
        )
